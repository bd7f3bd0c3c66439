"""``fold_constants``: constant folding with static dimensions, as onnx-simplifier would do it."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

from converter._convert.rewrites.graph import Initializers, _consumers, _copy, _opset, _remove_dead, _shapes

_MAX_FOLD_PASSES = 32
_NONDETERMINISTIC = frozenset(
    {"RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike", "Multinomial", "Bernoulli"}
)


def _evaluate(node: onnx.NodeProto, inputs: list[np.ndarray | None], opset: int) -> list[np.ndarray]:
    from onnx.reference import ReferenceEvaluator

    feeds = {name: value for name, value in zip(node.input, inputs) if name}
    # the evaluator gets a copy of the node: it keeps what it is given in a reference cycle, and a node of the graph
    # would keep the graph's whole protobuf arena (every weight a rewrite replaced) alive until the next gc pass
    detached = onnx.NodeProto()
    detached.CopyFrom(node)
    return list(ReferenceEvaluator(detached, opsets={"": opset}).run(None, feeds))


def _fold_node(
    node: onnx.NodeProto,
    known: dict[str, np.ndarray],
    dims: dict[str, tuple[int | None, ...]],
    shapes: dict[str, tuple[int | None, ...]],
    opset: int,
) -> list[np.ndarray] | None:
    """The node's output values if they follow from constants and static dimensions alone, else None.

    ``dims`` collects the (partly known) values of Shape outputs, so that ``Shape → Gather(1)`` folds even when
    dimension 0 is a dynamic batch.
    """
    if node.domain not in ("", "ai.onnx") or node.op_type in _NONDETERMINISTIC:
        return None
    if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in node.attribute):
        return None
    if node.op_type == "Shape" and node.input[0] in shapes:
        attrs = {a.name: a.i for a in node.attribute}
        shape = shapes[node.input[0]]
        dims[node.output[0]] = shape[attrs.get("start", 0) : attrs.get("end", len(shape))]
        return None if None in dims[node.output[0]] else [np.array(dims[node.output[0]], np.int64)]
    if node.op_type == "Size" and None not in shapes.get(node.input[0], (None,)):
        return [np.array(np.prod(shapes[node.input[0]]), np.int64)]
    if node.op_type == "Gather" and node.input[0] in dims and node.input[1] in known:
        picked = np.asarray(np.take(np.array(dims[node.input[0]], dtype=object), known[node.input[1]]), dtype=object)
        return None if any(v is None for v in picked.ravel()) else [picked.astype(np.int64)]
    if node.op_type == "Slice" and node.input[0] in dims and all(n in known for n in node.input[1:] if n):
        return _slice_dims(node, known, dims)
    if not all(name in known for name in node.input if name):
        return None
    inputs = [known[name] if name else None for name in node.input]
    try:
        values = _evaluate(node, inputs, opset)
    except Exception:  # an op the reference evaluator lacks (or rejects) simply stays in the graph
        return None
    # Never let folding inflate the graph (Expand/Tile/ConstantOfShape of big shapes stay as ops).
    budget = max(1 << 16, sum(int(np.size(v)) for v in inputs if v is not None))
    if sum(int(np.size(v)) for v in values) > budget:
        return None
    return [np.asarray(v) for v in values]


def _slice_dims(node: onnx.NodeProto, known: dict[str, np.ndarray],
                dims: dict[str, tuple[int | None, ...]]) -> list[np.ndarray] | None:
    """``Shape → Slice`` on partly known dimensions (e.g. ``x.shape[-1]`` under a dynamic batch): the slice of the
    static ones folds; a slice that reaches the dynamic dimension only passes its partial value on."""
    starts, ends = known[node.input[1]].ravel(), known[node.input[2]].ravel()
    steps = known[node.input[4]].ravel() if len(node.input) > 4 and node.input[4] else np.ones(1, np.int64)
    if len(starts) != 1 or len(ends) != 1 or len(steps) != 1 or steps[0] == 0:
        return None
    picked = dims[node.input[0]][slice(int(starts[0]), int(ends[0]), int(steps[0]))]  # ONNX clamps like Python
    dims[node.output[0]] = picked
    return None if None in picked else [np.array(picked, np.int64)]


def fold_constants(model: onnx.ModelProto) -> onnx.ModelProto:
    """Replace ``Constant`` nodes, and every node whose outputs follow from constants and static dimensions, by
    initializers: what onnx-simplifier does before onnx2tf in its file-based flow (here it is neither installed
    nor reachable, since onnx2tf only runs it on files).

    Without it: (1) onnx2tf treats an initializer as a compile-time array and remaps the axes in it from NCHW to
    NHWC, but a ``Constant`` node's output as a runtime tensor it cannot remap, so ``y[:, 24:]`` (a Slice whose
    ``axes`` comes from a Constant node) slices H instead of C ("Dimensions must be equal"). (2) The TorchScript
    exporter leaves shape arithmetic on activations: ``x.chunk`` in ShuffleNetV2 becomes
    Shape→Gather→Add→Div→Mul→Slice and fails with "Input 'y' of 'AddV2' Op has type int64 that does not match
    type int32"; LSTM zero states become Shape→Gather→Concat→Expand and fail with "Tensors in list passed to
    'values' of 'ConcatV2' Op have types [int64, int32, int64]".
    Why general: a Shape of a tensor whose dimensions are static is a constant (with a dynamic batch, only the
    static dimensions fold); everything downstream of constants alone is evaluated with the ONNX reference
    evaluator, node by node, never growing the graph; graph outputs stay outputs of ops. Shape inference is
    repeated after each pass, since a folded Reshape target makes the next Shape static (ShuffleNetV2 with a
    dynamic batch needs one pass per stage).
    """
    model = _copy(model)
    for _ in range(_MAX_FOLD_PASSES):
        if not _fold_pass(model):
            break
    return model


def _fold_pass(model: onnx.ModelProto) -> bool:
    """One folding pass over ``model`` in place; False when nothing folded."""
    graph = model.graph
    shapes = _shapes(model)
    opset = _opset(model)
    known = Initializers(graph.initializer)
    graph_outputs = {o.name for o in graph.output}
    kept, folded, dims = [], {}, {}
    for node in graph.node:
        values = _fold_node(node, known, dims, shapes, opset)
        if values is None:
            kept.append(node)
            continue
        known.update(zip(node.output, values))
        if graph_outputs.intersection(node.output):
            kept.append(node)  # a graph output must stay the output of an op (a Keras layer)
        else:
            folded.update(zip(node.output, values))
    if not folded:
        return False
    del graph.node[:]
    graph.node.extend(kept)
    used = _consumers(graph)
    graph.initializer.extend(numpy_helper.from_array(v, name) for name, v in folded.items() if used.get(name, 0))
    _remove_dead(graph)
    folded_names = set(folded)
    kept_info = [vi for vi in graph.value_info if vi.name not in folded_names]
    del graph.value_info[:]
    graph.value_info.extend(kept_info)
    return True
