"""converter._convert.interrupts: a Ctrl-C swallowed by a bare ``except:`` is raised again at the next checkpoint."""

from __future__ import annotations

import os
import signal

import pytest

from converter._convert import interrupts


@pytest.fixture
def handler():
    previous = {s: signal.getsignal(s) for s in interrupts.SIGNALS}
    with interrupts.remembered():
        yield
    assert {s: signal.getsignal(s) for s in interrupts.SIGNALS} == previous  # the caller's handlers are back
    interrupts._pending = None


@pytest.mark.parametrize("signum,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
@pytest.mark.parametrize("swallowed", [True, False])
def test_checkpoint_reraises_an_interrupt_even_when_it_was_swallowed(handler, swallowed: bool, signum, code) -> None:
    interrupts.checkpoint()  # nothing pending: no-op
    with pytest.raises(KeyboardInterrupt) as caught:
        try:
            os.kill(os.getpid(), signum)
            signal.sigtimedwait([], 0.1)  # gives the handler a bytecode boundary to run at
        except:  # noqa: E722 — what onnx2tf does
            if not swallowed:
                raise
        interrupts.checkpoint()
    assert interrupts.exit_code(caught.value) == code
    with pytest.raises(KeyboardInterrupt):  # it stays pending: every later checkpoint stops too
        interrupts.checkpoint()


def test_checkpoint_is_a_no_op_without_the_handler() -> None:
    interrupts._pending = None
    interrupts.checkpoint()
