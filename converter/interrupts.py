"""Ctrl-C that third-party code cannot swallow.

onnx2tf wraps parts of its conversion in bare ``except:`` clauses, which also catch the ``KeyboardInterrupt``
Python raises for SIGINT: an interrupt landing there would be lost and the conversion would run on. The
``convert`` command installs :func:`install`'s handler, which raises as usual *and* remembers the interrupt;
:func:`checkpoint` (called after onnx2tf returns and before anything is moved into ``--out``) raises it again.
Without the handler (library use), :func:`checkpoint` does nothing.
"""

from __future__ import annotations

import signal

_pending = False


def _handler(signum, frame) -> None:
    global _pending
    _pending = True
    raise KeyboardInterrupt


def install() -> None:
    """Route SIGINT through the remembering handler (main thread only, as ``signal.signal`` requires)."""
    global _pending
    _pending = False
    signal.signal(signal.SIGINT, _handler)


def checkpoint() -> None:
    """Raise ``KeyboardInterrupt`` if an interrupt arrived since :func:`install`, even one something swallowed."""
    if _pending:
        raise KeyboardInterrupt
