"""converter.interrupts: a Ctrl-C swallowed by a bare ``except:`` is raised again at the next checkpoint."""

from __future__ import annotations

import os
import signal

import pytest

from converter import interrupts


@pytest.fixture
def handler():
    previous = signal.getsignal(signal.SIGINT)
    with interrupts.remembered():
        yield
    assert signal.getsignal(signal.SIGINT) is previous  # the caller's handler is back
    interrupts._pending = False


@pytest.mark.parametrize("swallowed", [True, False])
def test_checkpoint_reraises_an_interrupt_even_when_it_was_swallowed(handler, swallowed: bool) -> None:
    interrupts.checkpoint()  # nothing pending: no-op
    with pytest.raises(KeyboardInterrupt):
        try:
            os.kill(os.getpid(), signal.SIGINT)
            signal.sigtimedwait([], 0.1)  # gives the handler a bytecode boundary to run at
        except:  # noqa: E722 — what onnx2tf does
            if not swallowed:
                raise
        interrupts.checkpoint()
    with pytest.raises(KeyboardInterrupt):  # it stays pending: every later checkpoint stops too
        interrupts.checkpoint()


def test_checkpoint_is_a_no_op_without_the_handler() -> None:
    interrupts._pending = False
    interrupts.checkpoint()
