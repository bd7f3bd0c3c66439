"""``scale_into_matmul``: ``(x * c) @ W`` with a scalar constant ``c`` and constant weights ``W`` becomes
``x @ (c * W)``, one NumPy product per weight.

The pattern is exact GELU's closing ``* 0.5`` in front of a transformer or ConvNeXt MLP's second Linear. TFLite's
converter makes this fusion itself (``FuseBinaryOpToFollowingAffineOp``), but one weight at a time through LLVM's
APFloat: about a second of every TFLite conversion of convnext_tiny, whose 18 such weights hold 9.6 M values. The
SavedModel loses one Mul per MLP as well. Multiplying by 0.5 is exact in float32, so GELU's case changes no bit;
another scalar rounds ``c * W`` once, as TFLite's own fusion does.

The Mul must be the only reader of its output (a MatMul's first input), ``c`` a float32 scalar or one-element
vector (it broadcasts without changing ``x``'s shape) and ``W`` a float32 initializer of rank 2.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

from converter._convert.rewrites.graph import _consumers, _copy, _float_scalar, _remove_dead


def scale_into_matmul(model: onnx.ModelProto) -> onnx.ModelProto:
    """Fold every such scale into its MatMul's weights; graphs without one come back unchanged (the same object)."""
    plan = _plan(model)
    if not plan:
        return model
    out = _copy(model)
    graph = out.graph
    initializers = {t.name: t for t in graph.initializer}
    matmuls = {n.name: n for n in graph.node if n.op_type == "MatMul"}
    for matmul_name, x, weights, scale, mul_name in plan:
        scaled = f"{weights}/times_{mul_name}"
        value = numpy_helper.to_array(initializers[weights]) * np.float32(scale)
        graph.initializer.append(numpy_helper.from_array(value.astype(np.float32), scaled))
        matmuls[matmul_name].input[:] = [x, scaled]
    _remove_dead(graph)
    return out


def _plan(model: onnx.ModelProto) -> list[tuple[str, str, str, float, str]]:
    """(MatMul name, the Mul's other input, weight name, scale, Mul name) for every match."""
    graph = model.graph
    initializers = {t.name: t for t in graph.initializer}
    producers = {o: n for n in graph.node for o in n.output}
    consumers = _consumers(graph)
    matmuls = [n for n in graph.node if n.op_type == "MatMul" and n.domain in ("", "ai.onnx")]
    if len({n.name for n in matmuls}) != len(matmuls):  # a plan keys MatMuls by name
        return []
    plan = []
    for node in matmuls:
        a, b = node.input
        weights = initializers.get(b)
        mul = producers.get(a)
        if (weights is None or weights.data_type != onnx.TensorProto.FLOAT or len(weights.dims) != 2
                or mul is None or mul.op_type != "Mul" or mul.domain not in ("", "ai.onnx") or consumers.get(a) != 1):
            continue
        for k in (0, 1):
            scale = _float_scalar(mul.input[k], initializers, producers, max_ndim=1)
            if scale is not None:
                plan.append((node.name, mul.input[1 - k], b, scale, mul.name or a))
                break
    return plan
