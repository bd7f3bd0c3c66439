"""Start the PyTorch child process early: it imports torch (~2 s) while the parent is still starting up.

Standard library only, so the ``convert`` command can call :func:`prestart` before it imports anything heavy.
The child (``python -m converter._convert.torchstage``) imports torch at once, then reads its stage directory from
stdin; :func:`converter._convert.torchstage.start_isolated` writes the request there and hands the child that path.
"""

from __future__ import annotations

from converter._proc import children

Child = children.Spawned

#: The child :func:`prestart` started, until :func:`take` hands it out (at most one per process).
_prestarted: Child | None = None


def has_torch_side(spec: str) -> bool:
    """Whether a model source needs the PyTorch child (everything but an ``.onnx`` file)."""
    return not spec.endswith(".onnx")


def spawn(import_cwd: bool = True) -> Child:
    """A new PyTorch child (:func:`converter._proc.children.start`: dies with this process, stderr in an
    anonymous file); ``import_cwd``: see :func:`converter._proc.children.python_child`."""
    return children.start("converter._convert.torchstage", import_cwd=import_cwd, stdin=True)


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
        _prestarted.close()
        _prestarted = None
