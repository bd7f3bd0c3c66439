"""``infer_shapes``: record every intermediate tensor's inferred shape and dtype in ``graph.value_info``, and the
static sizes inference proves in the graph outputs' declared shapes."""

from __future__ import annotations

import onnx

from converter._convert.rewrites.graph import _copy, _weightless


def infer_shapes(model: onnx.ModelProto) -> onnx.ModelProto:
    """Record the statically inferred shape and dtype of every intermediate tensor in ``graph.value_info``.

    Without it: onnx2tf decides layouts (which axis is the channel, how to map Slice/Transpose/Reshape axes from
    NCHW to NHWC) from the ONNX tensor shapes, but the TorchScript exporter writes no ``value_info`` and onnx2tf
    only runs shape inference (through onnx-simplifier) on files. Every activation then has shape ``None``, and a
    plain ``x[:, 24:]`` on an NCHW tensor slices the wrong axis (``Dimensions must be equal, but are 4 and 8``).
    Graph outputs keep their declared shapes, but a declared name where inference proves a size is replaced by the
    size: the TorchScript exporter declares BERT's ``last_hidden_state`` under ``--dynamic-batch`` as ``[batch,
    'LayerNormalizationlast_hidden_state_dim_1', 64]``; onnx2tf compares the op's TF shape ``[None, 16, 64]`` with
    that, takes the difference for a transposed layout, and the pooler's ``hidden[:, 0]`` then gathered along the
    channels (``Dimensions must be equal, but are 16 and 64``): the model was mapped over the batch.
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
    proven = {o.name: o.type.tensor_type.shape.dim for o in inferred.graph.output}
    for output in model.graph.output:
        declared, found = output.type.tensor_type.shape.dim, proven.get(output.name, ())
        if len(declared) == len(found):
            for dim, size in zip(declared, found):
                if not dim.HasField("dim_value") and size.HasField("dim_value"):
                    dim.dim_value = size.dim_value
    return model
