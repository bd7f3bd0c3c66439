"""Output directories that are written whole or not at all, and never at the cost of files the tool did not write.

Shared by ``convert`` and ``train-reference`` (standard library only). A run works in a staging directory
beside ``--out`` named ``.OUT.partial-PID-XXXX`` and moves it into place only when complete:

- ``--force`` replaces an existing ``--out`` only if the tool wrote it (``owned(out)``: its manifest is there);
  any other directory is refused, so a mistyped ``--out`` never deletes a user's files;
- an ``--out`` that is, or contains, the current directory or one of the run's inputs is refused;
- the move into place holds an exclusive lock on the parent directory, so two runs writing the same ``--out``
  are serialised: the later one finds the earlier one's result and replaces it (``--force``) or stops;
- staging directories of runs that no longer exist (killed with SIGKILL, a machine that lost power) are
  removed by the next run for the same ``--out`` (:func:`sweep`); a live run's are left alone.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path


class OutDirError(Exception):
    """``--out`` cannot be used; ``problem`` and ``fix`` become the command's one-line error."""

    def __init__(self, problem: str, fix: str) -> None:
        super().__init__(problem, fix)
        self.problem, self.fix = problem, fix


def check(out: Path, *, force: bool, owned: Callable[[Path], bool], what: str,
          inputs: Iterable[str | os.PathLike | None] = ()) -> Path:
    """Validate ``out`` before any work; returns it absolute. ``what`` names the tool's own file, for messages."""
    out = Path(out).expanduser().absolute()
    if out.exists() or out.is_symlink():
        if not out.is_dir():
            raise OutDirError(f"{out} exists and is not a directory", "choose another --out")
        if not owned(out):  # checked first: --force would not help, so it is not suggested
            if not any(out.iterdir()):
                raise OutDirError(f"{out} exists (empty) and this tool replaces only its own output",
                                  "remove the empty directory (rmdir) or choose another --out")
            raise OutDirError(f"{out} was not written by this tool (it holds no {what} that this tool wrote); "
                              "--force replaces only its own output", "choose another --out, or empty it yourself")
        if not force:
            raise OutDirError(f"{out} already exists (this tool's output)",
                              "pass --force (force=True in the API) to overwrite it, or choose another --out")
    real = out.resolve()
    if _within(Path.cwd().resolve(), real):
        raise OutDirError(f"--out {out} is the current directory or contains it",
                          "run from another directory, or choose another --out")
    for item in inputs:
        if item is not None and Path(item).exists() and _within(Path(item).resolve(), real):
            raise OutDirError(f"--out {out} contains the run's input {item}",
                              "choose an --out that holds none of the inputs")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        os.rmdir(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.probe-"))
    except OSError as exc:
        raise OutDirError(f"cannot write to {out.parent}: {exc.strerror or exc}",
                          "choose an --out in a writable directory") from None
    return out


def sweep(out: Path) -> list[Path]:
    """Remove the staging directories beside ``out`` left by runs whose process no longer exists; return them."""
    out = Path(out).absolute()
    removed = []
    pattern = re.compile(rf"\.{re.escape(out.name)}\.(partial|old)-(\d+)-")
    try:
        entries = list(out.parent.iterdir())
    except OSError:
        return removed
    for entry in entries:
        found = pattern.match(entry.name)
        if found and entry.is_dir() and not entry.is_symlink() and not _alive(int(found.group(2))):
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry)
    return removed


def make_staging(out: Path) -> Path:
    """A new, empty staging directory beside ``out``, named after this process."""
    try:
        staging = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.partial-{os.getpid()}-"))
        staging.chmod(0o777 & ~_umask())  # mkdtemp makes it 0700; --out is a normal directory once in place
        return staging
    except OSError as exc:
        raise OutDirError(f"cannot write to {out.parent}: {exc.strerror or exc}",
                          "choose an --out in a writable directory") from None


def move_into_place(staging: Path, out: Path, *, force: bool, owned: Callable[[Path], bool], what: str) -> None:
    """Replace ``out`` by ``staging`` (whole), under an exclusive lock on the parent directory."""
    with _locked(out.parent):
        if out.exists() or out.is_symlink():
            if not force:
                raise OutDirError(f"{out} was created by another run meanwhile",
                                  "pass --force to overwrite it, or choose another --out")
            if not out.is_dir() or not owned(out):
                raise OutDirError(f"{out} was replaced meanwhile by something this tool did not write (no {what})",
                                  "choose another --out")
            old = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.old-{os.getpid()}-"))
            os.replace(out, old / "previous")
            os.replace(staging, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(staging, out)


@contextlib.contextmanager
def staged(out: Path, *, force: bool, owned: Callable[[Path], bool], what: str) -> Iterator[Path]:
    """Yield a staging directory for ``out``; on a clean exit it replaces ``out``, on any error (or interrupt)
    it is removed and ``out`` is as it was."""
    staging = make_staging(out)
    try:
        yield staging
        move_into_place(staging, out, force=force, owned=owned, what=what)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` (or what it wraps) is the disk running out of space."""
    while exc is not None:
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if "No space left on device" in str(exc):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _within(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    fd = os.open(directory, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock
