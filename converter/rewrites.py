"""Graph rewrites that let onnx2tf 1.28.8 convert real architectures, and an offline guard for onnx2tf.

Every mechanism is a small pure function ``ModelProto -> ModelProto`` that keeps the graph valid and numerically
identical in onnxruntime; each docstring says what fails in onnx2tf without it and why the fix is general (it keys
on graph structure, never on a model's name). ``prepare_for_onnx2tf`` runs them in a fixed order, records which
ones changed something, and derives the onnx2tf keyword arguments the rewritten graph needs.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from converter.rewrite_erf import erf_as_polynomial

Rewrite = Callable[[onnx.ModelProto], onnx.ModelProto]

# What TensorFlow accepts as an op / name-scope name (tensorflow/python/framework/ops.py, _VALID_OP_NAME_REGEX).
_VALID_NAME = re.compile(r"^[A-Za-z0-9.][A-Za-z0-9_.\\/>-]*$")
_INVALID_CHAR = re.compile(r"[^A-Za-z0-9_.\\/>-]")
_MAX_FOLD_PASSES = 32
_SMALL = 4096  # initializers up to this many elements are kept (with values) for shape inference
_NONDETERMINISTIC = frozenset(
    {"RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike", "Multinomial", "Bernoulli"}
)


@dataclass(frozen=True)
class Prepared:
    """A graph ready for onnx2tf, the names of the rewrites that changed it, and the onnx2tf options it needs."""

    model: onnx.ModelProto
    applied: tuple[str, ...]
    onnx2tf_kwargs: dict


# --------------------------------------------------------------------------------------------- graph helpers


def _copy(model: onnx.ModelProto) -> onnx.ModelProto:
    out = onnx.ModelProto()
    out.CopyFrom(model)
    return out


def _opset(model: onnx.ModelProto) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 17)


def _weightless(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` with every initializer above ``_SMALL`` elements turned into a typed graph input: shape inference
    then serialises kilobytes instead of the weights, and still sees every small (shape-like) constant's value."""
    light = onnx.ModelProto()
    light.CopyFrom(model)
    graph = light.graph
    big = [t for t in graph.initializer if int(np.prod(t.dims)) > _SMALL]
    small = [t for t in graph.initializer if int(np.prod(t.dims)) <= _SMALL]
    del graph.initializer[:]
    graph.initializer.extend(small)
    declared = {i.name for i in graph.input}
    graph.input.extend(helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)) for t in big
                       if t.name not in declared)
    return light


def _shapes(model: onnx.ModelProto) -> dict[str, tuple[int | None, ...]]:
    """Tensor name -> inferred shape, ``None`` for dimensions that are symbolic (a dynamic batch) or unknown."""
    graph = onnx.shape_inference.infer_shapes(_weightless(model), data_prop=True).graph
    shapes = {}
    for info in [*graph.input, *graph.value_info, *graph.output]:
        tensor_type = info.type.tensor_type
        if tensor_type.HasField("shape"):
            shapes[info.name] = tuple(d.dim_value if d.HasField("dim_value") else None for d in tensor_type.shape.dim)
    return shapes


def _view(model: onnx.ModelProto) -> tuple[dict[str, np.ndarray], dict[str, onnx.NodeProto], dict[str, int],
                                          dict[str, tuple[int | None, ...]]]:
    """What the pattern rewrites look up: initializer values, each tensor's producer, each tensor's consumer
    count, and the inferred shapes."""
    graph = model.graph
    known = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    producers = {o: n for n in graph.node for o in n.output}
    return known, producers, _consumers(graph), _shapes(model)


def _consumers(graph: onnx.GraphProto) -> dict[str, int]:
    counts: dict[str, int] = {}
    for node in graph.node:
        for name in node.input:
            counts[name] = counts.get(name, 0) + 1
    for out in graph.output:
        counts[out.name] = counts.get(out.name, 0) + 1
    return counts


def _remove_dead(graph: onnx.GraphProto) -> None:
    """Drop nodes none of whose outputs is used, and initializers nothing reads, until nothing changes."""
    while True:
        used = _consumers(graph)
        live = [n for n in graph.node if any(used.get(o, 0) for o in n.output if o)]
        if len(live) == len(graph.node):
            break
        del graph.node[:]
        graph.node.extend(live)
    used = _consumers(graph)
    graph_inputs = {i.name for i in graph.input}
    keep = [t for t in graph.initializer if used.get(t.name, 0) or t.name in graph_inputs]
    del graph.initializer[:]
    graph.initializer.extend(keep)


