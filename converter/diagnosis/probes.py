"""Probes for localisation: PyTorch module calls, the ONNX tensors standing for them, and the replay routes.

How (the nobuco idea, applied to a graph we did not write by hand; :mod:`converter.diagnosis.localise` drives it):

1. PyTorch forward hooks record every leaf module call's inputs and output on a few parity inputs.
2. The TorchScript exporter names ONNX nodes after module scopes (``/layer3/layer3.1/conv2/Conv``); the dynamo
   exporter writes the module paths into each node's metadata (``pkg.torch.onnx.name_scopes``:
   ``['', 'layer3', 'layer3.1', 'layer3.1.conv2', 'conv2d_7']``). Either way (:func:`node_scopes`) each
   leaf call gets the ONNX tensor its scope produces last with the module's output shape, plus the tensors
   entering the scope from outside (its inputs).
3. A copy of ``model.onnx`` exports those tensors as extra graph outputs (``Identity`` probes) and runs
   through the failing runtime's own route: onnxruntime, or onnx2tf -> Keras (SavedModel and tf2onnx
   rows), or onnx2tf -> Keras -> TFLite at the row's precision.
4. Each probe is compared with PyTorch in the PyTorch layout; the first module in execution order whose
   relative error passes the threshold is the culprit, reported with the error at its inputs.

Batch-norm folded into the preceding conv by the exporter is handled by matching each probe, on the clean
reference graph, to the PyTorch output it equals: the scope's own output or that of a parameter module
the exporter folded away (``fused``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import onnx

from converter._convert import layout
from converter._convert.batches import chunks
from converter.parity.metrics import relative_error

#: Calibration samples for an int8 replay (ranges only need to be representative, not exact).
CALIBRATION_SAMPLES = 64


@dataclass
class ModuleCall:
    """One call of a leaf module, in execution order (``call`` counts repeated calls of one module)."""

    path: str
    call: int
    kind: str
    inputs: list[np.ndarray]
    output: np.ndarray


@dataclass
class Probe:
    """The ONNX tensors that stand for one module call: its output and the inputs entering its scope."""

    index: int  # position of the call in execution order
    module: str
    onnx_node: str
    op: str
    tensor: str
    input_tensors: list[str]
    reference: np.ndarray | None = None
    input_references: list[np.ndarray | None] = field(default_factory=list)
    fused: list[str] = field(default_factory=list)

    @property
    def output_name(self) -> str:
        return f"probe_{self.index}"

    def input_name(self, k: int) -> str:
        return f"probe_{self.index}_in{k}"


# ------------------------------------------------------------------------------------------ PyTorch side


def trace_modules(module, inputs: Sequence[np.ndarray]) -> list[ModuleCall]:
    """Run ``module`` once on ``inputs`` (PyTorch layout) and record every leaf call's inputs and output."""
    import torch

    calls: list[ModuleCall] = []
    counts: dict[str, int] = {}
    handles = []

    def hook(path: str, kind: str):
        def record(_mod, args, out) -> None:
            if not isinstance(out, torch.Tensor):
                return
            arrays = [a.detach().cpu().numpy().copy() for a in args if isinstance(a, torch.Tensor)]
            calls.append(ModuleCall(path, counts.get(path, 0), kind, arrays, out.detach().cpu().numpy().copy()))
            counts[path] = counts.get(path, 0) + 1
        return record

    for path, sub in module.named_modules():
        if path and not any(True for _ in sub.children()):
            handles.append(sub.register_forward_hook(hook(path, type(sub).__name__)))
    try:
        with torch.inference_mode():
            module(*[torch.from_numpy(np.ascontiguousarray(x)) for x in inputs])
    finally:
        for h in handles:
            h.remove()
    return calls


def _descend(components: list[str], segment: str) -> list[str]:
    """The path components after entering scope ``segment``: a dotted segment (``layer3.1``, ``block.0.0``)
    is a path relative to the innermost ancestor named like its first part; a plain one is a child."""
    first, *rest = segment.split(".")
    if rest and first in components:
        k = len(components) - 1 - components[::-1].index(first)
        return components[:k + 1] + rest
    return components + segment.split(".")


