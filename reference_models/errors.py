"""The error types the ``train-reference`` command maps to exit code 2 (one line on stderr, no traceback)."""

from __future__ import annotations


class ReferenceModelError(ValueError):
    """Base class: bad input a user can fix; ``str(err)`` is one line naming the problem and the fix."""


class DataError(ReferenceModelError):
    """A data source is missing, unreadable or corrupt (e.g. a truncated IDX file)."""


class UsageError(ReferenceModelError):
    """Bad command-line options (unknown framework, epochs <= 0, ``--out`` exists, ...)."""