# ------------------------------------------------------------------------------------------ fold_constants


def _evaluate(node: onnx.NodeProto, inputs: list[np.ndarray | None], opset: int) -> list[np.ndarray]:
    from onnx.reference import ReferenceEvaluator

    feeds = {name: value for name, value in zip(node.input, inputs) if name}
    return list(ReferenceEvaluator(node, opsets={"": opset}).run(None, feeds))


def _fold_node(
    node: onnx.NodeProto,
    known: dict[str, np.ndarray],
    dims: dict[str, tuple[int | None, ...]],
    shapes: dict[str, tuple[int | None, ...]],
    opset: int,
) -> list[np.ndarray] | None:
    """The node's output values if they follow from constants and static dimensions alone, else None.

    ``dims`` collects the (partly known) values of Shape outputs, so that ``Shape → Gather(1)`` folds even when
    dimension 0 is a dynamic batch.
    """
    if node.domain not in ("", "ai.onnx") or node.op_type in _NONDETERMINISTIC:
        return None
    if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in node.attribute):
        return None
    if node.op_type == "Shape" and node.input[0] in shapes:
        attrs = {a.name: a.i for a in node.attribute}
        shape = shapes[node.input[0]]
        dims[node.output[0]] = shape[attrs.get("start", 0) : attrs.get("end", len(shape))]
        return None if None in dims[node.output[0]] else [np.array(dims[node.output[0]], np.int64)]
    if node.op_type == "Size" and None not in shapes.get(node.input[0], (None,)):
        return [np.array(np.prod(shapes[node.input[0]]), np.int64)]
    if node.op_type == "Gather" and node.input[0] in dims and node.input[1] in known:
        picked = np.asarray(np.take(np.array(dims[node.input[0]], dtype=object), known[node.input[1]]), dtype=object)
        return None if any(v is None for v in picked.ravel()) else [picked.astype(np.int64)]
    if not all(name in known for name in node.input if name):
        return None
    inputs = [known[name] if name else None for name in node.input]
    try:
        values = _evaluate(node, inputs, opset)
    except Exception:  # an op the reference evaluator lacks (or rejects) simply stays in the graph
        return None
    # Never let folding inflate the graph (Expand/Tile/ConstantOfShape of big shapes stay as ops).
    budget = max(1 << 16, sum(int(np.size(v)) for v in inputs if v is not None))
    if sum(int(np.size(v)) for v in values) > budget:
        return None
    return [np.asarray(v) for v in values]


def fold_constants(model: onnx.ModelProto) -> onnx.ModelProto:
    """Replace ``Constant`` nodes, and every node whose outputs follow from constants and static dimensions, by
    initializers: what onnx-simplifier does before onnx2tf in its file-based flow (here it is neither installed
    nor reachable, since onnx2tf only runs it on files).

    Without it: (1) onnx2tf treats an initializer as a compile-time array and remaps the axes in it from NCHW to
    NHWC, but a ``Constant`` node's output as a runtime tensor it cannot remap, so ``y[:, 24:]`` (a Slice whose
    ``axes`` comes from a Constant node) slices H instead of C ("Dimensions must be equal"). (2) The TorchScript
    exporter leaves shape arithmetic on activations: ``x.chunk`` in ShuffleNetV2 becomes
    Shape→Gather→Add→Div→Mul→Slice and fails with "Input 'y' of 'AddV2' Op has type int64 that does not match
    type int32"; LSTM zero states become Shape→Gather→Concat→Expand and fail with "Tensors in list passed to
    'values' of 'ConcatV2' Op have types [int64, int32, int64]".
    Why general: a Shape of a tensor whose dimensions are static is a constant (with a dynamic batch, only the
    static dimensions fold); everything downstream of constants alone is evaluated with the ONNX reference
    evaluator, node by node, never growing the graph; graph outputs stay outputs of ops. Shape inference is
    repeated after each pass, since a folded Reshape target makes the next Shape static (ShuffleNetV2 with a
    dynamic batch needs one pass per stage).
    """
    model = _copy(model)
    for _ in range(_MAX_FOLD_PASSES):
        if not _fold_pass(model):
            break
    return model


