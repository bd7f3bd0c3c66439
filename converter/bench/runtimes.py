"""The runtimes the inference benchmark times, each built the way a user would deploy it.

A :class:`Bench` separates the untimed ``prepare`` (NCHW float32 -> the runtime's own input: layout,
tensor type) from the timed ``call`` (one inference, output back in host memory as NumPy), so every row
times the same thing. Batch 64 is native where the runtime takes any batch; for artifacts exported with
a fixed batch of 1 it is ``resized`` (TFLite ``resize_tensor_input`` + ``allocate_tensors``, ONNX with the
batch dimension made symbolic in memory) when that gives the same outputs as batch 1, else a ``loop``
of 64 batch-1 calls; ``batch64_mode`` records which.

Serving mode (:func:`serving`, the zoo benchmark) takes every input of the model instead: ``prepare`` maps a list of
PyTorch-layout arrays (the model's input order) to the artifact's feed, ``call`` returns the artifact's outputs as
a list (its own layout) and ``to_pytorch`` maps those back, for the check that every runtime computes the same thing.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from converter.bench import optimes

#: onnx2tf turns every 4-D input into NHWC.
RAW_ONNX2TF_PERM = (0, 2, 3, 1)
RUNTIMES = ("pytorch", "torchscript", "torch_compile", "onnxruntime", "saved_model", "saved_model_xla",
            "tflite_fp32", "tflite_fp16", "tflite_dynamic_int8", "tflite_int8", "tflite_onnx2tf_raw",
            "tflite_litert", "tflite_fp32_aa")
#: ``tflite_litert`` is litert-torch's own .tflite of the converted directory's PyTorch source (PyTorch layout in).
#: ``tflite_fp32_aa`` is an A/A control: a second, independent child on the same ``model_fp32.tflite``. Its
#: gap to ``tflite_fp32`` is the noise floor any "ours vs raw onnx2tf / litert-torch" ratio must be read against.
#: Serving mode: ``tflite_litert`` is litert-torch's own .tflite of the same module (PyTorch layout, ``args_i`` in),
#: run by the same interpreter as ours; ``tflite_fp32_aa`` the A/A control, as above.
SERVING_RUNTIMES = ("pytorch", "onnxruntime", "saved_model", "keras_twin", "tflite_fp32", "tflite_litert",
                    "tflite_fp32_aa")


@dataclass
class Bench:
    """``call(prepare(x))`` is one inference of ``x`` (NCHW float32) returning logits ``[N, classes]``; in serving
    mode ``x`` is the list of the model's inputs and the result the list of its outputs (module docstring)."""

    runtime: str
    precision: str
    artifact: str | None
    prepare: Callable[[np.ndarray], Any]
    call: Callable[[Any], np.ndarray]
    batch64_mode: str = "native"
    #: serving mode: ``call``'s outputs -> a list in the PyTorch layout
    to_pytorch: Callable[[Any], list[np.ndarray]] = list
    #: serving mode: the same artifact built for another batch (None: this object takes any batch)
    resize: Callable[[int], Bench] | None = None
    #: serving mode: how many of each op the artifact's graph holds (what a latency gap is read against)
    op_histogram: dict[str, int] | None = None
    #: serving mode: ``prepare``'d batch-1 feed -> time per op type on a traced copy (:mod:`converter.bench.optimes`)
    profile: Callable[[Any], dict[str, dict[str, float]]] | None = None


def build(runtime: str, out_dir: Path, manifest: dict, threads: int, raw_tflite: Path | None,
          litert_tflite: Path | None = None) -> Bench:
    """Build ``runtime`` for the converted directory ``out_dir`` using ``threads`` intra-op threads.

    ``raw_tflite`` / ``litert_tflite``: the files of ``tflite_onnx2tf_raw`` / ``tflite_litert``, made outside it."""
    if runtime in ("pytorch", "torchscript", "torch_compile"):
        return _torch(runtime, manifest, threads)
    if runtime == "onnxruntime":
        return _onnxruntime(out_dir / "model.onnx", threads)
    if runtime in ("saved_model", "saved_model_xla"):
        return _saved_model(out_dir / "saved_model", manifest, threads, xla=runtime.endswith("xla"))
    path, precision, perm = tflite_file(runtime, out_dir, manifest, raw_tflite, litert_tflite)
    return tflite_at(path, precision, threads, runtime, perm)


