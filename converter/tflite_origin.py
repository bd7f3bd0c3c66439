"""Where a TFLite tensor comes from: the ONNX node and PyTorch module that compute the same values.

onnx2tf names TensorFlow ops generically (``model/tf.nn.convolution_1/convolution``), and the TFLite
converter fuses them (conv + bias + relu become one ``CONV_2D`` named after all three), so names cannot be
mapped back. Values can: a float TFLite model is run once with every tensor preserved, the ONNX graph
once with every node output exported, and each TFLite tensor is matched to the ONNX tensor equal to it
(in either layout). The ONNX node's scope names the module (:func:`converter.probes.scope_of`); nodes
outside any module (a functional ``F.relu``) inherit the module of their nearest producer.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx

from converter import layout, probes

#: Relative error under which a TFLite tensor and an ONNX tensor count as the same tensor (both float32).
MATCH_TOLERANCE = 1e-3
#: How far up the producer chain an unscoped node looks for a module.
MAX_HOPS = 8


def tflite_tensor_values(model: bytes, graph, inputs: Sequence[np.ndarray]) -> dict[str, np.ndarray]:
    """Every op output of a float TFLite ``model`` on one batch of PyTorch-layout ``inputs`` (graph layout)."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=model, experimental_preserve_all_tensors=True)
    runner = interpreter.get_signature_runner("serving_default")
    runner(**{i.name: layout.to_layout(x, i.artifact_perm).astype(np.float32) for x, i in zip(inputs, graph.inputs)})
    values = {}
    for op in interpreter._get_ops_details():  # the public API exposes no op list
        for index in op["outputs"]:
            detail = interpreter._get_tensor_details(index, 0)
            if detail["dtype"] == np.float32:
                values[detail["name"]] = np.array(interpreter.get_tensor(index))
    return values


def onnx_tensor_values(model: onnx.ModelProto, inputs: Sequence[np.ndarray]) -> list[tuple[onnx.NodeProto, np.ndarray]]:
    """(producing node, value) of every float node output, in graph order."""
    names = {f"v{k}": out for k, node in enumerate(model.graph.node) for out in node.output[:1] if out}
    values = probes.run_onnxruntime(probes.with_outputs(model, names), inputs)
    producer = {out: node for node in model.graph.node for out in node.output}
    result = []
    for name, src in names.items():
        value = values[name]
        if value.dtype == np.float32 and value.size:
            result.append((producer[src], value))
    return result


def match(value: np.ndarray, candidates: list[tuple[onnx.NodeProto, np.ndarray]]) -> onnx.NodeProto | None:
    """The first ONNX node (graph order) whose output equals ``value`` as is or channels-last."""
    for node, ref in candidates:
        if ref.size != value.size:
            continue
        perms = [layout.identity(ref.ndim)] + ([layout.channels_last(ref.ndim)] if ref.ndim >= 3 else [])
        for perm in perms:
            moved = np.transpose(ref, perm)
            if moved.shape != value.shape and moved.size == value.size and moved.ndim != value.ndim:
                moved = moved.reshape(value.shape)
            if moved.shape == value.shape and probes.rel_err(moved, value) < MATCH_TOLERANCE:
                return node
    return None


def module_of(node: onnx.NodeProto, model: onnx.ModelProto, module_paths: set[str] | None = None) -> str | None:
    """The module path of ``node`` (or of its nearest producer when it sits outside every module)."""
    paths = module_paths if module_paths is not None else probes.scope_paths(model)
    producer = {out: n for n in model.graph.node for out in n.output}
    for _ in range(MAX_HOPS):
        scope = probes.scope_of(node.name, paths | probes.ancestors(paths))
        if scope is not None and scope[0] in paths:
            return scope[0] if scope[1] == 0 else f"{scope[0]}#{scope[1]}"
        source = next((producer[i] for i in node.input if i in producer), None)
        if source is None:
            return None
        node = source
    return None


def origins(tflite_model: bytes, graph, onnx_model: onnx.ModelProto, inputs: Sequence[np.ndarray],
            module_paths: set[str] | None = None) -> dict[str, tuple[str | None, str]]:
    """TFLite tensor name -> (module path, ONNX node name) for every tensor matched by value."""
    batch = graph.inputs[0].torch_shape[0] or 1
    sample = [np.ascontiguousarray(x[:batch]) for x in inputs]
    tensors = tflite_tensor_values(tflite_model, graph, sample)
    candidates = onnx_tensor_values(onnx_model, sample)
    found = {}
    for name, value in tensors.items():
        node = match(value, candidates)
        if node is not None:
            found[name] = (module_of(node, onnx_model, module_paths), node.name)
    return found