def _fold_pass(model: onnx.ModelProto) -> bool:
    """One folding pass over ``model`` in place; False when nothing folded."""
    graph = model.graph
    shapes = _shapes(model)
    opset = _opset(model)
    known = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    graph_outputs = {o.name for o in graph.output}
    kept, folded, dims = [], {}, {}
    for node in graph.node:
        values = _fold_node(node, known, dims, shapes, opset)
        if values is None:
            kept.append(node)
            continue
        known.update(zip(node.output, values))
        if graph_outputs.intersection(node.output):
            kept.append(node)  # a graph output must stay the output of an op (a Keras layer)
        else:
            folded.update(zip(node.output, values))
    if not folded:
        return False
    del graph.node[:]
    graph.node.extend(kept)
    used = _consumers(graph)
    graph.initializer.extend(numpy_helper.from_array(v, name) for name, v in folded.items() if used.get(name, 0))
    _remove_dead(graph)
    folded_names = set(folded)
    kept_info = [vi for vi in graph.value_info if vi.name not in folded_names]
    del graph.value_info[:]
    graph.value_info.extend(kept_info)
    return True


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


# ------------------------------------------------------------------------------------- materialize_lstm_states


def materialize_lstm_states(model: onnx.ModelProto) -> onnx.ModelProto:
    """Give every LSTM whose ``initial_h`` / ``initial_c`` input is absent an explicit all-zero initializer.

    Without it: onnx2tf 1.28.8 passes ``initial_state=[]`` to its Keras RNN when an LSTM has no initial state and
    fails with "An `initial_state` was passed that is not compatible with `cell.state_size`. Received
    `state_spec`=ListWrapper([])" (a bidirectional one fails indexing ``None``). Removing torch's zero states,
    the obvious clean-up, therefore *breaks* conversion; zero states must be present and constant (fold_constants
    turns the exporter's Shape→Expand zeros into initializers). Why general: ONNX defines a missing initial state
    as zeros, so adding explicit zeros of shape [num_directions, batch, hidden] is an identity for any LSTM.
    """
    model = _copy(model)
    graph = model.graph
    shapes = _shapes(model)
    names = {t.name for t in graph.initializer} | {o for n in graph.node for o in n.output}
    for index, node in enumerate(graph.node):
        if node.op_type != "LSTM" or node.input[0] not in shapes:
            continue
        inputs = list(node.input) + [""] * (7 - len(node.input))
        if inputs[5] and inputs[6]:
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        directions = 2 if attrs.get("direction", b"forward") == b"bidirectional" else 1
        batch = shapes[node.input[0]][0 if attrs.get("layout", 0) == 1 else 1]
        if batch is None:
            continue  # a dynamic batch: zeros would need ops; the exporter's own zero states are left alone
        zeros = np.zeros((batch, directions, attrs["hidden_size"]), np.float32)
        if attrs.get("layout", 0) == 0:
            zeros = zeros.transpose(1, 0, 2)
        for slot, label in ((5, "initial_h"), (6, "initial_c")):
            if not inputs[slot]:
                name = f"{node.name or 'lstm'}_{index}_{label}"
                while name in names:
                    name += "_"
                names.add(name)
                graph.initializer.append(numpy_helper.from_array(zeros, name))
                inputs[slot] = name
        del node.input[:]
        node.input.extend(inputs)
    return model


# -------------------------------------------------------------------------------------- anchor_constant_outputs


def _input_dependent(graph: onnx.GraphProto) -> set[str]:
    """Names of the tensors whose value depends on at least one graph input."""
    initializers = {t.name for t in graph.initializer}
    live = {i.name for i in graph.input if i.name not in initializers}
    for node in graph.node:
        if live.intersection(node.input):
            live.update(node.output)
    return live


def _rename_internal(graph: onnx.GraphProto, old: str, new: str) -> None:
    """Rename tensor ``old`` to ``new`` everywhere except in the graph's output list."""
    for item in [*graph.initializer, *graph.value_info]:
        if item.name == old:
            item.name = new
    for node in graph.node:
        for names in (node.input, node.output):
            renamed = [new if n == old else n for n in names]
            del names[:]
            names.extend(renamed)


