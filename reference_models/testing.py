"""Helpers the ``tests/test_reference_*.py`` files share: data location, CLI runs, free ports.

Kept in the package (not a conftest) so each test file can import them; nothing here runs on import.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED_MNIST = REPO.parent / "shared" / "data" / "mnist"
# Lines TensorFlow/absl print at start-up; none may reach a user who did not ask for --verbose.
TF_CHATTER = ("I0000", "W0000", "absl::InitializeLog", "oneDNN", "cudart_stub", "rebuild TensorFlow",
              "This TensorFlow binary")


@dataclass(frozen=True)
class CliRun:
    """A finished ``train-reference`` subprocess."""

    returncode: int
    stdout: str
    stderr: str
    out: Path

    def metrics(self) -> dict:
        return json.loads((self.out / "metrics.json").read_text())


def run_cli(args: list[str], out: Path | None, *, env: dict | None = None, timeout: float = 300) -> CliRun:
    """Run ``python -m reference_models.cli ARGS [--out OUT]`` and capture everything."""
    cmd = [sys.executable, "-m", "reference_models.cli", *args]
    if out is not None:
        cmd += ["--out", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=REPO,
                          env={**os.environ, **(env or {})})
    return CliRun(proc.returncode, proc.stdout, proc.stderr, Path(out) if out else Path())


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
