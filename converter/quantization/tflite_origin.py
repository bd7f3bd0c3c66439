"""Where a TFLite tensor comes from: the ONNX node and PyTorch module that compute the same values.

onnx2tf names TensorFlow ops generically (``model/tf.nn.convolution_1/convolution``), and the TFLite
converter fuses them (conv + bias + relu become one ``CONV_2D`` named after all three), so names cannot be
mapped back. Values can: a float TFLite model is run once with every tensor preserved, the ONNX graph
once with every node output exported, and each TFLite tensor is matched to the ONNX tensor equal to it
(in either layout). The ONNX node's scope names the module (:func:`converter.diagnosis.probes.scope_of`); nodes
outside any module (a functional ``F.relu``) inherit the module of their nearest producer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import onnx

from converter._convert import layout
from converter.diagnosis import probes
from converter.parity.metrics import relative_error

#: Relative error under which a TFLite tensor and an ONNX tensor count as the same tensor (both float32).
MATCH_TOLERANCE = 1e-3
#: How far up the producer chain an unscoped node looks for a module.
MAX_HOPS = 8
#: TFLite ops that absorb a following activation, and the ONNX activations they absorb.
FUSING_OPS = {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "TRANSPOSE_CONV", "ADD", "SUB", "MUL"}
ACTIVATIONS = {"Relu", "Clip", "Tanh"}


@dataclass
class TFLiteTensor:
    """One op output of a float TFLite model: its value (graph layout), the op, and who reads it."""

    name: str
    op: str
    value: np.ndarray
    consumers: list[str] = field(default_factory=list)  # first output names of the ops reading it


def tflite_tensor_values(model: bytes, graph, inputs: Sequence[np.ndarray]) -> dict[str, TFLiteTensor]:
    """Every float op output of a float TFLite ``model`` on one batch of PyTorch-layout ``inputs``.

    The default delegates are switched off: XNNPACK would replace the ops by ``DELEGATE`` nodes and keep
    no intermediate values. Only float kernels run here.
    """
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    interpreter = Interpreter(model_content=model, experimental_preserve_all_tensors=True,
                              experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    runner = interpreter.get_signature_runner("serving_default")
    runner(**{i.name: layout.to_layout(x, i.artifact_perm).astype(np.dtype(i.dtype)) for x, i in zip(inputs, graph.inputs)})
    tensors: dict[str, TFLiteTensor] = {}
    by_index: dict[int, TFLiteTensor] = {}
    for op in interpreter._get_ops_details():  # the public API exposes no op list
        outputs = [interpreter._get_tensor_details(i, 0) for i in op["outputs"]]
        first = outputs[0]["name"] if outputs else None
        for index in op["inputs"]:
            if index in by_index and first is not None:
                by_index[index].consumers.append(first)
        for index, detail in zip(op["outputs"], outputs):
            if detail["dtype"] == np.float32:
                tensor = TFLiteTensor(detail["name"], op["op_name"], np.array(interpreter.get_tensor(index)))
                tensors[tensor.name] = by_index[index] = tensor
    return tensors


def onnx_tensor_values(model: onnx.ModelProto, inputs: Sequence[np.ndarray]) -> list[tuple[onnx.NodeProto, np.ndarray]]:
    """(producing node, value) of every float node output, in graph order."""
    names = {f"v{k}": out for k, node in enumerate(model.graph.node) for out in node.output[:1] if out}
    values = probes.run_onnxruntime(probes.with_outputs(model, names), inputs)
    producer = {out: node for node in model.graph.node for out in node.output}
    result = []
    for name, src in names.items():
        value = values.get(name)  # absent: a 0-d tensor with no batch axis (see probes._gather)
        if value is not None and value.dtype == np.float32 and value.size:
            result.append((producer[src], value))
    return result


def match(value: np.ndarray, candidates: list[tuple[onnx.NodeProto, np.ndarray]]) -> onnx.NodeProto | None:
    """The first ONNX node (graph order) whose output equals ``value`` as is or channels-last; a 0-d (scalar) TFLite
    tensor has no batch axis to compare on and matches nothing."""
    if value.ndim == 0:
        return None
    for node, ref in candidates:
        if ref.size != value.size:
            continue
        perms = [layout.identity(ref.ndim)] + ([layout.channels_last(ref.ndim)] if ref.ndim >= 3 else [])
        for perm in perms:
            moved = np.transpose(ref, perm)
            if moved.shape != value.shape and moved.size == value.size and moved.ndim != value.ndim:
                moved = moved.reshape(value.shape)
            if moved.shape == value.shape and relative_error(moved, value) < MATCH_TOLERANCE:
                return node
    return None


def module_of(node: onnx.NodeProto, model: onnx.ModelProto, module_paths: set[str] | None = None) -> str | None:
    """The module path of ``node``: its innermost known scope, or, for a node outside every module (a
    top-level ``F.relu``), the module of its nearest producer."""
    paths = module_paths if module_paths is not None else probes.scope_paths(model)
    known = paths | probes.ancestors(paths)
    producer = {out: n for n in model.graph.node for out in n.output}
    for _ in range(MAX_HOPS):
        segments = [p for p in node.name.split("/") if p]
        for depth in range(len(segments) - 1, 0, -1):  # the innermost scope first
            scope = probes.scope_of("/".join(segments[:depth] + segments[-1:]), known)
            if scope is not None and scope[0] in paths:
                return scope[0] if scope[1] == 0 else f"{scope[0]}#{scope[1]}"
        if len(segments) > 1:
            return None  # scoped, but in no module we know
        source = next((producer[i] for i in node.input if i in producer), None)
        if source is None:
            return None
        node = source
    return None


def origins(tflite_model: bytes, graph, onnx_model: onnx.ModelProto, inputs: Sequence[np.ndarray],
            module_paths: set[str] | None = None) -> dict[str, tuple[str | None, str | None]]:
    """TFLite tensor name -> (module path, ONNX node name).

    A TFLite op that fused an activation (``CONV_2D`` + relu) is named after the node computing it, not the
    activation's; ops onnx2tf added (the explicit ``PAD`` before a padded conv or pool) after the op reading
    them, with no ONNX node.
    """
    batch = graph.inputs[0].torch_shape[0] or 1
    sample = [np.ascontiguousarray(x[:batch]) for x in inputs]
    tensors = tflite_tensor_values(tflite_model, graph, sample)
    candidates = onnx_tensor_values(onnx_model, sample)
    producer = {out: n for n in onnx_model.graph.node for out in n.output}
    found: dict[str, tuple[str | None, str | None]] = {}
    for tensor in tensors.values():
        node = match(tensor.value, candidates)
        if node is None:
            continue
        if tensor.op in FUSING_OPS and node.op_type in ACTIVATIONS and node.input[0] in producer:
            node = producer[node.input[0]]
        found[tensor.name] = (module_of(node, onnx_model, module_paths), node.name)
    for tensor in tensors.values():
        reader = next((found[c] for c in tensor.consumers if c in found), None)
        if tensor.name not in found and reader is not None:
            found[tensor.name] = (reader[0], None)
    return found
