"""The one way this toolkit starts a Python child process (standard library only).

:func:`start` / :func:`run` spawn ``python -P -m MODULE ARGS`` with one environment and working-directory rule
(:func:`python_child`), the child's stderr in an anonymous temporary file (nothing left on disk, and a chatty
child never blocks on a full pipe), a timeout, and the child's last stderr line for the caller's one-line error.
Every child dies with its parent:

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
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import IO

#: The directory holding the ``converter`` package: on every child's path, installed or not.
REPO = Path(__file__).resolve().parents[2]
#: Set by the spawner to its own pid; read (and removed) by the child.
PARENT_ENV = "TORCH2TF_PARENT_PID"
_PR_SET_PDEATHSIG = 1


def child_env(base: dict[str, str] | None = None) -> dict[str, str]:
    """``base`` (default: this process's environment) plus this process's pid for :func:`die_with_parent`."""
    return {**(os.environ if base is None else base), PARENT_ENV: str(os.getpid())}


def python_child(module: str, *args: str, import_cwd: bool = False,
                 extra_env: dict[str, str] | None = None) -> tuple[list[str], dict[str, str]]:
    """argv and environment for ``python -m module args`` as a child that loads the user's model.

    ``import_cwd``: whether ``module:callable`` sources may be imported from the current directory (what the
    user's own ``convert pkg.mod:fn`` means); a source read from a manifest (``--check``) passes False, so a
    manifest cannot make the toolkit import a file that happens to lie in the current directory. ``python -P``
    keeps the interpreter from adding that directory by itself."""
    given = os.environ.get("PYTHONPATH", "").split(os.pathsep)
    if not import_cwd:  # an empty entry or "." in PYTHONPATH means the current directory too
        given = [p for p in given if p and Path(p).resolve() != Path.cwd().resolve()]
    path = [*([os.getcwd()] if import_cwd else []), *filter(None, given), str(REPO)]
    env = child_env({**os.environ, **(extra_env or {})})
    env["PYTHONPATH"] = os.pathsep.join(path)  # the toolkit last: it must not shadow the user's own modules
    return [sys.executable, "-P", "-m", module, *args], env


class Spawned:
    """A running child (:func:`start`): ``proc`` and the anonymous file its stderr goes to."""

    def __init__(self, proc: subprocess.Popen, log: IO[bytes]) -> None:
        self.proc, self.log = proc, log

    def wait(self, timeout: float | None = None) -> int | None:
        """The exit status, or None when ``timeout`` passed first (the child is then killed)."""
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            return None

    def last_line(self) -> str:
        """The last non-empty line the child wrote to stderr ("" if none)."""
        self.log.seek(0)
        lines = [ln for ln in self.log.read().decode(errors="replace").splitlines() if ln.strip()]
        return lines[-1].strip() if lines else ""

    def stop(self) -> None:
        """Kill the child if it still runs; close its pipes (not its log: :meth:`last_line` may still read it)."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None and not pipe.closed:
                try:
                    pipe.close()
                except BrokenPipeError:
                    pass

    def close(self) -> None:
        self.stop()
        self.log.close()


def start(module: str, *args: str, import_cwd: bool = False, stdin: bool = False, stdout: bool = False,
          extra_env: dict[str, str] | None = None) -> Spawned:
    """Start ``python -m module args`` (:func:`python_child`); ``stdin``/``stdout``: pipes (bytes) instead of
    nothing. The child's working directory is this process's, so the user's relative paths mean the same."""
    argv, env = python_child(module, *args, import_cwd=import_cwd, extra_env=extra_env)
    log = tempfile.TemporaryFile()
    proc = subprocess.Popen(argv, env=env, stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
                            stdout=subprocess.PIPE if stdout else subprocess.DEVNULL, stderr=log)
    return Spawned(proc, log)


def exit_reason(code: int | None, timeout: float | None = None) -> str:
    """``exit 2``, ``signal SIGSEGV`` or ``timed out after 900 s``: how a child ended, in words."""
    if code is None:
        return f"timed out after {timeout:g} s"
    if code < 0 and -code in signal.valid_signals():
        return f"signal {signal.Signals(-code).name}"
    return f"exit {code}"


def run(module: str, *args: str, timeout: float, import_cwd: bool = False,
        extra_env: dict[str, str] | None = None) -> tuple[int | None, str]:
    """Run a child to its end: (exit status or None on timeout, its last stderr line)."""
    child = start(module, *args, import_cwd=import_cwd, extra_env=extra_env)
    try:
        return child.wait(timeout), child.last_line()
    finally:
        child.close()


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
