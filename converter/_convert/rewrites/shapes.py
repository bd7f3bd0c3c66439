"""``infer_shapes``: record every intermediate tensor's inferred shape and dtype in ``graph.value_info``."""

from __future__ import annotations

import onnx

from converter._convert.rewrites.graph import _copy, _weightless


def infer_shapes(model: onnx.ModelProto) -> onnx.ModelProto:
    """Record the statically inferred shape and dtype of every intermediate tensor in ``graph.value_info``.

    Without it: onnx2tf decides layouts (which axis is the channel, how to map Slice/Transpose/Reshape axes from
    NCHW to NHWC) from the ONNX tensor shapes, but the TorchScript exporter writes no ``value_info`` and onnx2tf
    only runs shape inference (through onnx-simplifier) on files. Every activation then has shape ``None``, and a
    plain ``x[:, 24:]`` on an NCHW tensor slices the wrong axis (``Dimensions must be equal, but are 4 and 8``).
    Why general: it adds type information only; the computation is untouched.
    """
    model = _copy(model)
    del model.graph.value_info[:]
    light = _weightless(model)
    try:
        inferred = onnx.shape_inference.infer_shapes(light, check_type=True, strict_mode=True, data_prop=True)
    except onnx.shape_inference.InferenceError:  # e.g. a custom-domain op: record what can be inferred
        inferred = onnx.shape_inference.infer_shapes(light, data_prop=True)
    model.graph.value_info.extend(inferred.graph.value_info)
    return model
