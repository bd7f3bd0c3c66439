"""``gelu_as_fusable``: exact GELU in the operand order TFLite's converter fuses into its ``GELU`` builtin.

PyTorch exports ``nn.GELU()`` (ViT, ConvNeXt, EdgeNeXt, BERT, wav2vec2) as ``(x * (Erf(x / sqrt2) + 1)) * 0.5``.
TFLite's converter recognises exact GELU only as ``(x * 0.5) * (Erf(x / sqrt2) + 1)``; in any other order ``tf.Erf``
stays, which has no TFLite builtin, and each GELU must be a 16-op erf polynomial
(:mod:`converter._convert.rewrites.erf`) that XNNPACK runs as 16 passes over the activation, where litert-torch
writes one ``GELU`` op (measured on vit_tiny's TFLite fp32 file: 24 % of its latency).

This rewrite swaps the two products: the inner ``Mul`` becomes ``x * 0.5`` and the outer one multiplies it by
``Erf(..) + 1``. Halving is exact in float32, so the SavedModel and onnxruntime compute the same bits; the Erf stays
(``tf.math.erf``, one op in a SavedModel, and exported back by tf2onnx) and the TFLite file gets one ``GELU``.
``erf_as_polynomial`` leaves these Erfs alone (:func:`fusable_erfs`) and still replaces every other one.

Matched: ``Erf(x / c)`` with c = sqrt(2) (or ``Erf(x * c)`` with c = 1/sqrt(2)), ``+ 1``, ``* x`` (the same x),
``* 0.5``, each intermediate read only by the next node, constants float32 scalars (or one-element tensors).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx

from converter._convert.rewrites.graph import _consumers, _copy, _float_scalar, _readers

_SQRT2 = float(np.sqrt(2.0))
_TOLERANCE = 1e-6  # relative, on the constants: float32 rounds sqrt(2) at ~6e-8


@dataclass(frozen=True)
class _Gelu:
    """One exact GELU: the positions (in ``graph.node``) of its Erf and its two products, and the names of ``x``,
    the 0.5 constant and the ``Erf(..) + 1`` tensor."""

    erf: int
    inner: int
    outer: int
    x: str
    half: str
    plus_one: str


def gelu_as_fusable(model: onnx.ModelProto) -> onnx.ModelProto:
    """Reorder every exported exact GELU (see the module docstring); graphs without one come back unchanged."""
    exported = [g for g in _gelus(model) if not _is_fusable(g, model.graph)]
    if not exported:
        return model
    out = _copy(model)
    for gelu in exported:
        inner, outer = out.graph.node[gelu.inner], out.graph.node[gelu.outer]
        inner.input[:] = [gelu.x, gelu.half]  # x * 0.5
        outer.input[:] = [inner.output[0], gelu.plus_one]  # (x * 0.5) * (Erf(..) + 1)
    return out


def fusable_erfs(model: onnx.ModelProto) -> set[str]:
    """Output names of the Erfs of exact GELUs already in the fusable order: ``erf_as_polynomial`` keeps them."""
    graph = model.graph
    return {graph.node[g.erf].output[0] for g in _gelus(model) if _is_fusable(g, graph)}


def _is_fusable(gelu: _Gelu, graph: onnx.GraphProto) -> bool:
    return set(graph.node[gelu.inner].input) == {gelu.x, gelu.half}


def _gelus(model: onnx.ModelProto) -> list[_Gelu]:
    """Every exact GELU in either order (exported, or already fusable)."""
    graph = model.graph
    erfs = [k for k, n in enumerate(graph.node) if n.op_type == "Erf" and n.domain in ("", "ai.onnx")]
    if not erfs:
        return []
    view = _View(graph)
    return [g for k in erfs if (g := view.gelu(k)) is not None]


class _View:
    """The look-ups a match needs: each tensor's producer and readers (positions in ``graph.node``), its reader
    count (graph outputs included) and one-element constants' values."""

    def __init__(self, graph: onnx.GraphProto) -> None:
        self.nodes = graph.node
        self.initializers = {t.name: t for t in graph.initializer}
        self.producers = {o: k for k, n in enumerate(graph.node) for o in n.output}
        self.producer_nodes = {o: n for n in graph.node for o in n.output}
        self.readers = _readers(graph)
        self.counts = _consumers(graph)

    def gelu(self, erf: int) -> _Gelu | None:
        scaled_name = self.nodes[erf].input[0]
        scaled = self.producers.get(scaled_name)
        x = self._unscaled(self.nodes[scaled]) if scaled is not None and self.counts.get(scaled_name) == 1 else None
        erf_out = self.nodes[erf].output[0]
        plus_one = self._only_reader(erf_out, "Add")
        if x is None or plus_one is None or not self._is(self._other(plus_one, erf_out), 1.0):
            return None
        return self._exported(erf, x, plus_one) or self._reordered(erf, x, plus_one)

    def _exported(self, erf: int, x: str, plus_one: int) -> _Gelu | None:
        """``(x * (Erf + 1)) * 0.5``."""
        sum_out = self.nodes[plus_one].output[0]
        inner = self._only_reader(sum_out, "Mul")
        if inner is None or self._other(inner, sum_out) != x:
            return None
        outer = self._only_reader(self.nodes[inner].output[0], "Mul")
        half = self._other(outer, self.nodes[inner].output[0]) if outer is not None else None
        return _Gelu(erf, inner, outer, x, half, sum_out) if self._is(half, 0.5) else None

    def _reordered(self, erf: int, x: str, plus_one: int) -> _Gelu | None:
        """``(x * 0.5) * (Erf + 1)``: this rewrite's result, or a graph exported that way."""
        sum_out = self.nodes[plus_one].output[0]
        outer = self._only_reader(sum_out, "Mul")
        halved = self._other(outer, sum_out) if outer is not None else None
        inner = self.producers.get(halved) if halved is not None else None
        if inner is None or self.nodes[inner].op_type != "Mul" or self.counts.get(halved) != 1:
            return None
        half = self._other(inner, x)
        return _Gelu(erf, inner, outer, x, half, sum_out) if self._is(half, 0.5) else None

    def _unscaled(self, scaled: onnx.NodeProto) -> str | None:
        """``x`` of ``x / sqrt2`` or ``x * (1/sqrt2)``, else None."""
        if scaled.domain not in ("", "ai.onnx") or len(scaled.input) != 2:
            return None
        if scaled.op_type == "Div" and self._is(scaled.input[1], _SQRT2):
            return scaled.input[0]
        if scaled.op_type == "Mul":
            for k in (0, 1):
                if self._is(scaled.input[k], 1 / _SQRT2):
                    return scaled.input[1 - k]
        return None

    def _only_reader(self, name: str, op: str) -> int | None:
        """The node reading ``name`` when it is the only reader (no graph output either) and a default-domain
        ``op``."""
        readers = self.readers.get(name, [])
        if self.counts.get(name) != 1 or len(readers) != 1:
            return None
        node = self.nodes[readers[0]]
        return readers[0] if node.op_type == op and node.domain in ("", "ai.onnx") else None

    def _other(self, node: int, name: str) -> str | None:
        """A binary node's input other than ``name`` (None when ``name`` is not one of two different inputs)."""
        inputs = list(self.nodes[node].input)
        if len(inputs) != 2 or name not in inputs or inputs[0] == inputs[1]:
            return None
        return inputs[1 - inputs.index(name)]

    def _is(self, name: str | None, target: float) -> bool:
        """Whether ``name`` is a float32 constant with one element, equal to ``target`` up to float32 rounding."""
        value = _float_scalar(name, self.initializers, self.producer_nodes) if name is not None else None
        return value is not None and abs(value - target) <= _TOLERANCE * abs(target)
