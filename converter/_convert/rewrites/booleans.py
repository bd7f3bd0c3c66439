"""``expand_bool_as_int``: a boolean ``Expand`` to a shape known only at run time expands an int32 copy instead."""

from __future__ import annotations

import onnx
from onnx import TensorProto, helper

from converter._convert.rewrites.graph import _copy, _elem_types


def expand_bool_as_int(model: onnx.ModelProto) -> onnx.ModelProto:
    """``Expand(mask_bool, shape)`` with a ``shape`` that is not a constant becomes
    ``Cast(Expand(Cast(mask_bool, INT32), shape), BOOL)``.

    Without it: onnx2tf translates an Expand whose target shape it cannot read at conversion time as
    ``x * ones(shape)``, and TensorFlow has no multiply for ``bool`` ("Value passed to parameter 'x' has DataType
    bool"): a Hugging Face attention mask expanded to ``[B, 1, T, T]`` with a symbolic sequence length
    (``--dynamic-dim input_ids:1``) stops the conversion. Why exact and general: 0/1 survive the round trip through
    int32 unchanged, and the rewrite keys only on the op, the operand's inferred type and a non-constant shape.
    """
    model = _copy(model)
    graph = model.graph
    constants = {t.name for t in graph.initializer} | {o for n in graph.node if n.op_type == "Constant" for o in n.output}
    types = _elem_types(model)
    nodes = []
    for node in graph.node:
        is_bool = node.op_type == "Expand" and node.domain in ("", "ai.onnx") and types.get(node.input[0]) == TensorProto.BOOL
        if not is_bool or node.input[1] in constants:
            nodes.append(node)
            continue
        source, shape, target = node.input[0], node.input[1], node.output[0]
        prefix = node.name or target
        nodes += [
            helper.make_node("Cast", [source], [f"{prefix}_as_int"], name=f"{prefix}/CastToInt", to=TensorProto.INT32),
            helper.make_node("Expand", [f"{prefix}_as_int", shape], [f"{prefix}_expanded"], name=f"{prefix}/ExpandInt"),
            helper.make_node("Cast", [f"{prefix}_expanded"], [target], name=f"{prefix}/CastToBool", to=TensorProto.BOOL),
        ]
    del graph.node[:]
    graph.node.extend(nodes)
    return model