def anchor_constant_outputs(model: onnx.ModelProto) -> onnx.ModelProto:
    """Make every graph output that does not depend on the inputs (a buffer, a folded shape) the output of an op
    that does: ``Where(IsNaN(ReduceMin(x)), c, c)``, which equals ``c`` exactly for every ``x``, NaN included.

    Without it: onnx2tf evaluates such an output to a constant, which cannot be an output of a Keras functional
    model; it silently drops it (the Keras model has fewer outputs than the ONNX graph) or fails with "Output
    tensors of a Functional model must be the output of a TensorFlow Layer". Why general: it keys only on data
    flow (no path from any input), and both branches of the Where are the constant itself.
    """
    model = _copy(model)
    graph = model.graph
    initializers = {t.name for t in graph.initializer}
    floats = [i for i in graph.input if i.name not in initializers
              and i.type.tensor_type.elem_type in (TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.DOUBLE)]
    live = _input_dependent(graph)
    constant_outputs = [o for o in graph.output if o.name not in live]
    if not floats or not constant_outputs:
        return model
    source = floats[0].name
    nodes = [
        helper.make_node("ReduceMin", [source], [f"{source}_anchor_min"], name=f"{source}_anchor/ReduceMin",
                         keepdims=0),
        helper.make_node("IsNaN", [f"{source}_anchor_min"], [f"{source}_anchor_isnan"], name=f"{source}_anchor/IsNaN"),
    ]
    for output in constant_outputs:
        hidden = f"{output.name}_constant"
        _rename_internal(graph, output.name, hidden)
        nodes.append(helper.make_node("Where", [f"{source}_anchor_isnan", hidden, hidden], [output.name],
                                      name=f"{output.name}_anchor/Where"))
    graph.node.extend(nodes)
    return model


# ------------------------------------------------------------------------------------------- sanitize_names


def _valid(name: str) -> str:
    """``name`` mapped into TensorFlow's op-name alphabet: bad characters become '_', a bad first one is dropped."""
    cleaned = _INVALID_CHAR.sub("_", name).lstrip("_/\\>-")
    return cleaned or "t"


def _renamer(reserved: set[str]) -> Callable[[str], str]:
    """A memoised ``old -> new`` map into valid, unique names; names in ``reserved`` map to themselves."""
    taken = set(reserved)
    mapping: dict[str, str] = {}

    def rename(name: str) -> str:
        if not name or name in reserved:
            return name
        if name not in mapping:
            base = name if _VALID_NAME.match(name) else _valid(name)
            candidate, k = base, 1
            while candidate in taken:
                candidate, k = f"{base}_{k}", k + 1
            taken.add(candidate)
            mapping[name] = candidate
        return mapping[name]

    return rename


def sanitize_names(model: onnx.ModelProto) -> onnx.ModelProto:
    """Rename every node and every internal tensor to a unique name TensorFlow accepts as an op name.

    Without it: onnx2tf names TF ops and Keras layers after ONNX node/tensor names; TorchScript export produces
    names such as ``/stage2/stage2.1/Add`` or ``onnx::Conv_1157`` (and empty node names), which TensorFlow rejects
    with "A root scope name has to match the following pattern: ^[A-Za-z0-9.][A-Za-z0-9_.\\\\/>-]*$" when the
    model is traced or saved. Why general: names carry no semantics in ONNX; graph inputs and outputs keep their
    names because they are the user's interface.
    """
    model = _copy(model)
    graph = model.graph
    tensor = _renamer({i.name for i in graph.input} | {o.name for o in graph.output})
    node_name = _renamer(set())
    for index, node in enumerate(graph.node):
        node.name = node_name(node.name or f"{node.op_type}_{index}")
        for field in (node.input, node.output):
            renamed = [tensor(n) for n in field]
            del field[:]
            field.extend(renamed)
    for item in [*graph.initializer, *graph.value_info]:
        item.name = tensor(item.name)
    return model


# --------------------------------------------------------------------------------------------- infer_shapes


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


# ------------------------------------------------------------------------------------------------- driver

REWRITES: tuple[tuple[str, Rewrite], ...] = (
    ("fold_constants", fold_constants),
    ("erf_as_polynomial", erf_as_polynomial),
    ("wildcard_dynamic_reshape", wildcard_dynamic_reshape),
    ("shuffle_as_gather", shuffle_as_gather),
    ("patchwise_conv_transpose", patchwise_conv_transpose),
    ("materialize_lstm_states", materialize_lstm_states),
    ("anchor_constant_outputs", anchor_constant_outputs),
    ("sanitize_names", sanitize_names),
    ("infer_shapes", infer_shapes),
)


