"""One runner per runtime. Every runner takes and returns arrays in the *PyTorch* layout, so the parity
engine compares like with like; each runner converts to and from its artifact's layout itself.

A runner may only accept a fixed batch (``batch``); :func:`run_batched` feeds it in chunks.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from converter._convert import batches, layout

if TYPE_CHECKING:
    from converter._convert.manifest import Manifest, TensorInfo
    from converter._proc import isolated

Fn = Callable[[list[np.ndarray]], list[np.ndarray]]


@dataclass
class Runner:
    """``fn`` maps PyTorch-layout inputs of ``batch`` samples (any count when None) to outputs."""

    runtime: str
    precision: str
    artifact: str | None
    fn: Fn
    batch: int | None = None
    #: set for runners that take every chunk in one call (the SavedModel, see ``_mapped_signature``):
    #: (all inputs, chunk) -> outputs
    feed_all: Callable[[list[np.ndarray], int], list[np.ndarray]] | None = None


def run_batched(runner: Runner, inputs: Sequence[np.ndarray], chunk: int) -> list[np.ndarray]:
    """Run ``inputs`` ([N, ...] each) through the runner ``chunk`` samples at a time.

    A runner with a fixed batch gets exactly that many: the last chunk is padded with copies of its
    first sample and the padding dropped from the outputs.
    """
    if runner.feed_all is not None:
        return runner.feed_all(list(inputs), runner.batch or chunk)
    pieces = [[o[:real] for o in runner.fn(part)]
              for real, part in batches.chunks(inputs, runner.batch or chunk, pad=bool(runner.batch))]
    return [np.concatenate([p[i] for p in pieces]) for i in range(len(pieces[0]))]


def torch_runner(module, runtime: str = "pytorch", batch: int | None = None) -> Runner:
    from converter._convert.export import run_torch

    return Runner(runtime, "fp32", None, lambda xs: run_torch(module, xs), batch)


def torchscript_runner(module, sample: list[np.ndarray], batch: int | None) -> Runner:
    """Trace, serialise and reload: the row proves the TorchScript file a user would ship works."""
    import torch

    from converter._convert.export import run_torch, traceable

    args = tuple(torch.from_numpy(x) for x in sample)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch 2.14 deprecates torch.jit: this row still checks it
        traced = module if isinstance(module, torch.jit.ScriptModule) else \
            torch.jit.trace(traceable(module, args), args, check_trace=False)
        # through a file, not an in-memory buffer: the buffer and load's copies of it were 0.4 GiB more peak RSS
        # on convnext_tiny (110 MB of weights), beside the TensorFlow process's translation
        with tempfile.TemporaryDirectory(prefix="torchscript-") as work:
            torch.jit.save(traced, Path(work) / "model.pt")
            reloaded = torch.jit.load(Path(work) / "model.pt", map_location="cpu").eval()
    return Runner("torchscript", "fp32", None, lambda xs: run_torch(reloaded, xs), batch)


def onnxruntime_runner(path: Path, runtime: str = "onnxruntime", artifact: str | None = None,
                       batch: int | None = None) -> Runner:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]

    def fn(xs: list[np.ndarray]) -> list[np.ndarray]:
        return session.run(None, dict(zip(names, xs)))

    return Runner(runtime, "fp32", artifact or path.name, fn, batch)


def load_saved_model(path: Path):
    """``tf.saved_model.load``: one load serves the SavedModel row and the tf2onnx round trip (0.65 s on
    resnet18). Keep the object referenced while its signatures are used: they hold its variables weakly."""
    import tensorflow as tf

    return tf.saved_model.load(str(path))


def saved_model_runner(path: Path, manifest: Manifest, batch: int | None, loaded=None) -> Runner:
    """The SavedModel's ``serving_default`` signature, fed all chunks in one call (:func:`_mapped_signature`):
    1000 eager calls of a batch-1 signature cost ~1.5 s of Python overhead. ``loaded``: the SavedModel at ``path``
    if already loaded (:func:`load_saved_model`)."""
    import tensorflow as tf

    loaded = loaded if loaded is not None else load_saved_model(path)
    ins, outs = manifest.inputs, manifest.outputs

    def fn(xs: list[np.ndarray]) -> list[np.ndarray]:
        feed = {i.name: tf.constant(layout.to_layout(x, tuple(i.perm_from_pytorch))) for i, x in zip(ins, xs)}
        result = loaded.signatures["serving_default"](**feed)
        return [layout.from_layout(result[o.name].numpy(), tuple(o.perm_from_pytorch)) for o in outs]

    mapped = _mapped_signature(loaded, [i.name for i in ins], [o.name for o in outs])

    def feed_all(xs: list[np.ndarray], size: int) -> list[np.ndarray]:
        n = len(xs[0])
        moved = [layout.to_layout(x, tuple(i.perm_from_pytorch))  # padded outputs are dropped below
                 for i, x in zip(ins, batches.padded(xs, size))]
        result = mapped(*(tf.constant(m.reshape(-1, size, *m.shape[1:])) for m in moved))
        return [layout.from_layout(r.numpy().reshape(-1, *r.shape[2:])[:n], tuple(o.perm_from_pytorch))
                for r, o in zip(result, outs)]

    return Runner("saved_model", "fp32", path.name, fn, batch, feed_all)


def _mapped_signature(loaded, in_names: list[str], out_names: list[str]):
    """A ``tf.function`` taking each input as [chunks, batch, ...] and running the loaded SavedModel's
    ``serving_default`` once per chunk inside the graph (``tf.map_fn``): the same concrete function, without
    a Python round trip per chunk."""
    import tensorflow as tf

    specs = loaded.signatures["serving_default"].structured_outputs
    out_spec = tuple(tf.TensorSpec(specs[o].shape, specs[o].dtype) for o in out_names)

    @tf.function(autograph=False)
    def mapped(*chunks):
        def one(parts):
            result = loaded.signatures["serving_default"](**dict(zip(in_names, parts)))
            return tuple(result[o] for o in out_names)

        return tf.map_fn(one, tuple(chunks), fn_output_signature=out_spec)

    return mapped


def tflite_job(path: Path, manifest: Manifest, batch: int | None):
    """An :class:`isolated.Job` for a TFLite file: its interpreter runs in a child process, since some int8 graphs
    make LiteRT's reference kernels abort the whole process (SIGABRT); there that becomes a failed row."""
    from converter._proc import isolated

    ins = [isolated.Port(i.name, tuple(i.perm_from_pytorch)) for i in manifest.inputs]
    outs = [isolated.Port(o.name, tuple(o.perm_from_pytorch)) for o in manifest.outputs]
    return isolated.Job(path, ins, outs, batch)


