"""Parity: the same inputs through every runtime, judged against the reference.

:mod:`.judge` (tolerances, the report), :mod:`.classes` (which outputs are class scores: top-1's axis),
:mod:`.markdown` (parity.md), :mod:`.metrics` (the one relative error), :mod:`.data` (parity inputs: real digits,
.npy/.npz/IDX files, seeded noise),
:mod:`.runtimes` (one runner per runtime), :mod:`.run` (every runtime of an output directory on the same inputs),
:mod:`.html` (the self-contained report.html).
"""
