"""``expand_as_broadcast``: ``op(b, Expand(a, Shape(b)))`` becomes ``op(b, a)`` for a broadcasting binary ``op``.

PyTorch exports ``a.expand_as(b)`` in front of an elementwise op that would broadcast anyway, e.g.
``F.normalize``'s ``x / norm.clamp_min(eps).expand_as(x)`` (EdgeNeXt's cross-covariance attention, CLIP-style
embedding heads), as an ``Expand`` to ``Shape(b)``. onnx2tf builds it as ``a * ones(shape)``: with a fixed batch the
shape folds and the file stores a tensor of ones the size of ``b`` and one more MUL (EdgeNeXt-XX-Small: 6 MULs and
120 KB of its TFLite fp32 file); with a symbolic batch the shape is a run-time tensor onnx2tf reads off its own,
transposed, tensors.

Exact for every shape: numpy-style broadcasting is associative, ``broadcast(b, broadcast(a, shape(b)))`` equals
``broadcast(b, a)``, and every output element pairs the same elements of ``a`` and ``b``. Matched only when every
reader of the Expand's output is such an op with ``b`` as its other input (and the Expand is no graph output); run
before ``fold_constants``, which would turn ``Shape(b)`` into a constant.
"""

from __future__ import annotations

import onnx

from converter._convert.rewrites.graph import _consumers, _copy, _readers, _remove_dead

#: elementwise ops with numpy-style (multidirectional) broadcasting of their two inputs
_BROADCASTING = frozenset({"Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "Mod", "Equal", "Less", "Greater",
                           "LessOrEqual", "GreaterOrEqual", "And", "Or", "Xor", "BitShift"})


def expand_as_broadcast(model: onnx.ModelProto) -> onnx.ModelProto:
    """Drop every such Expand; graphs without one come back unchanged (the same object)."""
    plan = _plan(model.graph)
    if not plan:
        return model
    out = _copy(model)
    for node in out.graph.node:
        for k, name in enumerate(node.input):
            if name in plan:
                node.input[k] = plan[name]
    _remove_dead(out.graph)
    return out


def _plan(graph: onnx.GraphProto) -> dict[str, str]:
    """Expand output -> the tensor it expands, for every Expand that only feeds broadcasting ops beside ``b``."""
    producers = {o: n for n in graph.node for o in n.output}
    readers = _readers(graph)
    counts = _consumers(graph)
    plan = {}
    for node in graph.node:
        if node.op_type != "Expand" or node.domain not in ("", "ai.onnx") or len(node.input) != 2:
            continue
        shape = producers.get(node.input[1])
        if shape is None or shape.op_type != "Shape" or any(a.name in ("start", "end") for a in shape.attribute):
            continue
        b, expanded = shape.input[0], node.output[0]
        users = [graph.node[k] for k in readers.get(expanded, [])]
        if not users or counts.get(expanded) != len(users):
            continue  # also a graph output
        if all(_broadcasts_beside(user, expanded, b) for user in users):
            plan[expanded] = node.input[0]
    return plan


def _broadcasts_beside(node: onnx.NodeProto, expanded: str, b: str) -> bool:
    inputs = list(node.input)
    return (node.op_type in _BROADCASTING and node.domain in ("", "ai.onnx") and len(inputs) == 2
            and sorted(inputs) == sorted([expanded, b]) and expanded != b)