def onnx_job(path: Path, manifest: Manifest):
    """An :class:`isolated.Job` for onnxruntime on the ONNX file, fed and read by the ONNX names in the PyTorch
    layout (parity runs it in its child, beside the TFLite files)."""
    from converter._proc import isolated

    ins = [isolated.Port(i.name, layout.identity(len(i.pytorch_shape))) for i in manifest.onnx_inputs]
    outs = [isolated.Port(o.name, layout.identity(len(o.pytorch_shape))) for o in manifest.onnx_outputs]
    return isolated.Job(path, ins, outs, manifest.fixed_batch, runtime="onnxruntime")


def tflite_runner(path: Path, manifest: Manifest, batch: int | None) -> Runner:
    """A TFLite file's ``serving_default`` signature in *this* process (``converter.runtime``'s callables; parity
    runs TFLite in a child instead, :func:`tflite_job`). Inputs are fed by name, each in the file's own dtype."""
    from ai_edge_litert.interpreter import Interpreter

    signature = Interpreter(model_path=str(path)).get_signature_runner("serving_default")
    dtypes = {name: detail["dtype"] for name, detail in signature.get_input_details().items()}
    ins = [(i.name, tuple(i.perm_from_pytorch)) for i in manifest.inputs]
    outs = [(o.name, tuple(o.perm_from_pytorch)) for o in manifest.outputs]

    def fn(xs: list[np.ndarray]) -> list[np.ndarray]:
        result = signature(**{name: np.ascontiguousarray(layout.to_layout(x, perm)).astype(dtypes[name], copy=False)
                              for (name, perm), x in zip(ins, xs)})
        return [layout.from_layout(np.asarray(result[name]), perm) for name, perm in outs]

    return Runner("tflite", "", path.name, fn, batch)