def scope_of(node_name: str, module_paths: set[str]) -> tuple[str, int] | None:
    """``/layer3/layer3.1/relu_1/Relu`` -> ``("layer3.1.relu", 1)``; None outside any known module.

    The TorchScript exporter writes one segment per module scope, as the module's name relative to its
    nearest named container (``/features/features.2/block/block.0/block.0.0/Conv`` is
    ``features.2.block.0.0``); a ``_N`` suffix that is not part of a real name is the N-th call.
    """
    components: list[str] = []
    call = 0
    for segment in [p for p in node_name.split("/") if p][:-1]:  # the last segment is the op
        candidate = _descend(components, segment)
        call = 0
        match = re.fullmatch(r"(.+)_(\d+)", candidate[-1])
        if ".".join(candidate) not in module_paths and match:
            candidate = [*candidate[:-1], match.group(1)]
            call = int(match.group(2))
        if ".".join(candidate) not in module_paths:
            return None
        components = candidate
    return (".".join(components), call) if components else None


#: The dynamo exporter's node metadata key holding the module path chain (``repr`` of a list of strings).
NAME_SCOPES = "pkg.torch.onnx.name_scopes"


def metadata_scopes(node: onnx.NodeProto) -> list[str] | None:
    """The module paths a dynamo-exported node ran in, outermost first (``['layer3', 'layer3.1',
    'layer3.1.conv2']``; ``[]`` for an op of the top-level module), or None when the node carries no such metadata
    (TorchScript exports, nodes an optimiser added). The exporter writes ``['', *paths, fx_node_name]``."""
    import ast

    text = next((p.value for p in node.metadata_props if p.key == NAME_SCOPES), None)
    if text is None:
        return None
    try:
        chain = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return None
    if not isinstance(chain, list) or not all(isinstance(c, str) for c in chain):
        return None
    return [c for c in chain[:-1] if c]


def node_scopes(model: onnx.ModelProto, module_paths: set[str]) -> list[tuple[str, int] | None]:
    """The ``(module path, call)`` of every node of ``model``, in order; None outside any of ``module_paths``.

    TorchScript exports: :func:`scope_of` the node name. Dynamo exports: the innermost path of
    :func:`metadata_scopes`; the metadata has no call index, so a module's call number grows each time the
    nodes re-enter its scope after nodes of another scope ran (two calls of one module with nothing in
    between, ``relu(relu(x))``, count as one). Nodes without metadata (constants) do not break a call.
    """
    keys: list[tuple[str, int] | None] = []
    calls: dict[str, int] = {}
    previous: str | None = None
    for node in model.graph.node:
        scopes = metadata_scopes(node)
        if scopes is None:
            keys.append(scope_of(node.name, module_paths))
            continue
        path = scopes[-1] if scopes else ""
        if path != previous:
            calls[path] = calls.get(path, -1) + 1
            previous = path
        keys.append((path, calls[path]) if path in module_paths else None)
    return keys


# ------------------------------------------------------------------------------------------- ONNX side


def scope_paths(model: onnx.ModelProto) -> set[str]:
    """Module paths read off the graph alone (when the PyTorch module is not at hand): every scope of every
    node, from the node names (TorchScript; ``_N`` call suffixes dropped where the plain name also occurs) or
    from the dynamo exporter's metadata."""
    paths: set[str] = set()
    recorded: set[str] = set()  # from metadata: real paths, never call suffixes
    for node in model.graph.node:
        scopes = metadata_scopes(node)
        if scopes is not None:
            recorded.update(scopes)
            continue
        components: list[str] = []
        for segment in [p for p in node.name.split("/") if p][:-1]:
            components = _descend(components, segment)
            paths.add(".".join(components))
    return recorded | {p for p in paths if not (re.fullmatch(r".+_\d+", p) and re.sub(r"_\d+$", "", p) in paths)}


def ancestors(paths: set[str]) -> set[str]:
    """Every proper prefix (``layer3``, ``layer3.1``) of the dotted ``paths``."""
    return {p.rsplit(".", k)[0] for p in paths for k in range(1, p.count(".") + 1)}