def tflite_file(runtime: str, out_dir: Path, manifest: dict, raw_tflite: Path | None,
                litert_tflite: Path | None) -> tuple[Path, str, tuple[int, ...]]:
    """(file, precision, permutation from the PyTorch layout to the file's input) of a ``tflite_*`` runtime."""
    if runtime == "tflite_onnx2tf_raw":
        if raw_tflite is None:
            raise ValueError("tflite_onnx2tf_raw needs the raw onnx2tf float32 .tflite")
        return raw_tflite, "fp32", RAW_ONNX2TF_PERM
    if runtime == "tflite_litert":
        if litert_tflite is None:
            raise ValueError("tflite_litert needs litert-torch's .tflite (--tflite FILE)")
        return litert_tflite, "fp32", tuple(range(len(manifest["inputs"][0]["pytorch_shape"])))  # PyTorch layout
    precision = runtime.removeprefix("tflite_").removesuffix("_aa")
    return out_dir / f"model_{precision}.tflite", precision, tuple(manifest["inputs"][0]["perm_from_pytorch"])


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


def tf_threads(threads: int) -> None:
    """TensorFlow's thread pools as every TF row of a benchmark runs them: ``threads`` intra-op, one inter-op."""
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)


def _saved_model(path: Path, manifest: dict, threads: int, xla: bool) -> Bench:
    import tensorflow as tf

    from converter._convert import layout

    tf_threads(threads)
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


# ------------------------------------------------------------------------------------------- serving mode


def serving(runtime: str, out_dir: Path, manifest: dict, threads: int, *, zoo: str | None = None,
            tflite: Path | None = None) -> Bench:
    """``runtime`` of :data:`SERVING_RUNTIMES` at batch 1, taking every model input (see the module docstring).

    ``zoo``: the zoo entry ``pytorch`` builds; ``tflite``: litert-torch's file for ``tflite_litert``."""
    if runtime == "pytorch":
        if zoo is None:
            raise ValueError("the serving pytorch runtime needs --zoo NAME")
        return _torch_zoo(zoo, threads)
    if runtime == "onnxruntime":
        onnx = manifest["onnx"]
        return _onnxruntime_serving(out_dir / "model.onnx", [i["name"] for i in onnx["inputs"]],
                                    [i["dtype"] for i in onnx["inputs"]], [o["name"] for o in onnx["outputs"]], threads)
    if runtime == "saved_model":
        return _saved_model_serving(out_dir / "saved_model", manifest, threads)
    if runtime == "keras_twin":
        if zoo is None:
            raise ValueError("the keras_twin runtime needs --zoo NAME")
        from converter.bench import keras_twin

        return keras_twin.serving(zoo, manifest, threads)
    if runtime in ("tflite_fp32", "tflite_fp32_aa"):
        ins = [(i["name"], tuple(i["perm_from_pytorch"])) for i in manifest["inputs"]]
        outs = [(o["name"], tuple(o["perm_from_pytorch"])) for o in manifest["outputs"]]
        return tflite_serving(out_dir / "model_fp32.tflite", runtime, ins, outs, threads)
    if runtime == "tflite_litert":
        if tflite is None:
            raise ValueError("tflite_litert needs --tflite FILE (litert-torch's export)")
        ins = [(f"args_{k}", tuple(range(len(i["pytorch_shape"])))) for k, i in enumerate(manifest["inputs"])]
        outs = [(n, tuple(range(len(o["pytorch_shape"])))) for n, o in zip(_litert_outputs(tflite, manifest),
                                                                           manifest["outputs"])]
        return tflite_serving(tflite, runtime, ins, outs, threads)
    raise ValueError(f"unknown serving runtime {runtime!r}; use one of {', '.join(SERVING_RUNTIMES)}")


