"""Shared fixtures: the official MNIST test set, a trained reference net, and a CLI runner."""

from __future__ import annotations

# torchvision must be imported before TensorFlow in any process that uses both: importing it after TF
# segfaults (triton and TF each bundle LLVM). Tests import TF freely, so claim the order here.
import torchvision  # noqa: F401  isort: skip

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_MNIST = ROOT.parent / "shared" / "data" / "mnist"
BIN = Path(sys.executable).parent


@pytest.fixture(scope="session")
def mnist_dir() -> Path:
    """The official 10k MNIST test set (IDX). CI and developer machines have it beside the repo."""
    if not (SHARED_MNIST / "t10k-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"official MNIST test set not found at {SHARED_MNIST}")
    return SHARED_MNIST


def run_cli(tool: str, *args: str | os.PathLike, cwd: Path | None = None, timeout: int = 600,
            tmpdir: Path | None = None) -> subprocess.CompletedProcess:
    """Run a console command of this project (``convert``, ``train-reference``) as a user would
    (``tmpdir``: its TMPDIR, to check it leaves nothing behind)."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), **({"TMPDIR": str(tmpdir)} if tmpdir else {}))
    return subprocess.run([str(BIN / tool), *map(str, args)], capture_output=True, text=True, cwd=cwd or ROOT,
                          env=env, timeout=timeout)


@pytest.fixture(scope="session")
def trained_weights(tmp_path_factory) -> Path:
    """A reference net trained for 3 epochs on the embedded digits (~93 % on the official test set)."""
    out = tmp_path_factory.mktemp("trained") / "torch"
    result = run_cli("train-reference", "--framework", "torch", "--out", out, "--epochs", "3",
                     "--train-data", "embedded", "--eval-data", "embedded", "--seed", "0")
    assert result.returncode == 0, result.stderr
    return out / "model.pt"
