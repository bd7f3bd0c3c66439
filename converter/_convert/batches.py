"""Feeding a runtime that takes a fixed batch: samples in chunks of that size, the last chunk padded.

The padding repeats the chunk's first sample (a real input, so it cannot produce NaN/Inf or take another code
path the way zeros can) and its outputs are dropped. Every runtime here is run in eval mode, where a sample's
output does not depend on the others in its batch, so the padding never changes a number that is kept.
NumPy only: the TFLite child (:mod:`converter._proc.isolated`) imports it too.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np


def padded(arrays: Sequence[np.ndarray], size: int) -> list[np.ndarray]:
    """``arrays`` (the inputs of one batch, [n, ...] each) with copies of their first sample appended until n is
    a multiple of ``size``; unchanged when it already is."""
    missing = -len(arrays[0]) % size
    if not missing:
        return list(arrays)
    return [np.concatenate([x, np.repeat(x[:1], missing, axis=0)]) for x in arrays]


def chunks(inputs: Sequence[np.ndarray], size: int | None, *, pad: bool = True
           ) -> Iterator[tuple[int, list[np.ndarray]]]:
    """(real count, chunk) over the samples of ``inputs`` (one array per model input, [N, ...] each), ``size``
    samples at a time (None: all at once); the last chunk padded to ``size`` (:func:`padded`) unless ``pad`` is
    False. Keep ``outputs[:real]`` of each chunk."""
    n = len(inputs[0])
    size = size or n
    for start in range(0, n, size):
        part = [x[start:start + size] for x in inputs]
        real = len(part[0])
        yield real, (padded(part, size) if pad else part)
