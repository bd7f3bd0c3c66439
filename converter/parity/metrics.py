"""The one relative error: parity's ``max_rel_err``, localisation's per-module error, the int8 search's output error.

Scale-aware per sample: each sample's worst |Δ| divided by that sample's largest |reference|, so 1e-4 means the
same on logits of 0.1 and of 100; the worst sample is the figure. Standard library and NumPy only.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np

#: The floor of a sample's scale: a pure division guard (a reference sample that is exactly 0 everywhere). Any
#: reference that matters is far above it; :data:`converter.parity.judge.DEGENERATE_SCALE` refuses flat ones.
SCALE_FLOOR = 1e-30


def per_sample(reference: np.ndarray, candidate: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Of [N, features] arrays: each sample's worst |Δ| and its scale (largest |reference|, at least
    :data:`SCALE_FLOOR`). The relative error is the largest ratio of the two; the fp32 parity bound
    (``atol + rtol·scale``) is judged on them sample by sample."""
    return per_sample_of(np.abs(candidate - reference), np.max(np.abs(reference), axis=1))


def per_sample_of(abs_diff: np.ndarray, peak: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """:func:`per_sample` from its parts: ``abs_diff`` = |candidate - reference| [N, features] and ``peak`` = each
    sample's largest |reference| [N] (parity computes the peak once per reference: ``judge.prepare_reference``)."""
    return np.max(abs_diff, axis=1), np.maximum(peak, SCALE_FLOOR)


def relative_error(reference: np.ndarray | Sequence[np.ndarray], candidate: np.ndarray | Sequence[np.ndarray], *,
                   reduction: Literal["max", "l2"] = "max") -> float:
    """How far ``candidate`` is from ``reference`` (one array [N, ...], or a list of outputs, each [N, ...]).

    ``"max"`` (the default; parity's ``max_rel_err``, localisation's per-module error): the worst sample's
    max |Δ| / max |reference|, over all outputs of that sample (:func:`per_sample`).
    ``"l2"``: ‖Δ‖₂ / ‖reference‖₂ over every element at once: the int8 keep-float search's measure (its layer
    ranking and its ``MAX_OUTPUT_REL_ERR`` bound for class-less outputs were set on it). int8 noise is spread
    over every element; the L2 ratio says how much of the output it takes as a whole, where the per-sample max
    follows the single worst element.

    ``inf`` when the shapes differ or any difference is NaN/Inf (no finite number describes it; parity compares
    the NaN/Inf masks itself, before calling this on the finite positions); 0.0 for empty arrays.
    """
    refs = [reference] if isinstance(reference, np.ndarray) else list(reference)
    cands = [candidate] if isinstance(candidate, np.ndarray) else list(candidate)
    if len(refs) != len(cands) or any(r.shape != c.shape for r, c in zip(refs, cands)):
        return float("inf")
    if reduction == "l2":
        ref = np.concatenate([r.reshape(-1) for r in refs]).astype(np.float64)
        diff = np.concatenate([c.reshape(-1) for c in cands]).astype(np.float64) - ref
        if not np.isfinite(diff).all():
            return float("inf")
        return float(np.linalg.norm(diff) / max(np.linalg.norm(ref), SCALE_FLOOR))
    if reduction != "max":
        raise ValueError(f"unknown reduction {reduction!r}; use 'max' or 'l2'")
    ref = _per_sample_rows(refs)
    got = _per_sample_rows(cands)
    if not ref.size:
        return 0.0
    if not np.isfinite(got - ref).all():
        return float("inf")
    worst, scale = per_sample(ref, got)
    return float((worst / scale).max())


def _per_sample_rows(arrays: list[np.ndarray]) -> np.ndarray:
    """[N, features] float64: every output of each sample side by side."""
    if len(arrays) == 1:
        return arrays[0].reshape(len(arrays[0]), -1).astype(np.float64)
    return np.concatenate([a.reshape(a.shape[0], -1) for a in arrays], axis=1).astype(np.float64)
