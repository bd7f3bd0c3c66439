"""``zero_pad_nonnegative_maxpool``: a padded MaxPool over a non-negative tensor pads with 0, not −∞."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from converter._convert.rewrites.graph import _copy, _opset

#: Ops whose output is never negative (``Clip`` only with a constant ``min >= 0``, checked separately).
_NONNEGATIVE = frozenset({"Relu", "Sigmoid", "Softmax", "Softplus", "Abs", "Exp"})


def zero_pad_nonnegative_maxpool(model: onnx.ModelProto) -> onnx.ModelProto:
    """Give every padded ``MaxPool`` whose input is provably ``>= 0`` (the output of ``Relu``, ``Clip(min >= 0)``,
    ``Sigmoid``...) an explicit ``Pad`` with value 0 and no padding of its own.

    Without it: onnx2tf lowers a padded MaxPool to ``PADV2(x, -FLT_MAX)`` + ``MAX_POOL_2D``; in full-int8 TFLite
    the calibrated range of that tensor then spans −3.4e38, its scale becomes ~1e36, every real activation
    quantises to the same value and the int8 file is useless (or XNNPACK refuses it). ResNets and ShuffleNets
    have exactly this stem (Conv → ReLU → MaxPool(3, 2, pad 1)). Why it is exact: every window holds at least one
    real element (``pad < kernel``, as ONNX requires), all real elements are ``>= 0``, so a 0 in the window never
    wins over them — the max is unchanged. Only ``ceil_mode=0`` and explicit pads are rewritten (then the output
    size ``floor((H + 2p - k) / s) + 1`` is the same with the padding moved out); ``Indices`` outputs are left alone.
    """
    model = _copy(model)
    graph = model.graph
    if _opset(model) < 11:  # Pad takes its pads as an input from opset 11
        return model
    producers = {out: node for node in graph.node for out in node.output}
    constants = {t.name: t for t in graph.initializer}
    nodes: list[onnx.NodeProto] = []
    for node in graph.node:
        pads = _rewritable_pads(node, producers.get(node.input[0]), constants) if node.op_type == "MaxPool" else None
        if pads is not None:
            rank = len(pads) // 2
            padded, pads_name = f"{node.input[0]}_zero_padded_{len(nodes)}", f"{node.name or 'MaxPool'}_zero_pads"
            graph.initializer.append(numpy_helper.from_array(
                np.array([0, 0, *pads[:rank], 0, 0, *pads[rank:]], dtype=np.int64), pads_name))
            nodes.append(helper.make_node("Pad", [node.input[0], pads_name], [padded], mode="constant",
                                          name=f"{node.name or 'MaxPool'}/zero_pad"))
            node.input[0] = padded
            for attribute in node.attribute:
                if attribute.name == "pads":
                    del attribute.ints[:]
                    attribute.ints.extend([0] * len(pads))
        nodes.append(node)
    del graph.node[:]
    graph.node.extend(nodes)
    return model


def _rewritable_pads(node: onnx.NodeProto, producer: onnx.NodeProto | None,
                     constants: dict[str, onnx.TensorProto]) -> list[int] | None:
    if node.op_type != "MaxPool" or node.domain not in ("", "ai.onnx") or len(node.output) > 1:
        return None
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    pads = list(attrs.get("pads", []))
    auto_pad = attrs.get("auto_pad", b"NOTSET")
    if not any(pads) or attrs.get("ceil_mode", 0) or auto_pad not in (b"NOTSET", "NOTSET"):
        return None
    return pads if _nonnegative(producer, constants) else None


def _nonnegative(producer: onnx.NodeProto | None, constants: dict[str, onnx.TensorProto]) -> bool:
    if producer is None:
        return False
    if producer.op_type in _NONNEGATIVE:
        return True
    if producer.op_type == "Clip":
        if len(producer.input) > 1 and producer.input[1] in constants:  # opset >= 11: min is an input
            return bool(np.all(numpy_helper.to_array(constants[producer.input[1]]) >= 0))
        low = next((helper.get_attribute_value(a) for a in producer.attribute if a.name == "min"), None)
        return low is not None and low >= 0
    return False