def trace_onnx(model: onnx.ModelProto, inputs: Sequence[np.ndarray]) -> list[ModuleCall]:
    """For an ``.onnx`` source (no PyTorch at hand): the modules are the exporter's scopes read off the node
    names, their values onnxruntime's on this (trusted) graph, in the order their last node runs."""
    paths = scope_paths(model)
    known = paths | ancestors(paths)
    names = {f"t{k}": out for k, node in enumerate(model.graph.node) for out in node.output if out}
    values = run_onnxruntime(with_outputs(model, names), inputs)
    value_of = {src: values[name] for name, src in names.items()}
    value_of.update({i.name: x for i, x in zip(model.graph.input, inputs)})
    scopes: dict[tuple[str, int], list[int]] = {}
    for position, key in enumerate(node_scopes(model, known)):
        if key is not None and key[0] in paths:
            scopes.setdefault(key, []).append(position)
    order = sorted(scopes, key=lambda k: scopes[k][-1])
    calls = []
    for path, call in order:
        nodes = [model.graph.node[p] for p in scopes[(path, call)]]
        inside = {o for n in nodes for o in n.output}
        outside = [i for n in nodes for i in n.input if i and i not in inside and i in value_of]
        calls.append(ModuleCall(path, call, nodes[-1].op_type, [value_of[i] for i in dict.fromkeys(outside)],
                                value_of[nodes[-1].output[0]]))
    return calls


def plan_probes(model: onnx.ModelProto, calls: list[ModuleCall]) -> list[Probe]:
    """One probe per leaf call that owns ONNX nodes, in execution order."""
    shapes = _tensor_shapes(model)
    produced_in: dict[str, str] = {}  # tensor -> scope key of its producer
    by_scope: dict[tuple[str, int], list[onnx.NodeProto]] = {}
    paths = {c.path for c in calls}
    for node, key in zip(model.graph.node, node_scopes(model, paths | ancestors(paths))):
        if key is None or key[0] not in paths:
            continue
        by_scope.setdefault(key, []).append(node)
        for out in node.output:
            produced_in[out] = f"{key}"
    constants = {t.name for t in model.graph.initializer}
    constants |= {o for n in model.graph.node if n.op_type in ("Constant", "Identity") and
                  all(i in constants or not i for i in n.input) for o in n.output}
    probes = []
    for index, c in enumerate(calls):
        nodes = by_scope.get((c.path, c.call), [])
        want = c.output.shape[1:]
        last = next((n for n in reversed(nodes) for o in n.output if shapes.get(o) == want), None)
        if last is None:
            continue
        tensor = next(o for o in last.output if shapes.get(o) == want)
        key = f"{(c.path, c.call)}"
        ins = [i for n in nodes for i in n.input if i and i not in constants and produced_in.get(i) != key]
        probes.append(Probe(index, c.path if c.call == 0 else f"{c.path}#{c.call}", last.name, last.op_type,
                            tensor, list(dict.fromkeys(ins))))
    return probes


def instrument(model: onnx.ModelProto, probes: list[Probe]) -> onnx.ModelProto:
    """A copy of ``model`` that also outputs every probe tensor."""
    extra = {}
    for p in probes:
        extra[p.output_name] = p.tensor
        extra.update({p.input_name(k): t for k, t in enumerate(p.input_tensors)})
    return with_outputs(model, extra)


def with_outputs(model: onnx.ModelProto, extra: dict[str, str]) -> onnx.ModelProto:
    """A copy of ``model`` that also outputs tensor ``src`` as ``name`` for every ``name: src`` of ``extra``
    (through ``Identity`` nodes, so the names are valid TF names and the originals stay internal)."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    for name, src in extra.items():
        copy.graph.node.append(onnx.helper.make_node("Identity", [src], [name], name=f"{name}_node"))
        copy.graph.output.append(onnx.helper.make_empty_tensor_value_info(name))
    return onnx.shape_inference.infer_shapes(copy)


def attach_references(probes: list[Probe], calls: list[ModuleCall], clean: dict[str, np.ndarray]) -> list[Probe]:
    """Give each probe the PyTorch arrays it stands for, chosen by value on a clean run of the graph.

    A probe's output is the scope's own output unless the exporter folded the next parameter module
    (batch norm) into it; its inputs are the module's inputs matched by shape. Probes matching nothing
    are dropped.
    """
    kept = []
    for p in probes:
        got = clean.get(p.output_name)
        if got is None:
            continue
        options = [(calls[p.index].output, [])]
        for nxt in calls[p.index + 1:p.index + 4]:  # folded modules follow at once
            if nxt.output.shape != got.shape:
                break
            options.append((nxt.output, [*options[-1][1], nxt.path]))
        errors = [relative_error(ref, got) for ref, _ in options]
        best = int(np.argmin(errors))
        p.reference, p.fused = options[best]
        module_inputs = calls[p.index].inputs
        p.input_references = [next((a for a in module_inputs if a.shape == clean[p.input_name(k)].shape), None)
                              for k in range(len(p.input_tensors))]
        kept.append(p)
    return kept


def _tensor_shapes(model: onnx.ModelProto) -> dict[str, tuple[int, ...]]:
    """Static shape of every tensor without its batch axis (the graph may be fixed at batch 1)."""
    inferred = onnx.shape_inference.infer_shapes(model)
    shapes = {}
    for info in (*inferred.graph.value_info, *inferred.graph.output, *inferred.graph.input):
        dims = info.type.tensor_type.shape.dim
        if dims and all(d.HasField("dim_value") for d in dims[1:]):
            shapes[info.name] = tuple(d.dim_value for d in dims[1:])
    return shapes


# ---------------------------------------------------------------------------------------------- routes


def graph_batch(model: onnx.ModelProto) -> int | None:
    """The fixed batch size of the graph's first input, or None when it is symbolic."""
    dim = model.graph.input[0].type.tensor_type.shape.dim[0]
    return dim.dim_value if dim.HasField("dim_value") else None


