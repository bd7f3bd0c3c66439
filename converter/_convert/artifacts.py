"""The TensorFlow side: build every artifact from ``model.onnx`` into a (temporary) directory and describe it in
``manifest.json``. The PyTorch side (export, input resolution) is :mod:`converter._convert.export`; what travels
between the two is :class:`converter._convert.side.TorchSide`."""

from __future__ import annotations

import functools
import hashlib
import json
import platform
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from converter._convert import export, halfcast, layout, memory
from converter.quantization import int8child
from converter.errors import ExportError, InputError, TensorFlowConversionError, first_line
from converter.options import ConvertOptions
from converter._convert.progress import stage
from converter._convert.quiet import silenced
from converter._convert.manifest import Artifact, Manifest, Source, TensorInfo
from converter._convert.side import TorchSide, take

CALIBRATION_SAMPLES = 200


#: SavedModel bytes from which the first TFLite conversion waits for the PyTorch child's reference (see build_tf)
HEAVY_TFLITE_BYTES = 64 * 2**20


def build_tf(side: TorchSide, out: Path, options: ConvertOptions, calibration, timings: dict[str, float],
             written: Callable[[Path, Manifest, str], None] | None = None,
             onnx_outputs: Callable[[], list[np.ndarray] | None] | None = None,
             reference_done: Callable[[], object] | None = None) -> Manifest:
    """ONNX -> TF graph -> SavedModel + TFLite files; returns the manifest. ``written(out, manifest, name)`` is
    called once ``manifest.artifacts[name]`` is in ``out``: ``onnx`` first, then each TFLite file, with
    ``saved_model`` (when it is a target) after the first of them; parity queues its child-process rows with it
    (:class:`converter.parity.offprocess.ChildRows`). ``onnx_outputs`` awaits onnxruntime's outputs of the file the
    PyTorch side exported (:meth:`converter._convert.torchstage.IsolatedStage.onnx_outputs`: its child checks them
    against PyTorch while onnx2tf translates); ``side.onnx_outputs`` by default. ``reference_done`` returns once the
    PyTorch child has computed the reference outputs and ended: the first TFLite conversion waits for it (below)."""
    written = written or (lambda *_: None)
    from converter._convert.quiet import import_tensorflow

    import_tensorflow(options.verbose)
    import onnx

    from converter._convert import tfexport
    from converter._convert.side import GraphFacts
    from converter._convert.tensorflow import onnx_to_keras

    shapes, dtypes = side.shapes, [np.dtype(d) for d in side.dtypes]
    calibration = check_calibration(calibration, shapes)
    sample = [take(x, shapes[0][0]) for x in side.data.inputs]
    # onnxruntime's outputs of model.onnx on the sample, what every translation is measured against
    if side.graph is not None:  # the PyTorch stage exported the file and checked it; the outputs may follow
        facts, reference = side.graph, functools.cache(onnx_outputs or (lambda: side.onnx_outputs))
    else:
        facts = GraphFacts.of(export.check_onnx(out / "model.onnx"))
        ort_out = _run_onnxruntime(out / "model.onnx", sample)
        reference = lambda: ort_out  # noqa: E731

    opset = facts.opset or options.opset
    if not options.wants_saved_model:
        manifest = _base_manifest(side, options, reference(), opset)
        written(out, manifest, "onnx")
        return manifest
    t = time.perf_counter()
    # TFLite cannot lower a while loop over a batch-sized TensorList: with a symbolic batch, RNNs are unrolled
    recurrent = int8child.needs_isolation(set(facts.op_types))
    stage(f"translating ONNX to TensorFlow (onnx2tf, {facts.nodes} nodes)")
    # the translation reads the file itself and frees each graph it rewrites before onnx2tf starts: one held here
    # would stay beside onnx2tf's (110 MB on convnext_tiny); a retry or a second translation reads the file again

    def original() -> onnx.ModelProto:
        """``model.onnx`` as written."""
        return onnx.load(str(out / "model.onnx"))

    route = None
    try:
        graph = onnx_to_keras(out / "model.onnx", shapes, dtypes, side.output_names, sample, reference,
                              options.layout, options.verbose, unroll_rnn=recurrent and options.dynamic_batch)
        batch_map = False
        if options.dynamic_batch and graph.sample_error > SYMBOLIC_BATCH_MAX_ERROR:
            raise TensorFlowConversionError(f"the graph onnx2tf built with a symbolic batch disagrees with onnxruntime "
                                            f"on the sample (relative error {graph.sample_error:.2g})", "-")
        if options.dynamic_batch and shapes[0][0] == 1:
            _check_second_batch(graph, out / "model.onnx", side.data.inputs)
    except TensorFlowConversionError as exc:
        if not options.dynamic_batch or shapes[0][0] != 1:
            raise
        # onnx2tf cannot build this graph with a symbolic batch (seen: nn.MultiheadAttention, whose [T, B, ...]
        # intermediates it re-lays out as images): build it at batch 1 and map it over the batch
        graph = onnx_to_keras(export.with_batch(original(), 1), shapes, dtypes, side.output_names, sample, reference(),
                              options.layout, options.verbose, unroll_rnn=recurrent)
        batch_map = True
        route = {"batch_map": True, "why": str(exc)[:300]}
    ort_out = reference()
    manifest = _base_manifest(side, options, ort_out, opset)
    manifest.dynamic_batch_route = route
    module = tfexport.build_serving_module(graph, options.dynamic_batch, batch_map=batch_map)

    def int8_source():
        """(module, graph) full int8 is built from: RNNs unrolled (TFLite cannot calibrate through WHILE), reusing
        the main translation when it already is (a symbolic batch unrolls them, see above)."""
        if recurrent and (batch_map or not options.dynamic_batch):
            return _unrolled(original(), side, sample, ort_out, options)
        return module, graph

    timings["onnx_to_tf"] = time.perf_counter() - t
    # onnxruntime's parity row from here on: during the translation the PyTorch child still computes the reference
    written(out, manifest, "onnx")
    manifest.inputs = [i.as_manifest() for i in graph.inputs]
    manifest.outputs = [o.as_manifest() for o in graph.outputs]
    manifest.rewrites = list(graph.applied)
    manifest.translation = graph.translation or None
    if options.dynamic_batch:
        for entry in (*manifest.inputs, *manifest.outputs):
            entry.shape[0] = None
    t = time.perf_counter()
    stage("writing the SavedModel")
    tfexport.save_saved_model(module, out / "saved_model", options.verbose)
    manifest.artifacts["saved_model"] = Artifact("saved_model", _dir_bytes(out / "saved_model"),
                                                 details={"signature": tfexport.SIGNATURE_KEY})
    timings["saved_model"] = time.perf_counter() - t
    representative = _representative(calibration, side.data, graph.inputs)
    needs_keras = "int8" in options.tflite_precisions and (options.int8_keep_float or
                                                         (recurrent and representative is not None))
    if not needs_keras:
        # every TFLite file is read from the SavedModel: the Keras model and its traced function are not needed
        # again, and the TFLite converter's peak starts from what is left (memory.give_back)
        module = graph = None
    memory.give_back()
    # parity's tf2onnx round trip is converted from the SavedModel after the first TFLite file, while its child runs
    # that file's row (converted right after the SavedModel instead, the child had nothing to run meanwhile)
    roundtrip_pending = "saved_model" in options.targets

    if (reference_done is not None and options.tflite_precisions
            and manifest.artifacts["saved_model"].bytes >= HEAVY_TFLITE_BYTES):
        # the TFLite conversion is this process's heaviest stage (~6x the SavedModel's weights: +0.7 GiB on
        # convnext_tiny's 110 MB) and the PyTorch child computing the reference holds ~1 GiB (torch and the model):
        # side by side they peaked at 2.4-2.7 GiB, 2.4 after the wait. The child has a core to itself meanwhile
        # (convnext_tiny: 0.8 s of waiting, no longer in wall time); on smaller weights the overlap stays under the
        # stages before and the wait would only cost time (resnet18's 45 MB: 0.6-1.1 s more, peak 1.9-2.3 GiB).
        t = time.perf_counter()
        reference_done()
        timings["pytorch_reference_wait_before_tflite"] = time.perf_counter() - t

    @functools.cache
    def fp32() -> bytes:
        """The fp32 flatbuffer, converted once: the fp16 file is cast from it."""
        return tfexport.convert_tflite(module, "fp32", None, options.verbose, out / "saved_model")

    for precision in options.tflite_precisions:
        t = time.perf_counter()
        stage(f"writing model_{precision}.tflite")
        extra: dict = {}
        if precision == "fp32":
            blob = fp32()
        elif precision == "fp16":
            blob, why = halfcast.cast_fp16(fp32(), options.verbose)
            extra["fp16_route"] = {"cast_from_fp32": blob is not None, **({"why": why} if why else {})}
            if blob is None:
                blob = tfexport.convert_tflite(module, precision, None, options.verbose, out / "saved_model")
        elif precision == "int8" and options.int8_keep_float:
            blob, extra = _selective_int8(*int8_source(), representative, side, original(), options, out)
            extra["rnn_unrolled"] = recurrent
        elif precision == "int8" and representative is not None and recurrent:
            try:
                blob, extra = _recurrent_int8(*int8_source(), options, representative, out)
            except TensorFlowConversionError as exc:  # the other artifacts stand; parity reports this one
                manifest.failed_artifacts[f"tflite_{precision}"] = str(exc)
                continue
        else:
            blob = tfexport.convert_tflite(module, precision, representative, options.verbose, out / "saved_model")
        name = f"model_{precision}.tflite"
        (out / name).write_bytes(blob)
        manifest.artifacts[f"tflite_{precision}"] = Artifact(name, len(blob), precision=precision, details={
            "signature": tfexport.SIGNATURE_KEY, "io_dtype": "float32", "op_histogram": tfexport.op_histogram(blob),
            **tfexport.tflite_io_order(blob), "keep_float": [], **extra})  # its sha256: write_manifest hashes every artifact once, at the end
        # what the converter freed goes back first: the next file's conversion, and the parity child that starts
        # on this file now (its interpreter: 0.4 GiB on convnext_tiny), start lower
        memory.give_back()
        written(out, manifest, f"tflite_{precision}")
        timings[f"tflite_{precision}"] = time.perf_counter() - t
        if roundtrip_pending:
            written(out, manifest, "saved_model")
            roundtrip_pending = False
    if roundtrip_pending:
        written(out, manifest, "saved_model")
    if "saved_model" not in options.targets:
        shutil.rmtree(out / "saved_model")
        del manifest.artifacts["saved_model"]
    return manifest