def keras_native_runner(keras_model, manifest_inputs: list[TensorInfo]) -> Runner:
    """The reference net rebuilt natively in Keras with ported weights: an independent second route
    to TF that shares no code with ONNX/onnx2tf."""

    def fn(xs: list[np.ndarray]) -> list[np.ndarray]:
        nhwc = [layout.to_layout(x, layout.channels_last(x.ndim)) if x.ndim == 4 else x for x in xs]
        out = keras_model(nhwc if len(nhwc) > 1 else nhwc[0], training=False)
        out = out if isinstance(out, (list, tuple)) else [out]
        return [np.asarray(o) for o in out]

    def feed_all(inputs: list[np.ndarray], chunk: int) -> list[np.ndarray]:
        del chunk  # the PyTorch rows' chunk; this net always takes KERAS_CHUNK samples at a time
        return run_batched(Runner("keras_native", "fp32", None, fn), inputs, KERAS_CHUNK)

    return Runner("keras_native", "fp32", None, fn, None, feed_all)


#: Samples per call of the reference net's Keras port. Its outputs change in the last bits with the batch, unlike
#: the max errors of the PyTorch rows', so it stays at the batch its published parity numbers were measured at.
KERAS_CHUNK = 64


def _frozen(signature) -> tuple[object, list[str], list[str]]:
    """(GraphDef with the variables as constants and every function inlined, input names, output names) of a
    concrete function: what ``convert_variables_to_constants_v2`` computes, without the ConcreteFunction it then
    builds from that GraphDef only to be read back (re-importing and pruning the graph: 1.9 of resnet18's 5.6 s).
    Falls back to the public function if TensorFlow's private helpers change."""
    from tensorflow.python.framework import convert_to_constants as c2c

    try:
        data = c2c._FunctionConverterDataInEager(func=signature, lower_control_flow=False, aggressive_inlining=True)
        graph_def, converted = c2c._replace_variables_by_constants(converter_data=data)
    except (AttributeError, TypeError):
        frozen = c2c.convert_variables_to_constants_v2(signature, lower_control_flow=False, aggressive_inlining=True)
        return frozen.graph.as_graph_def(), [t.name for t in frozen.inputs], [t.name for t in frozen.outputs]
    captures = signature.graph.internal_captures
    gone = {id(captures[k]) for k in converted}  # captured variables, now constants: no longer inputs
    return graph_def, [t.name for t in signature.inputs if id(t) not in gone], [t.name for t in signature.outputs]


