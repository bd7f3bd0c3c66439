"""Graph rewrites that let onnx2tf 1.28.8 convert real architectures, and an offline guard for onnx2tf.

Every mechanism is a small pure function ``ModelProto -> ModelProto`` that keeps the graph valid and numerically
identical in onnxruntime; each docstring says what fails in onnx2tf without it and why the fix is general (it keys
on graph structure, never on a model's name). ``prepare_for_onnx2tf`` runs them in a fixed order, records which
ones changed something, and derives the onnx2tf keyword arguments the rewritten graph needs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import onnx

from converter._convert.rewrites.batchinvariant import batch_invariant_as_constant
from converter._convert.rewrites.booleans import expand_bool_as_int
from converter._convert.rewrites.broadcast import full_rank_broadcast_constants
from converter._convert.rewrites.slices import full_rank_dynamic_slices
from converter._convert.rewrites.dynamic import patchwise_conv_transpose, shuffle_as_gather, wildcard_dynamic_reshape
from converter._convert.rewrites.erf import MAX_ABS_ERROR, erf_as_polynomial
from converter._convert.rewrites.expand import expand_as_broadcast
from converter._convert.rewrites.fastroute import FastRoute, fast_route
from converter._convert.rewrites.fold import fold_constants
from converter._convert.rewrites.gelu import gelu_as_fusable
from converter._convert.rewrites.gathers import gather_nd_as_flat_gather
from converter._convert.rewrites.integers import int64_abs_as_select
from converter._convert.rewrites.layernorm import layer_norm_as_foldable
from converter._convert.rewrites.graph import _copy, owned
from converter._convert.rewrites.graph import _input_dependent  # noqa: F401 (used as rewrites._input_dependent)
from converter._convert.rewrites.names import _VALID_NAME, sanitize_names  # noqa: F401 (rewrites._VALID_NAME)
from converter._convert.rewrites.offline import NetworkBlockedError, patch_onnx2tf_offline
from converter._convert.rewrites.outputs import anchor_constant_outputs
from converter._convert.rewrites.pooling import zero_pad_nonnegative_maxpool
from converter._convert.rewrites.recurrent import materialize_lstm_states
from converter._convert.rewrites.scales import scale_into_matmul
from converter._convert.rewrites.shapes import infer_shapes
from converter._convert.rewrites.subgraphs import anchor_constant_subgraphs

__all__ = [
    "MAX_ABS_ERROR",
    "REWRITES",
    "FastRoute",
    "NetworkBlockedError",
    "Prepared",
    "Rewrite",
    "anchor_constant_outputs",
    "anchor_constant_subgraphs",
    "batch_invariant_as_constant",
    "erf_as_polynomial",
    "expand_as_broadcast",
    "expand_bool_as_int",
    "fast_route",
    "fold_constants",
    "full_rank_broadcast_constants",
    "full_rank_dynamic_slices",
    "gather_nd_as_flat_gather",
    "gelu_as_fusable",
    "infer_shapes",
    "int64_abs_as_select",
    "layer_norm_as_foldable",
    "materialize_lstm_states",
    "onnx2tf_kwargs_for",
    "patch_onnx2tf_offline",
    "patchwise_conv_transpose",
    "prepare_for_onnx2tf",
    "sanitize_names",
    "scale_into_matmul",
    "shuffle_as_gather",
    "wildcard_dynamic_reshape",
    "zero_pad_nonnegative_maxpool",
]

Rewrite = Callable[[onnx.ModelProto], onnx.ModelProto]


@dataclass(frozen=True)
class Prepared:
    """A graph ready for onnx2tf, the names of the rewrites that changed it, and the onnx2tf options it needs."""

    model: onnx.ModelProto
    applied: tuple[str, ...]
    onnx2tf_kwargs: dict


REWRITES: tuple[tuple[str, Rewrite], ...] = (
    ("expand_as_broadcast", expand_as_broadcast),
    ("fold_constants", fold_constants),
    ("batch_invariant_as_constant", batch_invariant_as_constant),
    ("gelu_as_fusable", gelu_as_fusable),
    ("layer_norm_as_foldable", layer_norm_as_foldable),
    ("erf_as_polynomial", erf_as_polynomial),
    ("scale_into_matmul", scale_into_matmul),
    ("zero_pad_nonnegative_maxpool", zero_pad_nonnegative_maxpool),
    ("wildcard_dynamic_reshape", wildcard_dynamic_reshape),
    ("shuffle_as_gather", shuffle_as_gather),
    ("gather_nd_as_flat_gather", gather_nd_as_flat_gather),
    ("int64_abs_as_select", int64_abs_as_select),
    ("patchwise_conv_transpose", patchwise_conv_transpose),
    ("full_rank_broadcast_constants", full_rank_broadcast_constants),
    ("expand_bool_as_int", expand_bool_as_int),
    ("full_rank_dynamic_slices", full_rank_dynamic_slices),
    ("materialize_lstm_states", materialize_lstm_states),
    ("anchor_constant_subgraphs", anchor_constant_subgraphs),
    ("anchor_constant_outputs", anchor_constant_outputs),
    ("sanitize_names", sanitize_names),
    ("infer_shapes", infer_shapes),
)


def onnx2tf_kwargs_for(model: onnx.ModelProto, fast: bool = False) -> dict:
    """The onnx2tf keyword arguments a prepared graph needs.

    ``not_use_onnxsim``: the rewrites above already do what onnx-simplifier would, and onnx2tf can only run
    onnxsim on a file (with an in-memory graph it spawns a doomed ``onnxsim '' ''`` subprocess). No RNN flag is
    needed: with constant zero states, LSTM/GRU convert without ``enable_rnn_unroll`` (measured, see docs/design.md).
    ``not_use_opname_auto_generate``: sng4onnx only names unnamed nodes, then re-exports the graph and infers its
    shapes with the weights in it; ``sanitize_names`` and ``infer_shapes`` already did both (same artifacts, bit for
    bit; convnext_tiny's translation 7.2 → 5.0 s and one copy of its weights fewer).
    ``fast``: ``disable_strict_mode``, onnx2tf without its per-node accuracy correction (see ``prepare_for_onnx2tf``).
    """
    del model  # every graph gets the same options today; the signature leaves room for graph-driven ones
    return {"not_use_onnxsim": True, "not_use_opname_auto_generate": True,
            **({"disable_strict_mode": True} if fast else {})}


def _fingerprint(model: onnx.ModelProto) -> bytes:
    """Everything a rewrite may change, without the weights' bytes (rewrites never edit an initializer's values
    in place: new values get new names)."""
    graph = model.graph
    parts = [m.SerializeToString(deterministic=True) for m in [*graph.node, *graph.value_info, *graph.input,
                                                                  *graph.output]]
    parts += [f"{t.name}:{t.data_type}:{list(t.dims)}".encode() for t in graph.initializer]
    return b"\x00".join(parts)


def prepare_for_onnx2tf(model: onnx.ModelProto, fast: bool = False, in_place: bool = False) -> Prepared:
    """Run every rewrite in ``REWRITES`` order; the result passes ``onnx.checker`` and computes the same function.

    ``fast``: for onnx2tf without strict mode, whose per-node accuracy correction re-runs the partial Keras model
    for every ambiguous Mul/Add (quadratic in depth: 229 of convnext_tiny's 257 s). Its job is to pick the layout
    of broadcast constants, so in this mode every such constant is made full-rank first
    (``full_rank_broadcast_constants(everywhere=True)``) and there is nothing left to pick.

    The rewrites edit one copy of ``model`` in place (see ``graph.owned``); with ``in_place`` they edit ``model``
    itself, for a caller that will not read it again. The result is a fresh copy of the edited graph: an edited
    message keeps the bytes of every initializer a rewrite replaced (protobuf's arena frees only with the whole
    message), 0.4 GiB on convnext_tiny, so the edited one must not outlive this call (``in_place``: the caller
    holds no reference to ``model`` either; ``tensorflow.onnx_to_keras`` given a file).
    """
    applied = []
    steps = [(name, partial(rewrite, everywhere=True) if fast and rewrite is full_rank_broadcast_constants else rewrite)
             for name, rewrite in REWRITES]
    if not in_place:
        model = _copy(model)  # the caller's graph stays as it was; the rewrites then edit this one copy in place
    with owned():
        for name, rewrite in steps:
            before = _fingerprint(model)
            model = rewrite(model)
            if _fingerprint(model) != before:
                applied.append(name)
    kwargs = onnx2tf_kwargs_for(model, fast)
    data = model.SerializeToString()  # what the checker reads anyway
    del model  # with its replaced initializers, before the copy is parsed beside it
    onnx.checker.check_model(data)
    return Prepared(model=onnx.ModelProto.FromString(data), applied=tuple(applied), onnx2tf_kwargs=kwargs)