def _litert_outputs(path: Path, manifest: dict) -> list[str]:
    """litert-torch's signature names for the model's outputs, in the model's order: the dict's keys for a model
    returning a dict (a Hugging Face ``ModelOutput``), which the manifest's output names are too; else
    ``output_0..``, its names for positional outputs."""
    from ai_edge_litert.interpreter import Interpreter

    have = Interpreter(model_path=str(path)).get_signature_list()["serving_default"]["outputs"]
    for names in ([o["name"] for o in manifest["outputs"]], [f"output_{k}" for k in range(len(manifest["outputs"]))]):
        if set(names) <= set(have):
            return names
    raise ValueError(f"{path.name}'s outputs ({', '.join(have)}) match neither the model's output names nor "
                     "output_0..")


def at_batch(bench: Bench, batch: int, probe: list[np.ndarray]) -> Bench:
    """``bench`` at ``batch`` (itself where it takes any batch, else ``bench.resize(batch)``), after checking that
    one call on ``probe`` (``batch`` samples) gives what ``batch`` separate batch-1 calls give; ValueError if not."""
    candidate = bench if bench.resize is None else bench.resize(batch)
    singles = [bench.to_pytorch(bench.call(bench.prepare([x[i:i + 1] for x in probe]))) for i in range(batch)]
    want = [np.concatenate(parts) for parts in zip(*singles)]
    got = candidate.to_pytorch(candidate.call(candidate.prepare(probe)))
    for k, (w, g) in enumerate(zip(want, got)):
        if g.shape != w.shape or not np.allclose(g, w, rtol=1e-3, atol=1e-3 * float(np.abs(w).max(initial=0.0))):
            diff = "shape " + str(list(g.shape)) if g.shape != w.shape else f"max abs diff {np.abs(g - w).max():.3g}"
            raise ValueError(f"output {k} at batch {batch} differs from batch-1 calls ({diff})")
    return candidate


def _torch_zoo(name: str, threads: int) -> Bench:
    """The zoo entry's module, eager (this process must not have imported TensorFlow: timm / transformers)."""
    import torch

    from converter.zoo.models import ZOO
    from converter.zoo.weights import flat_outputs

    torch.set_num_threads(threads)
    module = ZOO[name].build().eval()

    def call(xs: list) -> list[np.ndarray]:
        with torch.inference_mode():
            return [o.numpy() for o in flat_outputs(module(*xs))]

    return Bench("pytorch", "fp32", None, lambda xs: [torch.from_numpy(np.ascontiguousarray(x)) for x in xs], call)


def _onnxruntime_serving(path: Path, names: list[str], dtypes: list[str], outputs: list[str], threads: int) -> Bench:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return Bench("onnxruntime", "fp32", path.name,
                 lambda xs: {n: np.ascontiguousarray(x, dtype=d) for n, d, x in zip(names, dtypes, xs)},
                 lambda feed: session.run(outputs, feed), op_histogram=onnx_histogram(path),
                 profile=lambda feed: optimes.onnxruntime(path, feed, threads))


def onnx_histogram(path: Path) -> dict[str, int]:
    """Node count per ONNX op type, main graph and every subgraph (a Loop's or If's body) alike."""
    import onnx

    counts: dict[str, int] = {}

    def walk(graph) -> None:
        for node in graph.node:
            counts[node.op_type] = counts.get(node.op_type, 0) + 1
            for attr in node.attribute:
                for sub in (*([attr.g] if attr.HasField("g") else []), *attr.graphs):
                    walk(sub)

    walk(onnx.load(str(path), load_external_data=False).graph)
    return dict(sorted(counts.items()))


def _saved_model_serving(path: Path, manifest: dict, threads: int) -> Bench:
    """The ``serving_default`` signature, called eagerly with one tensor per input: what TF Serving runs."""
    import tensorflow as tf

    from converter._convert import layout

    tf_threads(threads)
    loaded = tf.saved_model.load(str(path))  # a signature holds its variables weakly: the closure keeps ``loaded``
    ins = [(i["name"], tuple(i["perm_from_pytorch"]), i["dtype"]) for i in manifest["inputs"]]
    outs = [(o["name"], tuple(o["perm_from_pytorch"])) for o in manifest["outputs"]]

    def prepare(xs: list[np.ndarray]) -> dict:
        return {name: tf.constant(layout.to_layout(x, perm).astype(dtype, copy=False)) for (name, perm, dtype), x
                in zip(ins, xs)}

    def call(feed: dict) -> list[np.ndarray]:
        result = loaded.signatures["serving_default"](**feed)
        return [result[name].numpy() for name, _ in outs]

    return Bench("saved_model", "fp32", "saved_model", prepare, call,
                 to_pytorch=lambda ys: [layout.from_layout(y, perm) for y, (_, perm) in zip(ys, outs)],
                 op_histogram=tf_histogram(loaded.signatures["serving_default"]),
                 profile=lambda feed: optimes.saved_model(path, {n: t.numpy() for n, t in feed.items()}, threads))


