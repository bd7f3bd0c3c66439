"""Child processes that die with their parent (standard library only).

A conversion starts helper processes (the PyTorch stage, the TFLite runner, the int8 calibrator, the
localisation replay). If the parent is killed outright (SIGKILL, the OOM killer, a CI runner's hard stop) no
Python code of its own runs, so its children must notice by themselves: each child calls
:func:`die_with_parent` first thing, and spawners pass :func:`child_env` as the child's environment.
On Linux the kernel sends the child SIGKILL when its parent ends (``PR_SET_PDEATHSIG``); elsewhere a
daemon thread polls the parent's pid.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
import time

#: Set by the spawner to its own pid; read (and removed) by the child.
PARENT_ENV = "TORCH2TF_PARENT_PID"
_PR_SET_PDEATHSIG = 1


def child_env(base: dict[str, str] | None = None) -> dict[str, str]:
    """``base`` (default: this process's environment) plus this process's pid for :func:`die_with_parent`."""
    return {**(os.environ if base is None else base), PARENT_ENV: str(os.getpid())}


def python_child(module: str, *args: str, import_cwd: bool) -> tuple[list[str], dict[str, str]]:
    """argv and environment for ``python -m module args`` as a child that loads the user's model.

    ``import_cwd``: whether ``module:callable`` sources may be imported from the current directory (what the
    user's own ``convert pkg.mod:fn`` means); a source read from a manifest (``--check``) passes False, so a
    manifest cannot make the toolkit import a file that happens to lie in the current directory. ``python -P``
    keeps the interpreter from adding that directory by itself."""
    path = [os.getcwd()] if import_cwd else []
    env = child_env()
    env["PYTHONPATH"] = os.pathsep.join([*path, *filter(None, [os.environ.get("PYTHONPATH")])])
    return [sys.executable, "-P", "-m", module, *args], env


def die_with_parent() -> None:
    """End this process when the process that spawned it ends (no-op if it was not spawned with :func:`child_env`).

    The variable is removed from the environment so the child's own children do not inherit a pid that is not
    their parent's."""
    parent = os.environ.pop(PARENT_ENV, None)
    if parent is None:
        return
    armed = False
    if sys.platform.startswith("linux"):
        try:
            armed = ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL) == 0
        except (OSError, AttributeError):
            armed = False
    if os.getppid() != int(parent):  # the parent ended before the signal was armed
        os._exit(1)
    if not armed:
        threading.Thread(target=_watch, args=(int(parent),), daemon=True, name="die-with-parent").start()


def _watch(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(0.5)
    os._exit(1)
