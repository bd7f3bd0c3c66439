"""``batch_invariant_as_constant``: under a dynamic batch, a value computed from the batch size alone becomes a
constant with a batch of one."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from converter._convert.rewrites.broadcast import _BROADCASTING
from converter._convert.rewrites.graph import (_copy, _elem_types, _readers, _remove_dead, _shapes,
                                               _symbolic_input_axes)
from converter._convert.rewrites.subgraphs import _FLOATS

#: Ops whose output's shape may follow from input *values*: a Shape read behind them is not the batch's alone.
_DATA_SHAPED = frozenset({"NonZero", "Compress", "Unique", "TopK", "NonMaxSuppression", "Loop", "If", "Scan"})


def batch_invariant_as_constant(model: onnx.ModelProto) -> onnx.ModelProto:
    """Replace each float tensor that depends on the inputs only through their batch size, whose rows are all
    the same, and that meets an activation in a broadcasting elementwise op, by its value at batch 1.

    Without it: EdgeNeXt's positional encoding is computed from ``torch.zeros((B, H, W))`` (cumulative sums,
    sin/cos, a 1×1 convolution, then ``reshape(B, -1, H * W)``), so under ``--dynamic-batch`` it is an op chain
    on the run-time batch size that onnx2tf lays out as an image on one side and as a sequence on the other;
    the symbolic-batch graph it builds disagrees with onnxruntime and the model falls back to the batch-mapped
    route (a WHILE loop in TFLite). At a fixed batch ``fold_constants`` folds the whole chain to a constant; this
    is the same folding for the one value the batch size leaves open.
    Why exact: the tensor's values are computed by onnxruntime from the graph itself at batch 1 and at batch 2
    (random inputs, and the batch-2 value must be the batch-1 value repeated), it keys only on data flow (the
    tensor reads the inputs through ``Shape`` alone, in a graph without data-shaped ops, and every other input
    dimension is static), and each reader broadcasts it against an operand of the same rank with the symbolic
    batch, so ``[1, ...]`` gives every sample what its row gave. Graphs with a fixed batch, or with a symbolic
    dimension past the batch, are left as they are.
    """
    if _symbolic_input_axes(model) != {0} or any(n.op_type in _DATA_SHAPED for n in model.graph.node):
        return model
    frontier = _frontier(model)
    if not frontier:
        return model
    values = _batch_one_values(model, frontier)
    if not values:
        return model
    model = _copy(model)
    graph = model.graph
    for name, value in values.items():
        constant = f"{name}_batch_invariant"
        graph.initializer.append(numpy_helper.from_array(value, constant))
        for node in graph.node:
            if node.op_type in _BROADCASTING:
                node.input[:] = [constant if i == name else i for i in node.input]
    _remove_dead(graph)
    return model


def _frontier(model: onnx.ModelProto) -> dict[str, int]:
    """Float tensors (name -> element type) computed from the batch size alone (through ``Shape``) that only
    broadcasting elementwise ops read, each beside an input-dependent operand of the same rank whose first dimension
    is the symbolic batch."""
    graph = model.graph
    initializers = {t.name for t in graph.initializer}
    data = {i.name for i in graph.input if i.name not in initializers}  # values that follow from the input values
    sized = set()  # values that follow from the batch size (and constants) alone
    for node in graph.node:
        if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in node.attribute):
            data.update(node.output)
        elif node.op_type == "Shape" and (node.input[0] in data or node.input[0] in sized):
            sized.update(node.output)
        elif data.intersection(node.input):
            data.update(node.output)
        elif sized.intersection(node.input):
            sized.update(node.output)
    if not sized:
        return {}
    shapes = _shapes(model)
    if any(None in shapes.get(n.input[0], (None,))[1:] for n in graph.node if n.op_type == "Shape"
           and n.input[0] in data):
        return {}  # a shape read with an unknown size past the batch: the value may follow from more than B
    types = _elem_types(model)
    readers = _readers(graph)
    outputs = {o.name for o in graph.output}
    frontier = {}
    for name in sorted(sized):
        shape = shapes.get(name)
        reading = [graph.node[k] for k in readers.get(name, [])]
        if not reading or name in outputs or types.get(name) not in _FLOATS or not shape or shape[0] is not None:
            continue
        if all(r.output[0] in data and _broadcasts_over_batch(r, name, shape, shapes, data) for r in reading):
            frontier[name] = types[name]
    return frontier


def _broadcasts_over_batch(node: onnx.NodeProto, name: str, shape: tuple[int | None, ...],
                           shapes: dict[str, tuple[int | None, ...]], data: set[str]) -> bool:
    """Whether ``node`` broadcasts ``name`` against an input-dependent operand of its rank with a symbolic batch."""
    others = [shapes.get(i) for i in node.input if i != name]
    return (node.op_type in _BROADCASTING and node.domain in ("", "ai.onnx") and len(others) == 1
            and any(i in data for i in node.input if i != name)
            and others[0] is not None and len(others[0]) == len(shape) and others[0][0] is None)


def _batch_one_values(model: onnx.ModelProto, names: dict[str, int]) -> dict[str, np.ndarray]:
    """The batch-1 value of each tensor in ``names`` whose batch-2 value repeats it (computed by onnxruntime)."""
    import onnxruntime as ort

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    del probe.graph.output[:]
    probe.graph.output.extend(helper.make_tensor_value_info(n, t, None) for n, t in names.items())
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    rng = np.random.default_rng(0)
    try:
        session = ort.InferenceSession(probe.SerializeToString(), options, providers=["CPUExecutionProvider"])
        runs = [dict(zip(names, session.run(None, _feeds(model, batch, rng)), strict=True)) for batch in (1, 2)]
    except Exception:  # noqa: BLE001  onnxruntime cannot run it on these inputs: the graph stays as it is
        return {}
    return {n: runs[0][n] for n in names
            if runs[0][n].shape[:1] == (1,) and runs[1][n].shape == (2, *runs[0][n].shape[1:])
            and np.array_equal(runs[1][n], np.concatenate([runs[0][n]] * 2))}


def _feeds(model: onnx.ModelProto, batch: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Inputs at ``batch``: floats drawn from ``rng``, integers and booleans zero (valid ids and masks)."""
    initializers = {t.name for t in model.graph.initializer}
    feeds = {}
    for info in model.graph.input:
        if info.name in initializers:
            continue
        tensor_type = info.type.tensor_type
        shape = [batch, *(d.dim_value for d in tensor_type.shape.dim[1:])]
        dtype = helper.tensor_dtype_to_np_dtype(tensor_type.elem_type)
        feeds[info.name] = (rng.standard_normal(shape).astype(dtype) if tensor_type.elem_type in _FLOATS
                            else np.zeros(shape, dtype))
    return feeds
