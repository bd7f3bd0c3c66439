"""The only place where NCHW <-> NHWC decisions live.

A *permutation* ``perm`` always maps the PyTorch layout to another one: ``x_other = x_torch.transpose(perm)``.
``manifest.json`` records, per artifact tensor, the permutation from the PyTorch layout so any consumer can
feed it: ``np.transpose(x_torch, perm)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

Perm = tuple[int, ...]


def identity(rank: int) -> Perm:
    return tuple(range(rank))


def channels_last(rank: int) -> Perm:
    """NCHW -> NHWC (and NCW -> NWC, NCDHW -> NDHWC)."""
    return (0, *range(2, rank), 1) if rank >= 3 else identity(rank)


def inverse(perm: Perm) -> Perm:
    return tuple(int(i) for i in np.argsort(perm))


def compose(first: Perm, then: Perm) -> Perm:
    """Permutation equivalent to ``x.transpose(first).transpose(then)``."""
    return tuple(first[i] for i in then)


def between(src: Perm, dst: Perm) -> Perm:
    """Permutation taking a tensor in layout ``src`` to layout ``dst`` (both relative to PyTorch)."""
    return compose(inverse(src), dst)


def is_image(shape: Sequence[int | None], dtype: np.dtype) -> bool:
    """4-D floating-point tensors are images (NCHW in PyTorch); everything else keeps its layout."""
    return len(shape) == 4 and np.issubdtype(dtype, np.floating)


def artifact_input_perm(shape: Sequence[int | None], dtype: np.dtype, layout: str) -> Perm:
    """What the SavedModel/TFLite inputs take: NHWC for images under ``--layout nhwc``, else PyTorch's."""
    if layout == "nhwc" and is_image(shape, dtype):
        return channels_last(len(shape))
    return identity(len(shape))


def artifact_output_perm(keras_perm: Perm, layout: str) -> Perm:
    """Under ``nhwc`` 4-D outputs stay channels-last as the TF graph computes them; everything else
    (all of ``keep``, and every non-4-D output, which onnx2tf may otherwise hand back transposed) is
    restored to the PyTorch layout."""
    if layout == "nhwc" and len(keras_perm) == 4 and keras_perm == channels_last(4):
        return keras_perm
    return identity(len(keras_perm))


def to_layout(x: np.ndarray, perm: Perm) -> np.ndarray:
    return x if perm == identity(x.ndim) else np.ascontiguousarray(np.transpose(x, perm))


def from_layout(x: np.ndarray, perm: Perm) -> np.ndarray:
    return to_layout(x, inverse(perm))


def detect_perm(reference: np.ndarray, candidate: np.ndarray) -> Perm | None:
    """Which layout did the TF graph hand an output back in? Tries identity and channels-last and
    returns the permutation under which ``candidate`` numerically matches ``reference`` best.

    NaN != NaN, so values alone cannot decide for a model that outputs NaN/Inf (a NaN weight, ``log`` of a
    negative input): a layout is scored first by how many positions disagree in being NaN, +Inf, -Inf or
    finite (:func:`nonfinite_mismatch`), then by the largest error over the positions finite on both sides.
    Scoring, not requiring, a mask match still picks a layout when TF adds NaN/Inf of its own, so parity can
    report that instead of a bogus shape error here. A reference with no finite value at all says nothing about
    the layout: then the shapes decide alone, and only when exactly one layout fits (else ``None``).
    """
    options = [identity(reference.ndim)]
    if reference.ndim >= 3:
        options.append(channels_last(reference.ndim))
    fitting = [perm for perm in options if tuple(np.transpose(reference, perm).shape) == tuple(candidate.shape)]
    if reference.size and not np.isfinite(reference).any():
        return fitting[0] if len(fitting) == 1 else None
    best, best_score = None, (np.inf, np.inf)
    got = np.asarray(candidate, dtype=np.float64)
    for perm in fitting:
        moved = np.transpose(reference, perm).astype(np.float64)
        both = np.isfinite(moved) & np.isfinite(got)
        err = float(np.max(np.abs(moved[both] - got[both]))) if both.any() else 0.0
        score = (int(nonfinite_mismatch(moved, got).sum()), err)
        if score < best_score:
            best, best_score = perm, score
    return best


def nonfinite_mismatch(reference: np.ndarray, candidate: np.ndarray) -> np.ndarray:
    """Positions where the two arrays (same shape) disagree on being NaN, +Inf, -Inf or finite: NaN/Inf at the
    same place on both sides count as equal, whatever the finite values around them are."""
    return ((np.isnan(reference) != np.isnan(candidate)) | (np.isposinf(reference) != np.isposinf(candidate))
            | (np.isneginf(reference) != np.isneginf(candidate)))
