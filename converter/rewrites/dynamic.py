"""Rewrites for graphs with a dynamic batch: ``wildcard_dynamic_reshape``, ``shuffle_as_gather`` and
``patchwise_conv_transpose``."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from converter.rewrites.graph import _copy, _remove_dead, _view


# ------------------------------------------------------------------------------------ wildcard_dynamic_reshape


def wildcard_dynamic_reshape(model: onnx.ModelProto) -> onnx.ModelProto:
    """Turn a Reshape target ``Concat(n, c1, c2, ...)`` with one runtime entry ``n`` and constants ``c_i`` (no 0 or
    -1 among them) into the constant ``[-1, c1, c2, ...]``.

    Without it: with a dynamic batch, ``x.view(x.size(0), g, c // g, h, w)`` (ShuffleNetV2's channel shuffle)
    keeps a runtime shape tensor; onnx2tf cannot map it to NHWC and the converted model fails at run time
    ("grouped convolution must have at least one group: 0 groups"). Why exact: for any valid Reshape, -1
    resolves to total / prod(other entries), which is the runtime entry's value; run after ``fold_constants``.
    """
    model = _copy(model)
    graph = model.graph
    known, producers, used, shapes = _view(model)
    changed = False
    for node in graph.node:
        concat = producers.get(node.input[1]) if node.op_type == "Reshape" else None
        if concat is None or concat.op_type != "Concat" or used.get(node.input[1], 0) != 1:
            continue
        parts = [known.get(name) for name in concat.input]
        runtime = [i for i, part in enumerate(parts) if part is None]
        constants = [part for part in parts if part is not None]
        one_runtime_scalar = len(runtime) == 1 and shapes.get(concat.input[runtime[0]]) == (1,)
        if not one_runtime_scalar or any(np.any(c <= 0) for c in constants):
            continue
        target = [np.full(1, -1, np.int64) if part is None else part.astype(np.int64).ravel() for part in parts]
        name = f"{node.input[1]}_wildcard"
        graph.initializer.append(numpy_helper.from_array(np.concatenate(target), name))
        node.input[1] = name
        changed = True
    if changed:
        _remove_dead(graph)
    return model


# -------------------------------------------------------------------------------------- shuffle_as_gather


def _single_axis_permutation(moved: np.ndarray) -> tuple[int, np.ndarray] | None:
    """(axis, indices) when ``moved`` (a rearranged ``arange``) equals ``take(arange, indices, axis)``, else None."""
    coords = np.unravel_index(moved, moved.shape)
    grid = np.indices(moved.shape)
    changed = [k for k in range(moved.ndim) if not np.array_equal(coords[k], grid[k])]
    if len(changed) != 1:
        return None
    axis = changed[0]
    indices = np.moveaxis(coords[axis], axis, 0).reshape(moved.shape[axis], -1)
    if not np.all(indices == indices[:, :1]):
        return None
    return axis, indices[:, 0].astype(np.int64)


def shuffle_as_gather(model: onnx.ModelProto) -> onnx.ModelProto:
    """Replace Reshape → Transpose → Reshape chains that only permute one axis (a channel shuffle) by a Gather.

    Without it: with a dynamic batch, onnx2tf loses track of the layout through the rank-5 Reshape/Transpose of
    ShuffleNetV2's channel shuffle and concatenates an NCHW tensor with an NHWC one ("Dimension 1 in both shapes
    must be equal, but are 12 and 24"). Why exact: the chain is evaluated on an index tensor; it is replaced
    only when it keeps the batch axis, maps the input shape to itself and moves elements along a single axis,
    in which case ``Gather(axis, indices)`` computes the same thing for any input.
    """
    model = _copy(model)
    graph = model.graph
    known, producers, used, shapes = _view(model)
    changed = False
    for index, last in enumerate(graph.node):
        transpose = producers.get(last.input[0]) if last.op_type == "Reshape" else None
        first = producers.get(transpose.input[0]) if transpose is not None and transpose.op_type == "Transpose" else None
        if first is None or first.op_type != "Reshape" or used.get(first.output[0]) != 1:
            continue
        x_shape = shapes.get(first.input[0])
        targets = [known.get(first.input[1]), known.get(last.input[1])]
        perm = next((list(a.ints) for a in transpose.attribute if a.name == "perm"), None)
        if x_shape is None or None in x_shape[1:] or any(t is None for t in targets) or not perm or perm[0] != 0:
            continue
        sample = (1, *x_shape[1:])
        if any(t[0] not in (-1, x_shape[0]) or np.prod(t[1:]) != np.prod(sample) for t in targets):
            continue
        moved = np.arange(np.prod(sample)).reshape([1, *targets[0][1:]]).transpose(perm).reshape([1, *targets[1][1:]])
        found = _single_axis_permutation(moved) if moved.shape == sample else None
        if found is None:
            continue
        axis, order = found
        name = f"{last.output[0]}_gather_indices"
        graph.initializer.append(numpy_helper.from_array(order, name))
        graph.node[index].CopyFrom(helper.make_node(
            "Gather", [first.input[0], name], list(last.output), name=f"{last.name}_gather", axis=axis))
        changed = True
    if changed:
        _remove_dead(graph)
    return model


# ------------------------------------------------------------------------------ patchwise_conv_transpose


def patchwise_conv_transpose(model: onnx.ModelProto) -> onnx.ModelProto:
    """Rewrite a 2-D ConvTranspose whose kernel equals its stride (no padding, dilation or groups: U-Net
    up-sampling) as a 1x1 Conv to ``C_out·s·s`` channels followed by ``DepthToSpace(s, DCR)``.

    Without it: with a dynamic batch, onnx2tf builds ``tf.nn.conv2d_transpose`` with the ONNX output shape,
    symbolic batch included ("Expected int32 passed to parameter 'input_sizes' ... got ['batch', 32, 32, 16]").
    Why exact: with kernel == stride the output blocks do not overlap, so output[o, h·s+i, w·s+j] =
    Σ_c x[c, h, w]·W[c, o, i, j] + b[o], which is a 1x1 convolution with weight W'[(i·s+j)·C_out + o, c] then
    DCR depth-to-space (the layout TensorFlow's depth_to_space uses natively).
    """
    model = _copy(model)
    graph = model.graph
    weights = {t.name: t for t in graph.initializer}
    rebuilt = []
    changed = False
    for node in graph.node:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        w = weights.get(node.input[1]) if node.op_type == "ConvTranspose" and len(node.input) > 1 else None
        kernel = list(attrs.get("kernel_shape", [] if w is None else w.dims[2:]))
        stride = list(attrs.get("strides", [1] * len(kernel)))
        plain = (attrs.get("group", 1) == 1 and not any(attrs.get("pads", [])) and not any(attrs.get("output_padding", []))
                 and set(attrs.get("dilations", [1])) == {1} and "output_shape" not in attrs
                 and attrs.get("auto_pad", b"NOTSET") in (b"NOTSET", b"VALID"))
        if w is None or len(kernel) != 2 or kernel != stride or kernel[0] != kernel[1] or not plain:
            rebuilt.append(node)
            continue
        s, array = kernel[0], numpy_helper.to_array(w)  # (C_in, C_out, s, s)
        c_in, c_out = array.shape[:2]
        flat = array.transpose(2, 3, 1, 0).reshape(s * s * c_out, c_in, 1, 1)  # [(i·s+j)·C_out + o, c]
        inputs = [node.input[0], f"{node.name}_patch_weight"]
        graph.initializer.append(numpy_helper.from_array(flat.astype(array.dtype), inputs[1]))
        if len(node.input) > 2 and node.input[2]:
            bias = numpy_helper.to_array(weights[node.input[2]])
            graph.initializer.append(numpy_helper.from_array(np.tile(bias, s * s), f"{node.name}_patch_bias"))
            inputs.append(f"{node.name}_patch_bias")
        depth = f"{node.output[0]}_patch_depth"
        rebuilt.append(helper.make_node("Conv", inputs, [depth], name=f"{node.name}_patch", kernel_shape=[1, 1]))
        rebuilt.append(helper.make_node("DepthToSpace", [depth], list(node.output), name=f"{node.name}_d2s",
                                        blocksize=s, mode="DCR"))
        changed = True
    if changed:
        del graph.node[:]
        graph.node.extend(rebuilt)
        _remove_dead(graph)
    return model
