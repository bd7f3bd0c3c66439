"""The runtimes the inference benchmark times, each built the way a user would deploy it.

A :class:`Bench` separates the untimed ``prepare`` (NCHW float32 -> the runtime's own input: layout,
tensor type) from the timed ``call`` (one inference, output back in host memory as NumPy), so every row
times the same thing. Batch 64 is native where the runtime takes any batch; for artifacts exported with
a fixed batch of 1 it is ``resized`` (TFLite ``resize_tensor_input`` + ``allocate_tensors``, ONNX with the
batch dimension made symbolic in memory) when that gives the same outputs as batch 1, else a ``loop``
of 64 batch-1 calls; ``batch64_mode`` records which.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

#: onnx2tf turns every 4-D input into NHWC.
RAW_ONNX2TF_PERM = (0, 2, 3, 1)
RUNTIMES = ("pytorch", "torchscript", "torch_compile", "onnxruntime", "saved_model", "saved_model_xla",
            "tflite_fp32", "tflite_fp16", "tflite_dynamic_int8", "tflite_int8", "tflite_onnx2tf_raw",
            "tflite_fp32_aa")
#: ``tflite_fp32_aa`` is an A/A control: a second, independent child on the same ``model_fp32.tflite``. Its
#: gap to ``tflite_fp32`` is the noise floor any "ours vs raw onnx2tf" ratio must be read against.


@dataclass
class Bench:
    """``call(prepare(x))`` is one inference of ``x`` (NCHW float32) returning logits ``[N, classes]``."""

    runtime: str
    precision: str
    artifact: str | None
    prepare: Callable[[np.ndarray], Any]
    call: Callable[[Any], np.ndarray]
    batch64_mode: str = "native"


def build(runtime: str, out_dir: Path, manifest: dict, threads: int, raw_tflite: Path | None) -> Bench:
    """Build ``runtime`` for the converted directory ``out_dir`` using ``threads`` intra-op threads."""
    if runtime in ("pytorch", "torchscript", "torch_compile"):
        return _torch(runtime, manifest, threads)
    if runtime == "onnxruntime":
        return _onnxruntime(out_dir / "model.onnx", threads)
    if runtime in ("saved_model", "saved_model_xla"):
        return _saved_model(out_dir / "saved_model", manifest, threads, xla=runtime.endswith("xla"))
    if runtime == "tflite_onnx2tf_raw":
        if raw_tflite is None:
            raise ValueError("tflite_onnx2tf_raw needs the raw onnx2tf float32 .tflite")
        return tflite_at(raw_tflite, "fp32", threads, runtime, RAW_ONNX2TF_PERM)
    precision = runtime.removeprefix("tflite_").removesuffix("_aa")
    perm = tuple(manifest["inputs"][0]["perm_from_pytorch"])
    return tflite_at(out_dir / f"model_{precision}.tflite", precision, threads, runtime, perm)


def with_batch64(bench: Bench, probe: np.ndarray, resized: Bench | None) -> Bench:
    """Use ``resized`` for batch 64 if it matches batch-1 outputs on ``probe``; otherwise loop ``bench``."""
    if resized is not None:
        try:
            want = np.concatenate([bench.call(bench.prepare(probe[i:i + 1])) for i in range(len(probe))])
            got = resized.call(resized.prepare(probe))
            if got.shape == want.shape and np.allclose(got, want, rtol=1e-3, atol=1e-3 * float(np.abs(want).max())):
                return resized
        except Exception:  # a graph with the batch baked into a Reshape cannot be resized: loop instead
            pass
    return Bench(bench.runtime, bench.precision, bench.artifact,
                 lambda x: [bench.prepare(x[i:i + 1]) for i in range(len(x))],
                 lambda xs: np.concatenate([bench.call(x) for x in xs]), "loop of batch-1 calls")


def _torch(runtime: str, manifest: dict, threads: int) -> Bench:
    import torch

    from converter._convert.sources import load_model

    torch.set_num_threads(threads)
    source = manifest["source"]
    module = load_model(source["spec"], source.get("weights")).module
    shape = tuple(manifest["inputs"][0]["pytorch_shape"])
    if runtime == "torchscript":
        # trace -> save -> load: the file a user would ship, as the converter's parity row does
        with torch.inference_mode():
            traced = torch.jit.trace(module, torch.zeros(shape), check_trace=False)
        buffer = io.BytesIO()
        torch.jit.save(traced, buffer)
        buffer.seek(0)
        module = torch.jit.load(buffer, map_location="cpu").eval()
    elif runtime == "torch_compile":
        module = torch.compile(module, dynamic=False)  # one static graph per batch size, compiled at warm-up

    def call(x):
        with torch.inference_mode():
            return module(x).numpy()

    return Bench(runtime, "fp32", None, lambda x: torch.from_numpy(np.ascontiguousarray(x)), call)


def _onnxruntime(path: Path, threads: int) -> Bench:
    import onnx
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    proto = onnx.load(str(path))
    for value in (*proto.graph.input, *proto.graph.output):
        dim = value.type.tensor_type.shape.dim[0]
        dim.ClearField("dim_value")
        dim.dim_param = "batch"  # same weights and ops; lets one session take batch 1 and batch 64
    session = ort.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return Bench("onnxruntime", "fp32", path.name, lambda x: {name: np.ascontiguousarray(x)},
                 lambda feed: session.run(None, feed)[0], "native (batch dim made symbolic)")


def _saved_model(path: Path, manifest: dict, threads: int, xla: bool) -> Bench:
    import tensorflow as tf

    from converter._convert import layout

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    signature = tf.saved_model.load(str(path)).signatures["serving_default"]
    inp, out = manifest["inputs"][0], manifest["outputs"][0]
    fn = tf.function(lambda x: signature(**{inp["name"]: x})[out["name"]], jit_compile=True) if xla else \
        (lambda x: signature(**{inp["name"]: x})[out["name"]])
    perm, back = tuple(inp["perm_from_pytorch"]), tuple(out["perm_from_pytorch"])
    return Bench("saved_model_xla" if xla else "saved_model", "fp32", "saved_model",
                 lambda x: tf.constant(layout.to_layout(x, perm)),
                 lambda t: layout.from_layout(fn(t).numpy(), back))


def tflite_at(path: Path, precision: str, threads: int, runtime: str, perm: tuple[int, ...],
              batch: int | None = None) -> Bench:
    """Tensor-index API (set_tensor / invoke / get_tensor), the lowest-overhead LiteRT path, XNNPACK on
    (the default op resolver). ``perm`` takes the NCHW input to the file's layout; ``batch`` resizes."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path), num_threads=threads)
    detail = interpreter.get_input_details()[0]
    if batch is not None:
        interpreter.resize_tensor_input(detail["index"], [batch, *detail["shape"][1:]])
    interpreter.allocate_tensors()
    in_index = detail["index"]
    out_index = interpreter.get_output_details()[0]["index"]

    def prepare(x: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(x.transpose(perm), dtype=detail["dtype"])

    def call(x: np.ndarray) -> np.ndarray:
        interpreter.set_tensor(in_index, x)
        interpreter.invoke()
        return interpreter.get_tensor(out_index)

    return Bench(runtime, precision, path.name, prepare, call, "resized" if batch else "native")