def _gather(pieces: list[tuple[int, list[np.ndarray]]], names: list[str]) -> dict[str, np.ndarray]:
    """Per-sample tensors joined over the batches; tensors without a batch axis (0-d shape arithmetic, as in
    recurrent graphs) are left out: they belong to no sample and no module output."""
    return {n: np.concatenate([outs[k][:real] for real, outs in pieces]) for k, n in enumerate(names)
            if pieces and np.ndim(pieces[0][1][k]) > 0}


def run_onnxruntime(model: onnx.ModelProto, inputs: Sequence[np.ndarray]) -> dict[str, np.ndarray]:
    """Every graph output of ``model`` on ``inputs``, batch by batch."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    in_names = [i.name for i in session.get_inputs()]
    names = [o.name for o in session.get_outputs()]
    pieces = [(real, session.run(None, dict(zip(in_names, part)))) for real, part in chunks(inputs, graph_batch(model))]
    return _gather(pieces, names)


def keras_graph(model: onnx.ModelProto, inputs: Sequence[np.ndarray], layout_mode: str = "nhwc"):
    """``model`` through the same onnx2tf route and layout detection as the real conversion."""
    from converter._convert.tensorflow import onnx_to_keras

    batch = graph_batch(model) or 1
    sample = next(part for _, part in chunks([x[:batch] for x in inputs], batch))
    reference = run_onnxruntime(model, sample)
    names = [o.name for o in model.graph.output]
    shapes = [tuple(x.shape) for x in sample]
    return onnx_to_keras(model, shapes, [x.dtype for x in sample], names, sample, [reference[n] for n in names],
                         layout_mode)


def run_keras_graph(graph, inputs: Sequence[np.ndarray], batch: int | None) -> dict[str, np.ndarray]:
    """Run an onnx2tf graph on PyTorch-layout ``inputs``; outputs back in the PyTorch layout."""
    from converter._convert.tensorflow import run_keras

    pieces = []
    for real, part in chunks(inputs, batch):
        outs = run_keras(graph.keras_model, [layout.to_layout(x, i.keras_perm) for x, i in zip(part, graph.inputs)])
        pieces.append((real, [layout.from_layout(o, info.keras_perm) for o, info in zip(outs, graph.outputs)]))
    return _gather(pieces, [o.name for o in graph.outputs])


def run_tflite_graph(graph, inputs: Sequence[np.ndarray], batch: int | None, precision: str,
                     calibration: Sequence[np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """Convert an onnx2tf graph to TFLite at ``precision`` (as the real conversion does) and run it in a
    child process (:mod:`converter._proc.isolated`: some int8 graphs abort the interpreter)."""
    from converter._proc import isolated
    from converter._convert import tfexport

    batch = batch or graph.inputs[0].torch_shape[0] or 1  # the serving signature has a fixed batch
    module = tfexport.build_serving_module(graph, dynamic_batch=False)
    representative = None
    if calibration is not None:
        def representative():
            for _, part in chunks([c[:CALIBRATION_SAMPLES] for c in calibration], batch):
                yield [layout.to_layout(x, i.artifact_perm).astype(np.float32) for x, i in zip(part, graph.inputs)]
    blob = tfexport.convert_tflite(module, precision, representative)
    outputs = isolated.run(blob, isolated.ports(graph.inputs), isolated.ports(graph.outputs), list(inputs), batch)
    return dict(zip([o.name for o in graph.outputs], outputs))
