"""``erf_as_polynomial``: TFLite has no ``Erf`` builtin, so an Erf the converter does not fuse away cannot become a
TFLite file ("Could not translate MLIR to FlatBuffer ... Erf"). Exact GELU's Erf is fused into TFLite's GELU
builtin once :mod:`converter._convert.rewrites.gelu` has put the GELU in the order TFLite recognises; every other
``Erf(x)`` is replaced by the Abramowitz & Stegun 7.1.26 approximation, built only from TFLite builtins (Abs, Mul,
Add, Div, Exp, Sign):

    erf(x) = sign(x) * (1 - t*(a1 + t*(a2 + t*(a3 + t*(a4 + t*a5)))) * exp(-x^2)),  t = 1 / (1 + p*|x|)

with |error| <= 1.5e-7 in exact arithmetic and <= 5e-7 evaluated in float32 (measured 4.1e-7 on [-6, 6]) —
far inside the fp32 parity tolerance. The rewrite only feeds the TF conversion; ``model.onnx`` keeps Erf.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from converter._convert.rewrites.gelu import fusable_erfs
from converter._convert.rewrites.graph import _copy

_P = 0.3275911
_A = (0.254829592, -0.284496736, 1.421413741, -1.453152027, 1.061405429)
MAX_ABS_ERROR = 5e-7  # float32 evaluation; 1.5e-7 in exact arithmetic


def erf_as_polynomial(model: onnx.ModelProto) -> onnx.ModelProto:
    """Replace every float ``Erf`` node but exact GELU's in the order TFLite fuses (``gelu_as_fusable``); graphs
    without another come back unchanged (the same object)."""
    keep = fusable_erfs(model)
    if not any(n.op_type == "Erf" and n.domain in ("", "ai.onnx") and n.output[0] not in keep
               for n in model.graph.node):
        return model
    out = _copy(model)
    graph = out.graph
    nodes: list[onnx.NodeProto] = []
    for index, node in enumerate(graph.node):
        if node.op_type != "Erf" or node.domain not in ("", "ai.onnx") or node.output[0] in keep:
            nodes.append(node)
            continue
        nodes.extend(_expand(graph, node, f"{node.name or 'Erf'}_as_poly_{index}"))
    del graph.node[:]
    graph.node.extend(nodes)
    return out


def _expand(graph: onnx.GraphProto, node: onnx.NodeProto, prefix: str) -> list[onnx.NodeProto]:
    x, y = node.input[0], node.output[0]

    def const(name: str, value: float) -> str:
        full = f"{prefix}/{name}"
        graph.initializer.append(numpy_helper.from_array(np.array(value, dtype=np.float32), full))
        return full

    def op(kind: str, inputs: list[str], name: str, output: str | None = None) -> onnx.NodeProto:
        return helper.make_node(kind, inputs, [output or f"{prefix}/{name}"], name=f"{prefix}/{name}")

    one = const("one", 1.0)
    made = [op("Abs", [x], "abs"),
            op("Mul", [f"{prefix}/abs", const("p", _P)], "px"),
            op("Add", [f"{prefix}/px", one], "den"),
            op("Div", [one, f"{prefix}/den"], "t")]
    acc = const("a5", _A[4])
    for k in (3, 2, 1, 0):  # Horner: acc = a_k + t * acc
        made.append(op("Mul", [f"{prefix}/t", acc], f"h{k}_mul"))
        made.append(op("Add", [f"{prefix}/h{k}_mul", const(f"a{k + 1}", _A[k])], f"h{k}"))
        acc = f"{prefix}/h{k}"
    made += [op("Mul", [acc, f"{prefix}/t"], "poly"),
             op("Mul", [x, x], "x2"),
             op("Neg", [f"{prefix}/x2"], "neg_x2"),
             op("Exp", [f"{prefix}/neg_x2"], "gauss"),
             op("Mul", [f"{prefix}/poly", f"{prefix}/gauss"], "tail"),
             op("Sub", [one, f"{prefix}/tail"], "erf_abs"),
             op("Sign", [x], "sign"),
             op("Mul", [f"{prefix}/sign", f"{prefix}/erf_abs"], "erf", output=y)]
    return made
