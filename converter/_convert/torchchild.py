"""Start the PyTorch child process early: it imports torch (~2 s) while the parent is still starting up.

Standard library only, so the ``convert`` command can call :func:`prestart` before it imports anything heavy.
The child (``python -m converter._convert.torchstage``) imports torch at once, then reads its stage directory from
stdin; :func:`converter._convert.torchstage.start_isolated` writes the request there and hands the child that path.
"""

from __future__ import annotations

import subprocess
import tempfile
from typing import IO

from converter._proc import children

Child = tuple[subprocess.Popen, IO[bytes]]

#: The child :func:`prestart` started, until :func:`take` hands it out (at most one per process).
_prestarted: Child | None = None


def has_torch_side(spec: str) -> bool:
    """Whether a model source needs the PyTorch child (everything but an ``.onnx`` file)."""
    return not spec.endswith(".onnx")


def spawn(import_cwd: bool = True) -> Child:
    """A new child and the file its stderr goes to: an anonymous temporary file (a file, not a pipe, so a
    chatty child never blocks on a full pipe; nothing is left on disk).

    ``import_cwd``: see :func:`converter._proc.children.python_child`; the child dies with this process."""
    argv, env = children.python_child("converter._convert.torchstage", import_cwd=import_cwd)
    log = tempfile.TemporaryFile()
    proc = subprocess.Popen(argv, env=env, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=log)
    return proc, log


def stop(proc: subprocess.Popen, log: IO[bytes]) -> None:
    """Kill the child if it still runs; close its pipe and log."""
    if proc.poll() is None:
        proc.kill()
        proc.wait()
    if proc.stdin is not None and not proc.stdin.closed:
        try:
            proc.stdin.close()
        except BrokenPipeError:
            pass
    log.close()


def prestart() -> None:
    """Start the child now, before its request exists (the ``convert`` command, right after parsing)."""
    global _prestarted
    if _prestarted is None:
        _prestarted = spawn()


def take(import_cwd: bool = True) -> Child:
    """The prestarted child (handed out once; it imports from the current directory), else a new one."""
    global _prestarted
    if not import_cwd:
        discard()
    found, _prestarted = _prestarted, None
    return found if found is not None else spawn(import_cwd)


def discard() -> None:
    """Stop a prestarted child that was never taken (the command failed before its PyTorch stage)."""
    global _prestarted
    if _prestarted is not None:
        stop(*_prestarted)
        _prestarted = None
