"""Ctrl-C that third-party code cannot swallow.

onnx2tf wraps parts of its conversion in bare ``except:`` clauses, which also catch the ``KeyboardInterrupt``
Python raises for SIGINT: an interrupt landing there would be lost and the conversion would run on. The
``convert`` command runs inside :func:`remembered`, whose handler raises as usual *and* remembers the
interrupt; :func:`checkpoint` (called after onnx2tf returns and before anything is moved into ``--out``)
raises it again.
Outside it (library use), :func:`checkpoint` does nothing.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator

_pending = False


def _handler(signum, frame) -> None:
    global _pending
    _pending = True
    raise KeyboardInterrupt


@contextlib.contextmanager
def remembered() -> Iterator[None]:
    """SIGINT goes through the remembering handler inside the block (main thread only, as ``signal.signal``
    requires); the previous handler is back afterwards, so an in-process caller of ``cli.main`` keeps its own."""
    global _pending
    _pending = False
    previous = signal.signal(signal.SIGINT, _handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def checkpoint() -> None:
    """Raise ``KeyboardInterrupt`` if an interrupt arrived inside :func:`remembered`, even one something swallowed."""
    if _pending:
        raise KeyboardInterrupt