def _bypass_constant_identities(graph_def, outputs: list[str]) -> None:
    """Point every reader of an ``Identity`` of a constant (what freezing leaves of each variable read) at the
    constant itself and drop the Identity, in place. tf2onnx would fold each in a TF session of its own (358
    sessions, 1.2 s of convnext_tiny's round trip). Identities that are graph ``outputs`` stay."""
    def first_output_of(ref: str) -> str | None:
        """The node a data or control input ``ref`` (``name``, ``name:0``, ``^name``) reads output 0 of."""
        name, _, port = ref.lstrip("^").partition(":")
        return name if port in ("", "0") else None

    constants = {n.name for n in graph_def.node if n.op == "Const"}
    keep = {o.split(":")[0] for o in outputs}
    alias = {n.name: first_output_of(n.input[0]) for n in graph_def.node
             if n.op == "Identity" and n.name not in keep and len(n.input) == 1
             and first_output_of(n.input[0]) in constants}

    def rewired(ref: str) -> str:
        name = first_output_of(ref)
        if name not in alias:
            return ref
        return f"^{alias[name]}" if ref.startswith("^") else alias[name]

    for k in reversed(range(len(graph_def.node))):  # deleting in place: no copy of the constants' tensors
        node = graph_def.node[k]
        if node.name in alias:
            del graph_def.node[k]
        elif any(first_output_of(r) in alias for r in node.input):
            node.input[:] = [rewired(r) for r in node.input]


def _without_resource_inputs(graph_def, input_names: list[str]) -> list[str]:
    """``input_names`` less the placeholders of dtype ``resource`` (a capture freezing left as an input)."""
    from tensorflow.core.framework import types_pb2

    placeholders = {n.name: n.attr["dtype"].type for n in graph_def.node if n.op == "Placeholder"}
    return [name for name in input_names
            if placeholders.get(name.split(":")[0], types_pb2.DT_FLOAT) != types_pb2.DT_RESOURCE]


@contextlib.contextmanager
def _without_function_scan():
    """tf2onnx's ``resolve_functions`` converts the whole graph's nodes once (``tflist_to_onnx``) only to list the
    functions they call, before converting them again for real: 0.6 s of convnext_tiny's round trip. A frozen,
    inlined graph has an empty function library, so the scan is skipped there (a graph with functions still
    gets it)."""
    from tf2onnx import tfonnx

    scan = tfonnx.resolve_functions
    tfonnx.resolve_functions = lambda tf_graph: scan(tf_graph) if tf_graph._functions else []
    try:
        yield
    finally:
        tfonnx.resolve_functions = scan


def _tf2onnx(graph_def, input_names: list[str], output_names: list[str], opset: int, optimize: bool):
    """``tf2onnx.convert.from_graph_def`` (pinned tf2onnx 1.17), by default without its ONNX graph optimizers.

    Those ~12 optimizers (transpose pushing, constant folding, identity removal, …) make the ONNX file smaller and
    faster, not different, and onnxruntime optimizes the graph itself when it loads it; but each rewrites every
    node's protobuf after its pass, re-copying the weights (4.5 of resnet18's 12 s), and by default deep-copies the
    graph before each one to roll back one that raises (another 4.6 s). The row is there to prove the TF graph
    converts and computes the same numbers, so ``optimize=False`` skips them. A TF while loop over a TensorList
    (Keras RNNs) only becomes a graph onnxruntime accepts after tf2onnx's loop optimizer: ``optimize=True`` runs
    them all, in place (``TF2ONNX_CATCH_ERRORS=FALSE``), and the default way only if one raises. ``optimize=False``
    also skips tf2onnx's grappler pass over the TF graph (see below)."""
    import tensorflow as tf
    from tf2onnx import constants, tf_loader
    from tf2onnx.convert import _convert_common

    if optimize:
        with tf.device("/cpu:0"), tf.Graph().as_default() as graph, tf_loader.tf_session(graph=graph) as session:
            tf.import_graph_def(graph_def, name="")
            input_names = tf_loader.inputs_without_resource(session, input_names)
            # grappler (constant folding, function inlining) on a graph already frozen and inlined: 0.8 s of
            # resnet18's row for what tf2onnx's own constant folding does anyway; kept for the fallback conversion
            frozen = tf_loader.tf_optimize(input_names, output_names, graph_def)
    else:
        # what tf_loader.inputs_without_resource asks a session, read off the GraphDef: importing it into a graph
        # of its own only for that copied every weight once more (0.45 s and ~0.3 GiB on convnext_tiny)
        input_names, frozen = _without_resource_inputs(graph_def, input_names), graph_def
    common = dict(name="roundtrip", continue_on_error=True, opset=opset, input_names=input_names,
                  output_names=output_names)
    if not optimize:
        with _without_function_scan():
            return _convert_common(frozen, optimizers={}, **common)[0]
    key = constants.ENV_TF2ONNX_CATCH_ERRORS
    saved = os.environ.get(key)
    try:
        os.environ[key] = "FALSE"
        try:
            return _convert_common(frozen, **common)[0]
        except Exception:
            os.environ[key] = "TRUE"
            return _convert_common(frozen, **common)[0]
    finally:
        if saved is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = saved