def _unrolled(proto, side, sample, ort_out, options: ConvertOptions):
    """(serving module, graph) of a second translation with LSTM/GRU/RNN unrolled: one cell per time step."""
    from converter._convert import tfexport
    from converter._convert.tensorflow import onnx_to_keras

    graph = onnx_to_keras(proto, side.shapes, [np.dtype(d) for d in side.dtypes], side.output_names, sample,
                          ort_out, options.layout, options.verbose, unroll_rnn=True)
    return tfexport.build_serving_module(graph, options.dynamic_batch), graph


def _recurrent_int8(module, graph, options: ConvertOptions, representative, out: Path) -> tuple[bytes, dict]:
    """Full int8 of a graph with LSTM/GRU/RNN ops, from an *unrolled* translation, calibrated in a child process.

    The float artifacts keep onnx2tf's while loop (compact, any sequence length the export allows); TFLite's
    calibrator cannot quantise through a WHILE body (it segfaults in ``_feed_tensors``), so the int8 file is
    built from a second translation with one cell per time step (static sequence length, as exported). The
    child process stays: a native crash becomes this artifact's failure, not the conversion's.
    """
    from converter._convert import tfexport

    with tempfile.TemporaryDirectory(dir=out, prefix=".unrolled-") as tmp:
        tfexport.save_saved_model(module, Path(tmp) / "saved_model", options.verbose)
        blob = int8child.convert_int8(Path(tmp) / "saved_model", [i.name for i in graph.inputs],
                                      list(representative()))
    return blob, {"built_in_child_process": True, "rnn_unrolled": True}


