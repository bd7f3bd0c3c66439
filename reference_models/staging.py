"""Write a run's artifacts into a staging directory beside ``--out`` and move them into place only on success.

So a failed or interrupted run leaves nothing half-written: either ``--out`` holds a complete set, or it is
untouched (the previous contents, if any, survive until the new set is complete). The machinery is the
converter's (:mod:`converter._convert.outdir`): ``--force`` replaces only a directory this command wrote (one with its
``metrics.json``), an ``--out`` holding the current directory is refused, and staging directories of killed runs
are swept by the next run.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path

from converter._convert import outdir
from reference_models.errors import UsageError

#: The file every training run writes: its presence is what makes a directory this command's own output.
OWN_FILE = "metrics.json"


def _owned(out: Path) -> bool:
    return (out / OWN_FILE).is_file()


def check_out_dir(out: Path, *, force: bool) -> Path:
    """Validate ``--out`` before any work: absent (or, with ``force``, a previous run's output), parent writable.

    Creates missing parent directories. Returns the absolute path. Raises :class:`UsageError`.
    """
    for left in outdir.sweep(out):
        print(f"train-reference: removed {left.name}, left beside --out by a run that no longer exists",
              file=sys.stderr)
    try:
        return outdir.check(out, force=force, owned=_owned, what=OWN_FILE)
    except outdir.OutDirError as exc:
        raise UsageError(f"--out: {exc.problem}; {exc.fix}") from None


@contextlib.contextmanager
def staged_dir(out: Path, *, enabled: bool = True, force: bool = True) -> Iterator[Path | None]:
    """Yield a fresh staging dir beside ``out``; on clean exit it replaces ``out``, on error it is deleted.

    With ``enabled`` false (a process that must not write, e.g. a DDP rank > 0) it yields ``None``.
    """
    if not enabled:
        yield None
        return
    try:
        with outdir.staged(out, force=force, owned=_owned, what=OWN_FILE) as staging:
            yield staging
    except outdir.OutDirError as exc:
        raise UsageError(f"--out: {exc.problem}; {exc.fix}") from None