def tf2onnx_roundtrip_job(saved_model: Path, manifest: Manifest, opset: int, workdir: Path, batch: int | None,
                          verbose: bool = False, loaded=None, *, optimize: bool = False) -> tuple[str, "isolated.Job"]:
    """SavedModel -> ONNX with tf2onnx (``workdir/tf2onnx_roundtrip.onnx``), to run in onnxruntime: (the row's
    artifact, the :class:`isolated.Job`). The row proves the TF graph is a faithful, portable graph (variables
    frozen first, since a loaded signature captures them as extra inputs). Parity queues the job for its child
    (:mod:`converter.parity.offprocess`) and converts again with tf2onnx's optimizers (``optimize``) only when
    onnxruntime refuses the plain graph: nothing loads it here just to find out.

    Control flow stays functional (``lower_control_flow=False``, as tf2onnx's own ``from_function`` does): lowered
    to v1 Enter/Exit frames, a Keras RNN's while loop leaves a ``TensorListReserve`` that tf2onnx emits with an
    undefined dtype and onnxruntime refuses to load ("Invalid tensor data type 0")."""
    from converter._convert import memory
    from converter._convert.quiet import silenced
    from converter._proc import isolated

    ours = loaded is None  # loaded here: this function holds the only reference to it
    loaded = loaded if loaded is not None else load_saved_model(saved_model)  # keep alive (see load_saved_model)
    signature = loaded.signatures["serving_default"]
    artifact = "saved_model (via tf2onnx)"
    if (manifest.dynamic_batch_route or {}).get("batch_map") and hasattr(loaded, "serve_one"):
        # a batch-mapped signature is a WHILE loop over the per-sample graph; tf2onnx writes it as an ONNX Loop
        # onnxruntime refuses (INVALID_GRAPH: a Conv inside with a wrong-sized attribute, int32/int64 counters).
        # The per-sample graph the SavedModel saves beside the signature is checked instead, a sample at a time
        signature, batch = loaded.serve_one.get_concrete_function(), 1
        artifact = "saved_model per-sample function (via tf2onnx)"
    path = workdir / "tf2onnx_roundtrip.onnx"
    with silenced(verbose):
        graph_def, in_names, out_names = _frozen(signature)
        # the frozen GraphDef is all tf2onnx reads: the loaded SavedModel (its graph and weights, 0.25 GiB on
        # convnext_tiny; reference cycles, hence the collection) goes before tf2onnx makes its own copies
        signature = loaded = None
        if ours:
            memory.give_back()
        _bypass_constant_identities(graph_def, out_names)
        path.write_bytes(_tf2onnx(graph_def, in_names, out_names, opset, optimize).SerializeToString())
    # frozen outputs follow tf.nest.flatten of the signature's dict, i.e. sorted by name
    flat_order = sorted(o.name for o in manifest.outputs)
    ins = [isolated.Port(f"{i.name}:0", tuple(i.perm_from_pytorch)) for i in manifest.inputs]
    outs = [isolated.Port(out_names[flat_order.index(o.name)], tuple(o.perm_from_pytorch)) for o in manifest.outputs]
    return artifact, isolated.Job(path, ins, outs, batch, runtime="onnxruntime")
