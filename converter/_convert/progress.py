"""What a conversion is doing right now, for the person waiting on it.

A conversion of a real model takes minutes; the ``convert`` command says which stage it is in and for how long:
on a terminal one live status line (a spinner, the stage, the elapsed time; rich, erased when done), in a log
(stderr not a terminal) one plain line as each stage starts (``convert: [  12.3 s] writing model_fp16.tflite``),
and nothing with ``--quiet``. Library calls are silent unless they pass ``progress=True``.

The pipeline announces stages with :func:`stage`; :func:`reporting` makes a :class:`Reporter` the one those
announcements reach (a context variable: nothing to thread through every stage's signature, and a conversion in
another thread keeps its own). The stages' durations are recorded in ``manifest.json`` (``timings_s``) either way.
"""

from __future__ import annotations

import contextlib
import contextvars
import sys
import time
from collections.abc import Iterator
from typing import TextIO

_CURRENT: contextvars.ContextVar[Reporter | None] = contextvars.ContextVar("torch2tf_progress", default=None)


class Reporter:
    """Prints stage announcements to ``stream``: live on a terminal, as lines otherwise."""

    def __init__(self, stream: TextIO | None = None, *, live: bool | None = None, prefix: str = "convert") -> None:
        stream = stream if stream is not None else sys.stderr
        self.live = stream.isatty() if live is None else live
        # a stream of its own on a copy of the descriptor: the stages silence fd 2 while onnx2tf and the TFLite
        # converter run, and the status line must stay visible (and keep counting) through them
        self.stream = _own_copy(stream)
        self._owned = self.stream is not stream
        self.prefix = prefix
        self.start = time.perf_counter()
        self._bar = None
        self._task = None

    def __enter__(self) -> Reporter:
        if self.live:
            from rich.console import Console
            from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

            self._bar = Progress(SpinnerColumn(), TextColumn(f"{self.prefix}: {{task.description}}"),
                                 TimeElapsedColumn(), console=Console(file=self.stream), transient=True)
            self._bar.start()
            self._task = self._bar.add_task("starting", total=None)
        return self

    def __exit__(self, *exc) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
        self.stream.flush()
        if self._owned:
            self.stream.close()

    def stage(self, what: str) -> None:
        if self._bar is not None:
            self._bar.update(self._task, description=what)
            return
        elapsed = time.perf_counter() - self.start
        print(f"{self.prefix}: [{elapsed:7.1f} s] {what}", file=self.stream, flush=True)


def _own_copy(stream: TextIO) -> TextIO:
    import os

    try:
        fd = stream.fileno()
    except (AttributeError, OSError, ValueError):  # a StringIO or the like: no descriptor to lose
        return stream
    stream.flush()
    return os.fdopen(os.dup(fd), "w", buffering=1, encoding=getattr(stream, "encoding", None) or "utf-8")


def stage(what: str) -> None:
    """Announce that the conversion now does ``what`` (to the active :class:`Reporter`, if any)."""
    reporter = _CURRENT.get()
    if reporter is not None:
        reporter.stage(what)


@contextlib.contextmanager
def reporting(reporter: Reporter | None) -> Iterator[None]:
    """Route :func:`stage` announcements to ``reporter`` (None: nowhere) while the block runs."""
    token = _CURRENT.set(reporter)
    try:
        if reporter is None:
            yield
        else:
            with reporter:
                yield
    finally:
        _CURRENT.reset(token)
