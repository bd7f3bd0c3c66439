"""``anchor_constant_outputs``: graph outputs that do not depend on the inputs become outputs of an op."""

from __future__ import annotations

import onnx
from onnx import helper

from converter._convert.rewrites.graph import _copy, _input_dependent, _rename_internal
from converter._convert.rewrites.subgraphs import anchor_condition


def anchor_constant_outputs(model: onnx.ModelProto) -> onnx.ModelProto:
    """Make every graph output that does not depend on the inputs (a buffer, a folded shape) the output of an op
    that does: ``Where(IsNaN(ReduceMin(x)), c, c)``, which equals ``c`` exactly for every ``x``, NaN included
    (:func:`~converter._convert.rewrites.subgraphs.anchor_condition`; an integer-only graph anchors on a Cast).

    Without it: onnx2tf evaluates such an output to a constant, which cannot be an output of a Keras functional
    model; it silently drops it (the Keras model has fewer outputs than the ONNX graph) or fails with "Output
    tensors of a Functional model must be the output of a TensorFlow Layer". Why general: it keys only on data
    flow (no path from any input), and both branches of the Where are the constant itself.
    """
    model = _copy(model)
    graph = model.graph
    live = _input_dependent(graph)
    constant_outputs = [o for o in graph.output if o.name not in live]
    anchor = anchor_condition(graph) if constant_outputs else None
    if anchor is None:
        return model
    cond, nodes = anchor
    for output in constant_outputs:
        hidden = f"{output.name}_constant"
        _rename_internal(graph, output.name, hidden)
        nodes.append(helper.make_node("Where", [cond, hidden, hidden], [output.name],
                                      name=f"{output.name}_anchor/Where"))
    graph.node.extend(nodes)
    return model
