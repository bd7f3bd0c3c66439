"""Parity: the same inputs through every runtime, judged against the reference.

:mod:`.judge` (tolerances, the report), :mod:`.metrics` (the one relative error), :mod:`.data` (parity inputs: real digits, files, seeded noise),
:mod:`.runtimes` (one runner per runtime), :mod:`.run` (every runtime of an output directory on the same inputs),
:mod:`.html` (the self-contained report.html).
"""
