"""Rewrites for graphs with a dynamic batch: ``wildcard_dynamic_reshape``, ``shuffle_as_gather`` and
``patchwise_conv_transpose``."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from converter._convert.rewrites.graph import _copy, _remove_dead, _view


# ------------------------------------------------------------------------------------ wildcard_dynamic_reshape


def wildcard_dynamic_reshape(model: onnx.ModelProto) -> onnx.ModelProto:
    """Turn a runtime Reshape target whose entries are all known but one — constants, static dimensions read off
    ``Shape`` (through Slice / Gather / Unsqueeze / Concat), and a single unknown entry (the dynamic batch, or a
    value computed from it) — into a constant with ``-1`` at the unknown entry.

    Without it: with a dynamic batch, ``x.view(x.size(0), g, c // g, h, w)`` (ShuffleNetV2's channel shuffle) and
    ``q.view(T, B, heads, d)`` (``nn.MultiheadAttention``) keep runtime shape tensors; onnx2tf evaluates their
    ``Shape`` on its transposed tensors and builds the wrong target ("grouped convolution must have at least one
    group: 0 groups"; a Transpose with perm ``[-1, -1, 4, 0, -1]``). Why exact: for any valid Reshape, -1 resolves
    to total / prod(other entries), which is the one unknown entry's value; run after ``fold_constants``.

    A target that cannot be read that way (a ``-1`` already in it beside a run-time entry: transformers'
    ``q.view(*input_shape, -1, head_dim)`` at a symbolic sequence length) is taken from the Reshape's *output* shape
    when shape inference proves all of it but one entry: [1, seq, 2, 16] becomes [1, -1, 2, 16]. onnx2tf would
    otherwise compute the target from ``Shape`` of its own transposed tensors (BERT: a reshape asking for 16 where
    the length is 13).
    """
    model = _copy(model)
    graph = model.graph
    known, producers, used, shapes = _view(model)
    partial = _partial_values(graph, known, shapes)
    changed = False
    for node in graph.node:
        if node.op_type != "Reshape" or node.input[1] in known:
            continue
        target = partial.get(node.input[1])
        if target is None or sum(v is None for v in target) != 1 or any(v is not None and v <= 0 for v in target):
            target = shapes.get(node.output[0])  # the proven output shape (a 0 would mean "copy" in a target)
            if target is None or sum(v is None for v in target) > 1 or 0 in target:
                continue
        name = f"{node.input[1]}_wildcard"
        graph.initializer.append(numpy_helper.from_array(
            np.array([-1 if v is None else v for v in target], np.int64), name))
        node.input[1] = name
        changed = True
    if changed:
        _remove_dead(graph)
    return model


def _partial_values(graph: onnx.GraphProto, known: dict[str, np.ndarray],
                    shapes: dict[str, tuple[int | None, ...]]) -> dict[str, tuple[int | None, ...]]:
    """1-D int64 shape tensors whose length is known and some entries are (None: unknown at conversion time)."""
    values: dict[str, tuple[int | None, ...]] = {}

    def value(name: str) -> tuple[int | None, ...] | None:
        if name in known and known[name].ndim <= 1 and known[name].dtype.kind == "i":
            return tuple(int(v) for v in known[name].ravel())
        if name in values:
            return values[name]
        return (None,) if shapes.get(name) in ((1,), ()) else None  # one runtime entry (e.g. the batch size)

    for node in graph.node:
        attrs = {a.name: a for a in node.attribute}
        if node.op_type == "Shape" and node.input[0] in shapes:
            dims = shapes[node.input[0]]
            start = attrs["start"].i if "start" in attrs else 0
            stop = attrs["end"].i if "end" in attrs else len(dims)
            values[node.output[0]] = tuple(dims[start:stop])
        elif node.op_type == "Slice" and value(node.input[0]) is not None and \
                all(n in known for n in node.input[1:] if n):
            starts, ends = known[node.input[1]].ravel(), known[node.input[2]].ravel()
            steps = known[node.input[4]].ravel() if len(node.input) > 4 and node.input[4] else np.ones(1, np.int64)
            if len(starts) == 1 and steps[0] != 0:
                values[node.output[0]] = value(node.input[0])[slice(int(starts[0]), int(ends[0]), int(steps[0]))]
        elif node.op_type == "Gather" and value(node.input[0]) is not None and node.input[1] in known:
            index = known[node.input[1]]
            picked = [value(node.input[0])[int(i)] for i in index.ravel()]
            values[node.output[0]] = tuple(picked)  # a 0-d index gives a scalar: same one entry
        elif node.op_type in ("Unsqueeze", "Squeeze", "Identity", "Cast") and value(node.input[0]) is not None:
            values[node.output[0]] = value(node.input[0])
        elif node.op_type == "Concat" and all(value(n) is not None for n in node.input):
            values[node.output[0]] = tuple(v for n in node.input for v in value(n))
    return values


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
