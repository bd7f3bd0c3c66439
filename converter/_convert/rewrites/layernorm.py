"""``layer_norm_as_foldable``: a token LayerNormalization becomes ``((x - mean) * 1/sqrt(var + eps)) * scale + bias``.

onnx2tf builds ``LayerNormalization`` as a Keras ``LayerNormalization``, which TF computes in batch-norm form:
``x * (rsqrt(var + eps) * scale) + (bias - mean * rsqrt(var + eps) * scale)``. The per-row factor is multiplied by
the per-channel scale first, so every product after it is full-size, and the scale and bias are mixed into them:
five full-size ops a norm after the variance, and TFLite can fold none of them into the next layer. Written as
normalise-then-affine, the scale and bias are the last two ops, and where the norm feeds only projections (a
transformer block's pre-norms feed its QKV projection and its MLP) they are folded into the projections' weights and
biases: one full-size op a norm is left after the variance (the normalising ``MUL``). TFLite's converter would fold a
rank-1 scale and bias into the ``FULLY_CONNECTED`` itself, but not the full-rank ``[1, 1, C]`` constants onnx2tf's
fast route needs (``full_rank_broadcast_constants``), hence the fold here. ViT-Tiny's TFLite file: 522 -> 474 ops
(three full-size ops fewer in each of 24 norms).

The same arithmetic as onnxruntime's kernel up to float32 rounding (mean and variance over the last axis, then
``(x - mean) / sqrt(var + eps)``, here as a product with the reciprocal; folded products rounded once, not twice):
within 2e-6 of the output's peak in the tests. Matched only on input of rank 3 ([batch, tokens, channels], the
layout onnx2tf leaves as it is) normalised over its last axis, with a constant float32 scale and bias of that many
channels (ONNX types the input as the scale: float32 too), where the node's mean and inverse-deviation outputs are
unused.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from converter._convert.rewrites.graph import _consumers, _copy, _opset, _readers, _remove_dead, _shapes


def layer_norm_as_foldable(model: onnx.ModelProto) -> onnx.ModelProto:
    """Every matched ``LayerNormalization`` written out; graphs without one come back unchanged (the same object)."""
    if not any(n.op_type == "LayerNormalization" and n.domain in ("", "ai.onnx") for n in model.graph.node):
        return model
    # by name and position: they hold for the copy too, and for every fold (each changes only what it alone reads)
    readers, used = _readers(model.graph), _consumers(model.graph)
    matched = _matched(model, used)
    if not matched:
        return model
    out = _copy(model)
    graph, opset = out.graph, _opset(out)
    initializers = {t.name: t for t in graph.initializer}
    nodes: list[onnx.NodeProto] = []
    for k, node in enumerate(graph.node):
        if k not in matched:
            nodes.append(node)
            continue
        folded = _fold_into_projections(graph, node, initializers, readers, used)
        nodes.extend(_written_out(graph, node, matched[k], opset, affine=not folded))
    del graph.node[:]
    graph.node.extend(nodes)
    _remove_dead(graph)  # the folded scales, biases and projection weights
    return out


def _fold_into_projections(graph: onnx.GraphProto, node: onnx.NodeProto, initializers: dict[str, onnx.TensorProto],
                           readers: dict[str, list[int]], used: dict[str, int]) -> bool:
    """Fold the norm's scale and bias into the projections reading its output, when every reader is a
    ``MatMul(y, W)`` by a constant ``W`` [C, K] read by nothing else, followed (where the bias is not zero) by an
    ``Add`` of a constant [K] bias read by nothing else: ``(n * g + b) @ W + c == n @ (g[:, None] * W) + (b @ W + c)``.
    Whether it folded (else the graph is untouched)."""
    y = node.output[0]
    scale = numpy_helper.to_array(initializers[node.input[1]]).astype(np.float64)
    bias_name = node.input[2] if len(node.input) > 2 and node.input[2] else None
    bias = None if bias_name is None else numpy_helper.to_array(initializers[bias_name]).astype(np.float64)
    if bias is not None and not bias.any():
        bias = None
    plan = []
    for k in readers.get(y, []):
        matmul = graph.node[k]
        weight = initializers.get(matmul.input[1]) if matmul.op_type == "MatMul" and len(matmul.input) == 2 else None
        if (matmul.domain not in ("", "ai.onnx") or matmul.input[0] != y or weight is None or len(weight.dims) != 2
                or weight.data_type != TensorProto.FLOAT or used.get(weight.name) != 1 or weight.dims[0] != len(scale)):
            return False
        add = None
        if bias is not None:
            after = [graph.node[j] for j in readers.get(matmul.output[0], [])]
            add = after[0] if len(after) == 1 and used.get(matmul.output[0]) == 1 else None
            if add is None or add.op_type != "Add" or add.domain not in ("", "ai.onnx"):
                return False
            other = [name for name in add.input if name != matmul.output[0]]
            constant = initializers.get(other[0]) if len(other) == 1 else None
            if (constant is None or constant.data_type != TensorProto.FLOAT or used.get(constant.name) != 1
                    or int(np.prod(constant.dims)) != weight.dims[1] or list(constant.dims)[-1] != weight.dims[1]):
                return False
            add = (add, constant)
        plan.append((matmul, weight, add))
    if not plan or used.get(y) != len(plan):
        return False  # also a graph output, or read twice by one node
    for matmul, weight, add in plan:
        w = numpy_helper.to_array(weight).astype(np.float64)
        matmul.input[1] = _replace(graph, weight, (scale[:, None] * w).astype(np.float32))
        if add is not None:
            add_node, constant = add
            c = numpy_helper.to_array(constant).astype(np.float64)
            folded = (c + (bias @ w).reshape(c.shape)).astype(np.float32)
            slot = list(add_node.input).index(constant.name)
            add_node.input[slot] = _replace(graph, constant, folded)
    return True


def _replace(graph: onnx.GraphProto, old: onnx.TensorProto, value: np.ndarray) -> str:
    """Add ``value`` as an initializer named after ``old`` (which nothing reads once its reader takes this one);
    its name."""
    name = f"{old.name}__ln_folded"
    graph.initializer.append(numpy_helper.from_array(value, name))
    return name


def _matched(model: onnx.ModelProto, used: dict[str, int]) -> dict[int, float]:
    """Node position -> epsilon, for each LayerNormalization this rewrite writes out."""
    graph = model.graph
    initializers = {t.name: t for t in graph.initializer}
    shapes = _shapes(model)
    matched = {}
    for k, node in enumerate(graph.node):
        if node.op_type != "LayerNormalization" or node.domain not in ("", "ai.onnx") or len(node.input) < 2:
            continue
        if any(used.get(name, 0) for name in node.output[1:] if name):
            continue  # the mean or inverse deviation is read
        shape = shapes.get(node.input[0])
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if shape is None or len(shape) != 3 or shape[-1] is None or attrs.get("axis", -1) not in (-1, 2):
            continue
        affine = [initializers.get(name) for name in node.input[1:3] if name]
        if any(t is None or t.data_type != TensorProto.FLOAT or list(t.dims) != [shape[-1]] for t in affine):
            continue
        matched[k] = float(attrs.get("epsilon", 1e-5))
    return matched


def _written_out(graph: onnx.GraphProto, node: onnx.NodeProto, epsilon: float, opset: int, *, affine: bool
                 ) -> list[onnx.NodeProto]:
    """The nodes computing ``node``'s output ``Y`` in normalise-then-affine form (names prefixed by the node's);
    without ``affine`` (its scale and bias were folded into the readers) ``Y`` is the normalised tensor."""
    x, scale = node.input[0], node.input[1]
    bias = node.input[2] if len(node.input) > 2 and node.input[2] else None
    base = (node.name or node.output[0]).replace("/", "_")
    name = lambda part: f"{base}__ln_{part}"  # noqa: E731
    graph.initializer.append(numpy_helper.from_array(np.array(epsilon, np.float32), name("eps")))
    if opset >= 18:
        graph.initializer.append(numpy_helper.from_array(np.array([-1], np.int64), name("axes")))

    def mean(source: str, target: str) -> onnx.NodeProto:
        if opset >= 18:
            return helper.make_node("ReduceMean", [source, name("axes")], [target], keepdims=1, name=target)
        return helper.make_node("ReduceMean", [source], [target], axes=[-1], keepdims=1, name=target)

    y = node.output[0]
    nodes = [
        mean(x, name("mean")),
        helper.make_node("Sub", [x, name("mean")], [name("centred")], name=name("centred")),
        helper.make_node("Mul", [name("centred"), name("centred")], [name("squared")], name=name("squared")),
        mean(name("squared"), name("var")),
        helper.make_node("Add", [name("var"), name("eps")], [name("var_eps")], name=name("var_eps")),
        helper.make_node("Sqrt", [name("var_eps")], [name("deviation")], name=name("deviation")),
        helper.make_node("Reciprocal", [name("deviation")], [name("inverse")], name=name("inverse")),
        helper.make_node("Mul", [name("centred"), name("inverse")], [name("normed") if affine else y],
                         name=name("normed")),
    ]
    if not affine:
        return nodes
    nodes.append(helper.make_node("Mul", [name("normed"), scale], [name("scaled") if bias else y], name=name("scaled")))
    if bias:
        nodes.append(helper.make_node("Add", [name("scaled"), bias], [y], name=name("biased")))
    return nodes