#: Graph plumbing that the executor does not run as a kernel worth counting.
_TF_PLUMBING = frozenset({"Const", "Placeholder", "Identity", "IdentityN", "NoOp", "PartitionedCall",
                          "StatefulPartitionedCall", "ReadVariableOp", "VarHandleOp"})


def tf_histogram(function) -> dict[str, int]:
    """Node count per TF op type in a concrete function and every function it calls (a While body included),
    without :data:`_TF_PLUMBING`."""
    graph_def = function.graph.as_graph_def()
    nodes = [*graph_def.node, *(n for f in graph_def.library.function for n in f.node_def)]
    counts: dict[str, int] = {}
    for node in nodes:
        if node.op not in _TF_PLUMBING:
            counts[node.op] = counts.get(node.op, 0) + 1
    return dict(sorted(counts.items()))


def tflite_serving(path: Path, runtime: str, ins: list[tuple[str, tuple[int, ...]]],
                   outs: list[tuple[str, tuple[int, ...]]], threads: int, batch: int = 1) -> Bench:
    """A TFLite file's ``serving_default`` signature through the tensor-index API (XNNPACK on, as in
    :func:`tflite_at`). ``ins`` / ``outs``: (signature name, permutation from the PyTorch layout), model order."""
    from ai_edge_litert.interpreter import Interpreter

    from converter._convert import layout

    interpreter = Interpreter(model_path=str(path), num_threads=threads)
    signature = interpreter.get_signature_runner("serving_default")
    in_details, out_details = signature.get_input_details(), signature.get_output_details()
    del signature  # a live signature runner holds the interpreter's buffers: allocate_tensors would refuse
    missing = [n for n, _ in ins if n not in in_details] + [n for n, _ in outs if n not in out_details]
    if missing:
        raise ValueError(f"{path.name} has no signature tensor {missing[0]!r} (has {', '.join(in_details)} -> "
                         f"{', '.join(out_details)})")
    if batch != 1:
        for name, _ in ins:
            interpreter.resize_tensor_input(in_details[name]["index"], [batch, *in_details[name]["shape"][1:]])
    interpreter.allocate_tensors()
    feeds = [(in_details[n]["index"], in_details[n]["dtype"], perm) for n, perm in ins]
    fetch = [out_details[n]["index"] for n, _ in outs]

    def prepare(xs: list[np.ndarray]) -> list[np.ndarray]:
        return [np.ascontiguousarray(layout.to_layout(x, perm), dtype=dtype) for (_, dtype, perm), x in zip(feeds, xs)]

    def call(xs: list[np.ndarray]) -> list[np.ndarray]:
        for (index, _, _), x in zip(feeds, xs):
            interpreter.set_tensor(index, x)
        interpreter.invoke()
        return [interpreter.get_tensor(index) for index in fetch]

    symbolic = all(in_details[n]["shape_signature"][0] == -1 for n, _ in ins)
    return Bench(runtime, "fp32", path.name, prepare, call,
                 "native" if batch == 1 else "resized (symbolic batch)" if symbolic else "resized (batch-1 file)",
                 to_pytorch=lambda ys: [layout.from_layout(y, perm) for y, (_, perm) in zip(ys, outs)],
                 resize=lambda b: tflite_serving(path, runtime, ins, outs, threads, b),
                 op_histogram=tflite_histogram(path) if batch == 1 else None)


def tflite_histogram(path: Path) -> dict[str, int]:
    """Operator count per op in every subgraph of a TFLite file (:func:`converter._convert.tfexport.op_histogram`,
    what the manifest records)."""
    from converter._convert.tfexport import op_histogram

    return op_histogram(path.read_bytes())
