"""``full_rank_broadcast_constants``: a lower-rank constant operand of an elementwise op gets the other's rank."""

from __future__ import annotations

import onnx
from onnx import numpy_helper

from converter._convert.rewrites.graph import _copy, _remove_dead, _view

#: Elementwise ops with numpy broadcasting whose constant operand onnx2tf re-lays out.
_BROADCASTING = frozenset({"Add", "Sub", "Mul", "Div", "Pow", "Max", "Min"})


def full_rank_broadcast_constants(model: onnx.ModelProto, *, everywhere: bool = False) -> onnx.ModelProto:
    """Reshape every constant operand of a broadcasting elementwise op whose rank is below that of an
    activation with a symbolic dimension (a dynamic batch or sequence length) it meets (rank >= 3) to the full
    rank, with leading 1s: ``bias[64]`` of ``x[B, T, 64] + bias`` becomes ``bias[1, 1, 64]``.
    ``everywhere``: static activations too, for onnx2tf's fast mode (see below).

    Without it: with a symbolic dimension, onnx2tf cannot compare the activation's shape with the ONNX one and its
    broadcast heuristics re-lay out a 1-D constant as if the activation were channels-first: the Linear bias of
    a ``[B, T, C]`` sequence becomes ``[1, C, 1]`` ("Dimensions must be equal, but are 16 and 64" in a
    TransformerEncoder's ``linear1``, "12 and 7" in a GRU tagger's head; "[1,10,8] vs. [1,8,1]" with a symbolic
    sequence length). A full-rank constant is re-laid out exactly like the activation it meets (identity for kept
    ``[B, T, C]`` tensors, NCHW→NHWC for images), so the heuristics have nothing to guess. Why exact: numpy/ONNX
    broadcasting right-aligns shapes, so prepending 1s changes no value. Only graphs with a symbolic dimension are
    touched (static graphs convert already; nothing changes for them), and a constant shared with other consumers
    gets its own reshaped copy.

    Static graphs need it too once onnx2tf's strict mode is off (``disable_strict_mode``, the fast translation of
    :func:`converter._convert.tensorflow.onnx_to_keras`): strict mode resolves these broadcasts by running the
    partial Keras model for every Mul/Add whose output has two equal dimensions, which cost convnext_tiny 229 of
    257 s; without it, a Linear bias after a Permute (``[1, 24, 24, 384] + bias[384]``) is re-laid out as
    ``[1, 1, 384, 1]``. Full rank, there is nothing to resolve.
    """
    model = _copy(model)
    known, _, _, shapes = _view(model)
    graph = model.graph
    added: dict[tuple[str, int], str] = {}
    for node in graph.node:
        if node.op_type not in _BROADCASTING or node.domain not in ("", "ai.onnx"):
            continue
        ranks = [len(shapes[name]) for name in node.input if name in shapes and name not in known]
        dynamic = any(shapes[name] and None in shapes[name] for name in node.input
                      if name in shapes and name not in known)
        if not ranks or not (dynamic or everywhere) or max(ranks) < 3:
            continue
        rank = max(ranks)
        for k, name in enumerate(node.input):
            value = known.get(name)
            if value is None or value.ndim in (0, rank) or value.ndim > rank or value.size == 1:
                continue
            key = (name, rank)
            if key not in added:
                added[key] = f"{name}_rank{rank}"
                graph.initializer.append(numpy_helper.from_array(
                    value.reshape((1,) * (rank - value.ndim) + value.shape), added[key]))
            node.input[k] = added[key]
    if added:
        _remove_dead(graph)
    return model
