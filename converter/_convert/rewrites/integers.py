"""``int64_abs_as_select``: an ``Abs`` of int64 values becomes ``Where(x < 0, -x, x)``."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from converter._convert.rewrites.graph import _copy, _elem_types


def int64_abs_as_select(model: onnx.ModelProto) -> onnx.ModelProto:
    """``Abs(x)`` with int64 ``x`` becomes ``Where(Less(x, 0), Neg(x), x)``.

    Without it: TFLite has no int64 ``ABS`` kernel, so a graph that keeps one (T5's relative-position buckets,
    ``abs(key_pos - query_pos)``, once a symbolic sequence length stops it folding) cannot become a TFLite file
    ("Could not translate MLIR to FlatBuffer … Abs"); TFLite's LESS, NEG and SELECT_V2 all take int64. Why exact and
    general: it is the definition of the absolute value, int64 negation wraps exactly as ``Abs`` does at INT64_MIN,
    and the rewrite keys only on the op and its operand's inferred type.
    """
    types = _elem_types(model)

    def is_int64_abs(node: onnx.NodeProto) -> bool:
        return node.op_type == "Abs" and node.domain in ("", "ai.onnx") and types.get(node.input[0]) == TensorProto.INT64

    if not any(is_int64_abs(n) for n in model.graph.node):
        return model
    model = _copy(model)
    graph = model.graph
    nodes = []
    for node in graph.node:
        if not is_int64_abs(node):
            nodes.append(node)
            continue
        x, prefix = node.input[0], node.name or node.output[0]
        zero = f"{prefix}/zero"
        graph.initializer.append(numpy_helper.from_array(np.array(0, np.int64), zero))
        nodes += [
            helper.make_node("Less", [x, zero], [f"{prefix}/negative"], name=f"{prefix}/Less"),
            helper.make_node("Neg", [x], [f"{prefix}/negated"], name=f"{prefix}/Neg"),
            helper.make_node("Where", [f"{prefix}/negative", f"{prefix}/negated", x], list(node.output), name=prefix),
        ]
    del graph.node[:]
    graph.node.extend(nodes)
    return model