def _selective_int8(module, graph, representative, side, proto, options: ConvertOptions, out: Path) -> tuple[bytes, dict]:
    """Full int8 with the most damaging layers kept in float (``--int8-keep-float auto|N|modules``);
    the per-layer table goes to ``int8_layers.md``."""
    from converter.quantization import quantise

    with silenced(options.verbose):  # quantise.analyse refuses a missing representative set, as convert_tflite does
        choice = quantise.choose_keep_float(module, graph, representative, side.data.inputs, side.data.labels,
                                            spec=",".join(options.int8_keep_float), onnx_model=proto)
    (out / "int8_layers.md").write_text(choice.to_markdown() + "\n")
    return choice.tflite, {"keep_float": choice.kept_modules, "keep_float_nodes": choice.kept_nodes,
                           "int8_selection": choice.to_json()}


def check_calibration(calibration: list[np.ndarray] | None, shapes: list[tuple[int, ...]]
                      ) -> list[np.ndarray] | None:
    """Refuse ``--calibration-data`` that does not fit the model's inputs (PyTorch-layout ``shapes``), is empty or
    holds NaN/Inf, before any translation: TFLite would otherwise fail deep inside its calibrator (an internal
    ``reshape.cc`` error) or quietly compute int8 ranges from nothing. Same check as the parity data's; returns
    the arrays, a single sample saved without its batch axis given one."""
    from converter.parity.data import check_samples

    if calibration is None:
        return None
    if len(calibration) != len(shapes):
        raise InputError(f"--calibration-data feeds {len(calibration)} input(s) but the model has {len(shapes)}",
                         "calibrate multi-input models through the Python API, one array per input")
    return [check_samples(np.asarray(array), "--calibration-data", shape) for array, shape in zip(calibration, shapes)]


