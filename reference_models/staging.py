"""Write a run's artifacts into a temp directory beside ``--out`` and move them into place only on success.

So a failed or interrupted run leaves nothing half-written: either ``--out`` holds a complete set, or it is
untouched (the previous contents, if any, survive until the new set is complete).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from reference_models.errors import UsageError


def check_out_dir(out: Path, *, force: bool) -> Path:
    """Validate ``--out`` before any work: absent (or a directory and ``force``), parent writable.

    Creates missing parent directories. Returns the absolute path. Raises :class:`UsageError`.
    """
    out = Path(out).expanduser().absolute()
    if out.exists() or out.is_symlink():
        if not out.is_dir():
            raise UsageError(f"--out {out} exists and is not a directory; choose another path")
        if not force:
            raise UsageError(f"--out {out} already exists; pass --force to replace it or choose another path")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        probe = tempfile.mkdtemp(prefix=f".{out.name}.probe-", dir=out.parent)
        os.rmdir(probe)
    except OSError as err:
        raise UsageError(f"--out {out} is not writable ({err.strerror or err}); choose another path") from None
    return out


@contextlib.contextmanager
def staged_dir(out: Path, *, enabled: bool = True) -> Iterator[Path | None]:
    """Yield a fresh temp dir beside ``out``; on clean exit it replaces ``out``, on error it is deleted.

    With ``enabled`` false (a process that must not write, e.g. a DDP rank > 0) it yields ``None``.
    """
    if not enabled:
        yield None
        return
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    _swap_into_place(staging, out)


def _swap_into_place(staging: Path, out: Path) -> None:
    old = None
    if out.exists():  # --force: move the old set aside first, delete it only once the new one is in place
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
        os.replace(out, old / "previous")
    os.replace(staging, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
