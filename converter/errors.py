"""Error types the CLI maps to exit codes.

The exit-code contract of ``convert``: 0 converted (or checked) and parity passed; 1 parity failed, or ``--check``
found an artifact changed since it was written (the artifacts are kept); 2 bad input or a failed conversion
(nothing written); 130 / 143 interrupted by SIGINT / SIGTERM (nothing written).

Every error carries a one-line message that names the problem *and* the fix; the CLI prints it as
``convert: error: <message>`` and exits with :attr:`ConverterError.exit_code`, never a traceback.
"""

from __future__ import annotations

import re

EXIT_OK = 0
EXIT_PARITY_FAILED = 1
EXIT_BAD_INPUT = 2


#: Terminal colour codes (torch.export prints ``\x1b[96m``): never part of a one-line error
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def first_line(exc: BaseException, limit: int = 200) -> str:
    """The first non-empty line of ``exc``'s message, cut at a word boundary within ``limit`` characters
    (the exception's type name when it has no message): what a one-line error quotes of a library's failure."""
    lines = [ln.strip() for ln in _ANSI.sub("", str(exc)).splitlines() if ln.strip()]
    if not lines:
        return type(exc).__name__
    return cut(lines[0], limit)


def cut(text: str, limit: int) -> str:
    """``text`` within ``limit`` characters, cut at a word boundary with an ellipsis (never mid-word)."""
    return text if len(text) <= limit else text[:limit].rsplit(" ", 1)[0].rstrip(" ,;:") + " …"


class ConverterError(Exception):
    """Base class: bad input or a conversion that cannot proceed (exit code 2)."""

    exit_code = EXIT_BAD_INPUT

    def __init__(self, problem: str, fix: str | None = None) -> None:
        message = problem if not fix else f"{problem} — {fix}"
        super().__init__(" ".join(message.split()))  # one line, always


class InputError(ConverterError):
    """The user's arguments, files or data are wrong."""


class ModelLoadError(InputError):
    """The model, its weights or its callable cannot be loaded."""


class ExportError(ConverterError):
    """torch -> ONNX failed (the model cannot be traced with the given inputs)."""


class TensorFlowConversionError(ConverterError):
    """ONNX -> TensorFlow failed (an op onnx2tf cannot convert, or an export that TF rejects)."""


class ArtifactsChanged(ConverterError):
    """``--check``: an artifact differs from what ``convert`` recorded (exit code 1: the artifacts fail the gate)."""

    exit_code = EXIT_PARITY_FAILED


class ParityFailed(ConverterError):
    """A parity report failed (exit code 1: the artifacts are kept). Raised by
    :meth:`converter.parity.judge.ParityReport.raise_if_failed` and :func:`converter.testing.assert_parity`; the
    CLI returns exit code 1 instead of raising.

    The message is one line naming the failing rows and their reasons; anything after a first line (the report's
    table) becomes the exception's note, which a traceback and pytest show under the message. ``report``: the
    :class:`~converter.parity.judge.ParityReport`, when raised from one."""

    exit_code = EXIT_PARITY_FAILED

    def __init__(self, problem: str, fix: str | None = None) -> None:
        first, _, details = problem.strip().partition("\n")
        super().__init__(first, fix)
        self.report = None
        if details.strip():
            self.add_note(details.strip("\n"))