def _representative(calibration, data, inputs):
    """Full-int8 calibration: the user's arrays, else the real parity inputs (never random noise). Every array
    was checked (:func:`check_calibration`); the shortest one bounds the sample count."""
    arrays = calibration if calibration is not None else (data.inputs if data.real else None)
    if arrays is None:
        return None
    count = min(CALIBRATION_SAMPLES, *(len(a) for a in arrays))

    def generator():
        for k in range(count):  # keyed by signature input name: TFLite does not keep the argument order
            yield {i.name: layout.to_layout(a[k:k + 1], i.artifact_perm).astype(np.dtype(i.dtype))  # ids stay ints
                   for a, i in zip(arrays, inputs)}

    return generator


#: A symbolic-batch graph further than this from onnxruntime on the sample is rebuilt at batch 1 and mapped over the
#: batch (seen: GPT-2 and T5 from configs, relative error 0.14 / 0.80 at batch 1, while the same graph with a fixed
#: batch is exact); fp32 translations that work are within ~1e-6.
SYMBOLIC_BATCH_MAX_ERROR = 1e-3


def _check_second_batch(graph, onnx_file: Path, inputs: list[np.ndarray]) -> None:
    """Raise a TensorFlowConversionError when the symbolic-batch graph does not compute onnxruntime's outputs for a
    batch of 2 (the first two samples). The sample is a batch of 1, where a graph that mixes the batch axis up with
    another one of size 1 still runs (seen: wav2vec2's attention, whose TF graph failed on every batch above 1)."""
    from converter._convert.tensorflow import output_error, run_keras

    pair = [take(x, 2) for x in inputs]
    try:
        reference = _run_onnxruntime(onnx_file, pair)
    except InputError:  # model.onnx itself cannot take a batch of 2: nothing to hold TF to here; parity's batch of 3
        return          # reports it on every row
    try:
        got = run_keras(graph.keras_model, [layout.to_layout(x, i.keras_perm) for x, i in zip(pair, graph.inputs)])
        error = output_error(reference, got, graph.outputs)
    except Exception as exc:  # TF's shape errors, and the shapes it gave
        raise TensorFlowConversionError(f"the graph onnx2tf built with a symbolic batch cannot run a batch of 2: "
                                        f"{first_line(exc, 200)}", "-") from None
    if not error <= SYMBOLIC_BATCH_MAX_ERROR:
        raise TensorFlowConversionError(f"the graph onnx2tf built with a symbolic batch disagrees with onnxruntime "
                                        f"on a batch of 2 (relative error {error:.2g})", "-")


