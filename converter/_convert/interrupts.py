"""Ctrl-C and SIGTERM that third-party code cannot swallow.

SIGTERM (a CI cancel, ``timeout``, ``docker stop``) is handled exactly like Ctrl-C: the command stops, removes what
it staged, and exits 143 (130 for SIGINT) with nothing written to ``--out``.

onnx2tf wraps parts of its conversion in bare ``except:`` clauses, which also catch the ``KeyboardInterrupt``
Python raises for SIGINT: an interrupt landing there would be lost and the conversion would run on. The
``convert`` command runs inside :func:`remembered`, whose handler raises :class:`Interrupted` (a
``KeyboardInterrupt``) *and* remembers the signal; :func:`checkpoint` (called after onnx2tf returns and before
anything is moved into ``--out``) raises it again.
Outside it (library use), :func:`checkpoint` does nothing.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator

#: The signals :func:`remembered` turns into :class:`Interrupted`.
SIGNALS = (signal.SIGINT, signal.SIGTERM)
_pending: int | None = None


class Interrupted(KeyboardInterrupt):
    """The command was interrupted by ``signum``; its exit code is 128 + ``signum`` (130 SIGINT, 143 SIGTERM)."""

    def __init__(self, signum: int = signal.SIGINT) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


def exit_code(exc: KeyboardInterrupt) -> int:
    """128 + the signal number: 130 for Ctrl-C (also a plain ``KeyboardInterrupt``), 143 for SIGTERM."""
    return getattr(exc, "exit_code", 128 + signal.SIGINT)


def _handler(signum, frame) -> None:
    global _pending
    _pending = signum
    raise Interrupted(signum)


@contextlib.contextmanager
def remembered() -> Iterator[None]:
    """SIGINT and SIGTERM go through the remembering handler inside the block (main thread only, as
    ``signal.signal`` requires); the previous handlers are back afterwards, so an in-process caller of
    ``cli.main`` keeps its own."""
    global _pending
    _pending = None
    previous = {s: signal.signal(s, _handler) for s in SIGNALS}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def interrupted_by() -> Interrupted | None:
    """The interrupt that arrived inside :func:`remembered`, if one did: an error raised after it (a library
    left half-imported by the interrupt, say) is its consequence and is reported as the interrupt."""
    return Interrupted(_pending) if _pending is not None else None


def forget() -> None:
    """Drop a remembered interrupt once the command has reported it (a later library call must not see it)."""
    global _pending
    _pending = None


def checkpoint() -> None:
    """Raise :class:`Interrupted` if a signal arrived inside :func:`remembered`, even one something swallowed."""
    if _pending is not None:
        raise Interrupted(_pending)
