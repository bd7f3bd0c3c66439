"""``full_rank_dynamic_slices``: a Slice with run-time starts/ends names every axis."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from converter._convert.rewrites.graph import _constant, _copy, _symbolic_past_batch, _view

#: "to the end" of an untouched axis; INT32_MAX, not INT64_MAX: TFLite runs strided_slice on int32 bounds and the cast
#: turns INT64_MAX into -1, which cuts the axis to nothing (ends are clamped to the dimension either way)
_END = np.iinfo(np.int32).max


def full_rank_dynamic_slices(model: onnx.ModelProto) -> onnx.ModelProto:
    """Give a ``Slice`` whose starts or ends are computed at run time (and whose axes are constant) one start, end
    and step per axis of its input: the untouched axes get ``0:INT32_MAX:1``, the sliced ones their run-time values.

    Without it: onnx2tf translates a Slice with dynamic bounds over a subset of the axes into a ``strided_slice``
    that applies them to the wrong axis: BERT's ``position_ids[:, 0:seq]`` (a [1, 512] buffer cut to the sequence
    length once ``--dynamic-dim input_ids:1`` makes that length symbolic) comes out as shape [0, 16], and every
    output after it is empty. Why exact and general: ONNX Slice over all axes with ``0:INT32_MAX:1`` on the others
    is the same slice by definition (ends are clamped to the dimension); the rewrite keys only on the op, constant
    axes and a known input rank. Only graphs with an input dimension past the batch that is symbolic are touched
    (elsewhere onnx2tf reads the bounds at conversion time).
    """
    if not _symbolic_past_batch(model):
        return model
    model = _copy(model)
    known, producers, _, shapes = _view(model)
    graph = model.graph
    constants = set(known) | {o for n in graph.node if n.op_type == "Constant" for o in n.output}
    nodes = []
    for node in graph.node:
        if node.op_type != "Slice" or node.domain not in ("", "ai.onnx") or len(node.input) < 4:
            nodes.append(node)
            continue
        data, starts, ends, axes_name = node.input[:4]
        steps = node.input[4] if len(node.input) > 4 else ""
        rank = known[data].ndim if data in known else len(shapes.get(data, ()))
        axes = _constant(axes_name, known, producers)
        dynamic = starts not in constants or ends not in constants
        if not dynamic or axes is None or not rank or (steps and _constant(steps, known, producers) is None):
            nodes.append(node)
            continue
        axes = [int(a) % rank for a in axes.reshape(-1)]
        if sorted(axes) == list(range(rank)) and axes == sorted(axes):
            nodes.append(node)
            continue
        step_values = _constant(steps, known, producers).reshape(-1) if steps else np.ones(len(axes), np.int64)
        prefix = node.name or node.output[0]
        full_starts, full_ends = [], []
        for a in range(rank):
            if a in axes:
                k = axes.index(a)
                for source, out in ((starts, full_starts), (ends, full_ends)):
                    piece = f"{prefix}_{'starts' if out is full_starts else 'ends'}_{a}"
                    index = f"{piece}_index"
                    graph.initializer.append(numpy_helper.from_array(np.array([k], np.int64), index))
                    nodes.append(helper.make_node("Gather", [source, index], [piece], name=f"{piece}/Gather", axis=0))
                    out.append(piece)
            else:
                for value, out in ((0, full_starts), (_END, full_ends)):
                    name = f"{prefix}_{'start' if out is full_starts else 'end'}_fixed_{a}"
                    graph.initializer.append(numpy_helper.from_array(np.array([value], np.int64), name))
                    out.append(name)
        full_steps = np.array([step_values[axes.index(a)] if a in axes else 1 for a in range(rank)], np.int64)
        names = [f"{prefix}_full_starts", f"{prefix}_full_ends", f"{prefix}_full_axes", f"{prefix}_full_steps"]
        nodes.append(helper.make_node("Concat", full_starts, [names[0]], name=f"{prefix}/ConcatStarts", axis=0))
        nodes.append(helper.make_node("Concat", full_ends, [names[1]], name=f"{prefix}/ConcatEnds", axis=0))
        graph.initializer.append(numpy_helper.from_array(np.arange(rank, dtype=np.int64), names[2]))
        graph.initializer.append(numpy_helper.from_array(full_steps, names[3]))
        nodes.append(helper.make_node("Slice", [data, *names], list(node.output), name=node.name))
    del graph.node[:]
    graph.node.extend(nodes)
    return model
