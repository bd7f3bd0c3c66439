"""``gather_nd_as_flat_gather``: a GatherND that picks single elements becomes a Gather on the flattened data."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from converter._convert.rewrites.graph import _constant, _copy, _remove_dead, _symbolic_past_batch, _view


def gather_nd_as_flat_gather(model: onnx.ModelProto) -> onnx.ModelProto:
    """``GatherND(data, Concat(Unsqueeze(i0, -1), …, Unsqueeze(iK-1, -1), axis=-1))`` with ``K == rank(data)`` and
    ``batch_dims == 0`` becomes ``Gather(Reshape(data, [-1]), flat)``, where ``flat = (…(i0·d1 + i1)·d2 + …)`` over
    the run-time dimensions ``d = Shape(data)``, each index first taken modulo its dimension's sign rule
    (``i < 0 → i + d``, as GatherND reads negative indices).

    Without it: transformers 5 builds its causal and padding masks with ``torch.vmap`` over index grids; exported
    (dynamo), that is a GatherND whose indices are a rank-5 stack of broadcast index grids. At a symbolic sequence
    length onnx2tf loses the last (index-depth) axis of that stack while moving it between layouts, TF's
    ``gather_nd`` then has an output of unknown rank, and the next op stops the conversion (GPT-2: "Cannot take
    the length of shape with unknown rank"). Why exact and general: for indices of full depth, GatherND reads
    ``data[i0, …, iK-1]``, which is element ``ravel_multi_index`` of the flattened data; the rewrite keys only on
    the op, the index stack's structure and the data's rank, and keeps every index grid at its own rank. Only graphs
    with a symbolic dimension past the batch are touched (at static shapes onnx2tf translates GatherND as is).
    """
    if not _symbolic_past_batch(model):
        return model
    model = _copy(model)
    known, producers, _, shapes = _view(model)
    graph = model.graph
    nodes: list[onnx.NodeProto] = []
    changed = False
    for node in graph.node:
        grids = _index_grids(node, producers, known, shapes)
        if grids is None:
            nodes.append(node)
            continue
        prefix = node.name or node.output[0]
        data = node.input[0]
        nodes += _flat_gather(prefix, data, grids, node.output[0], graph)
        changed = True
    if not changed:
        return model
    del graph.node[:]
    graph.node.extend(nodes)
    _remove_dead(graph)
    return model


def _index_grids(node: onnx.NodeProto, producers: dict, known: dict, shapes: dict) -> list[str] | None:
    """The per-axis index tensors ``i0 … iK-1`` of a full-depth GatherND built by Concat(Unsqueeze(-1)), or None."""
    if node.op_type != "GatherND" or node.domain not in ("", "ai.onnx"):
        return None
    if any(a.name == "batch_dims" and a.i != 0 for a in node.attribute):
        return None
    data_shape, index_shape = shapes.get(node.input[0]), shapes.get(node.input[1])
    stack = producers.get(node.input[1])
    if data_shape is None or index_shape is None or stack is None or stack.op_type != "Concat":
        return None
    depth = len(index_shape) - 1
    axis = next((a.i for a in stack.attribute if a.name == "axis"), None)
    if axis is None or axis % len(index_shape) != depth or len(stack.input) != len(data_shape):
        return None
    grids = []
    for name in stack.input:
        unsqueeze = producers.get(name)
        if unsqueeze is None or unsqueeze.op_type != "Unsqueeze" or len(unsqueeze.input) < 2:
            return None
        axes = _constant(unsqueeze.input[1], known, producers)
        if axes is None or axes.size != 1 or int(axes.ravel()[0]) % (depth + 1) != depth:
            return None
        grids.append(unsqueeze.input[0])
    return grids


def _flat_gather(prefix: str, data: str, grids: list[str], output: str, graph: onnx.GraphProto) -> list:
    def const(name: str, value) -> str:
        graph.initializer.append(numpy_helper.from_array(np.asarray(value, np.int64), f"{prefix}/{name}"))
        return f"{prefix}/{name}"

    nodes = [helper.make_node("Shape", [data], [f"{prefix}/dims"], name=f"{prefix}/Shape"),
             helper.make_node("Reshape", [data, const("flat_shape", [-1])], [f"{prefix}/flat"], name=f"{prefix}/Flat")]
    zero = const("zero", 0)
    flat = ""
    for k, grid in enumerate(grids):
        dim, negative, wrapped, index = (f"{prefix}/d{k}", f"{prefix}/neg{k}", f"{prefix}/wrap{k}", f"{prefix}/i{k}")
        nodes += [
            helper.make_node("Gather", [f"{prefix}/dims", const(f"k{k}", k)], [dim], name=f"{prefix}/Dim{k}", axis=0),
            helper.make_node("Less", [grid, zero], [negative], name=f"{prefix}/Negative{k}"),
            helper.make_node("Add", [grid, dim], [wrapped], name=f"{prefix}/Wrap{k}"),
            helper.make_node("Where", [negative, wrapped, grid], [index], name=f"{prefix}/Index{k}"),
        ]
        if not flat:
            flat = index
            continue
        scaled, total = f"{prefix}/scaled{k}", f"{prefix}/flat_index{k}"
        nodes += [helper.make_node("Mul", [flat, dim], [scaled], name=f"{prefix}/Scale{k}"),
                  helper.make_node("Add", [scaled, index], [total], name=f"{prefix}/Offset{k}")]
        flat = total
    nodes.append(helper.make_node("Gather", [f"{prefix}/flat", flat], [output], name=prefix, axis=0))
    return nodes