def _run_onnxruntime(path: Path, sample: list[np.ndarray]) -> list[np.ndarray]:
    """onnxruntime's outputs of the file at ``path`` on ``sample``: the reference every row is checked against."""
    from converter.parity.runtimes import onnxruntime_runner

    try:
        return onnxruntime_runner(path).fn(sample)
    except Exception as exc:  # the ONNX reference every row is checked against must run
        raise InputError(f"onnxruntime cannot run the ONNX graph: {first_line(exc)}",
                         "export the model with standard ONNX ops at an opset between 7 and 21") from None


def _base_manifest(side: TorchSide, options: ConvertOptions, ort_out, opset: int) -> Manifest:
    import onnx2tf
    import onnxruntime

    dyn = options.dynamic_batch

    def entries() -> tuple[list[TensorInfo], list[TensorInfo]]:  # in the PyTorch layout, as ONNX has them
        inputs = [TensorInfo(n, [None if dyn and a == 0 else d for a, d in enumerate(s)], dt,
                             list(layout.identity(len(s))), list(s))
                  for n, s, dt in zip(side.input_names, side.shapes, side.dtypes)]
        outputs = [TensorInfo(n, [None if dyn and a == 0 else d for a, d in enumerate(o.shape)], str(o.dtype),
                              list(layout.identity(o.ndim)), list(o.shape))
                   for n, o in zip(side.output_names, ort_out)]
        return inputs, outputs

    (inputs, outputs), (onnx_inputs, onnx_outputs) = entries(), entries()
    return Manifest(Source.from_json(side.source), options.layout, dyn, opset, inputs, outputs,
                    onnx_inputs, onnx_outputs, {"onnx": Artifact("model.onnx")},
                    {"onnx2tf": onnx2tf.__version__, "onnxruntime": onnxruntime.__version__,
                     "python": platform.python_version()})


def write_manifest(out: Path, manifest: Manifest) -> None:
    """Write ``manifest.json``, recording every artifact's size and sha256 (``--check`` verifies them first)."""
    onnx_file = out / "model.onnx"
    if onnx_file.exists():
        manifest.artifacts["onnx"].bytes = onnx_file.stat().st_size
    for art in manifest.artifacts.values():
        if (out / art.path).exists():
            art.sha256 = digest(out / art.path)
    manifest.write(out)


def digest(path: Path) -> str:
    """sha256 of a file, or of a directory tree (each file's relative path and bytes, in sorted order)."""
    if path.is_file():
        return hashlib.sha256(path.read_bytes()).hexdigest()
    tree = hashlib.sha256()
    for item in sorted(p for p in path.rglob("*") if p.is_file()):
        tree.update(item.relative_to(path).as_posix().encode() + b"\0")
        tree.update(hashlib.sha256(item.read_bytes()).digest())
    return tree.hexdigest()


def changed_files(out: Path, manifest: Manifest) -> list[str]:
    """The artifacts whose bytes differ from the sha256 recorded in the manifest (or that are gone)."""
    return [a.path for a in manifest.artifacts.values()
            if a.sha256 is not None and (not (out / a.path).exists() or digest(out / a.path) != a.sha256)]


def _dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