def onnx2tf_kwargs_for(model: onnx.ModelProto) -> dict:
    """The onnx2tf keyword arguments a prepared graph needs.

    ``not_use_onnxsim``: the rewrites above already do what onnx-simplifier would, and onnx2tf can only run
    onnxsim on a file (with an in-memory graph it spawns a doomed ``onnxsim '' ''`` subprocess). No RNN flag is
    needed: with constant zero states, LSTM/GRU convert without ``enable_rnn_unroll`` (measured, see README).
    """
    del model  # every graph gets the same options today; the signature leaves room for graph-driven ones
    return {"not_use_onnxsim": True}


def _fingerprint(model: onnx.ModelProto) -> bytes:
    """Everything a rewrite may change, without the weights' bytes (rewrites never edit an initializer's values
    in place: new values get new names)."""
    graph = model.graph
    parts = [m.SerializeToString(deterministic=True) for m in [*graph.node, *graph.value_info, *graph.input,
                                                                  *graph.output]]
    parts += [f"{t.name}:{t.data_type}:{list(t.dims)}".encode() for t in graph.initializer]
    return b"\x00".join(parts)


def prepare_for_onnx2tf(model: onnx.ModelProto) -> Prepared:
    """Run every rewrite in ``REWRITES`` order; the result passes ``onnx.checker`` and computes the same function."""
    applied = []
    for name, rewrite in REWRITES:
        before = _fingerprint(model)
        model = rewrite(model)
        if _fingerprint(model) != before:
            applied.append(name)
    onnx.checker.check_model(model)
    return Prepared(model=model, applied=tuple(applied), onnx2tf_kwargs=onnx2tf_kwargs_for(model))


# ------------------------------------------------------------------------------------------------ offline


class NetworkBlockedError(RuntimeError):
    """Raised when code running under ``patch_onnx2tf_offline`` tries to open a network connection."""


def _calibration_stand_in() -> np.ndarray:
    """What onnx2tf's download returns (20 MS-COCO crops, 20x128x128x3 float32 in [0, 1]), as smooth seeded fields."""
    rng = np.random.default_rng(0)
    yy, xx = np.meshgrid(np.linspace(0, 1, 128), np.linspace(0, 1, 128), indexing="ij")
    images = np.zeros((20, 128, 128, 3), np.float64)
    for _ in range(6):
        fy, fx = rng.uniform(0.5, 4.0, size=(2, 20, 1, 1, 3))
        phase = rng.uniform(0, 2 * np.pi, size=(20, 1, 1, 3))
        images += np.cos(2 * np.pi * (fy * yy[None, :, :, None] + fx * xx[None, :, :, None]) + phase)
    lo = images.min(axis=(1, 2, 3), keepdims=True)
    hi = images.max(axis=(1, 2, 3), keepdims=True)
    return ((images - lo) / (hi - lo)).astype(np.float32)


@contextlib.contextmanager
def patch_onnx2tf_offline(calibration: np.ndarray | None = None) -> Iterator[None]:
    """Context manager: while active, onnx2tf cannot reach the network.

    onnx2tf downloads 20 MS-COCO crops whenever every model input looks like an NHWC RGB image (to drive its
    per-op accuracy checks and int8 calibration). ``download_test_image_data`` is imported by name into
    ``onnx2tf.onnx2tf``, so it is replaced in both modules by ``calibration`` (NHWC float32 in [0, 1]) or a seeded
    stand-in of the same shape, dtype and range. Any other connection attempt raises ``NetworkBlockedError`` at
    once instead of waiting for a timeout. The socket patch is process-wide while the context is active.
    """
    import socket
    from unittest import mock

    import onnx2tf.onnx2tf
    import onnx2tf.utils.common_functions

    data = _calibration_stand_in() if calibration is None else np.asarray(calibration, np.float32)
    if data.ndim != 4 or data.shape[-1] != 3:
        raise ValueError(f"calibration must be NHWC RGB images (N, H, W, 3), got shape {data.shape}")

    def blocked(*args: object, **kwargs: object) -> None:
        raise NetworkBlockedError(f"network access is disabled during conversion (attempted: {args[:2]!r})")

    with contextlib.ExitStack() as stack:
        for module in (onnx2tf.onnx2tf, onnx2tf.utils.common_functions):
            stack.enter_context(mock.patch.object(module, "download_test_image_data", lambda: data.copy()))
        for name in ("getaddrinfo", "create_connection"):
            stack.enter_context(mock.patch.object(socket, name, blocked))
        stack.enter_context(mock.patch.object(socket.socket, "connect", blocked))
        yield
