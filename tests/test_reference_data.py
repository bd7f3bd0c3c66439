"""reference_models.data / idx / torch_data / keras_data: sources, IDX errors, identical pixels."""

from __future__ import annotations

import gzip
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from reference_models import data as data_mod
from reference_models.data import DataError, load_mnist, normalize_nchw, normalize_nhwc, read_idx_dir
from tests.conftest import NO_SHARED_MNIST_ENV, SHARED_MNIST, write_embedded_eval_idx


def write_idx(directory: Path, prefix: str, images: np.ndarray, labels: np.ndarray, *, gz: bool = True) -> None:
    """Write a valid IDX pair ``PREFIX-images-idx3-ubyte[.gz]`` / ``PREFIX-labels-idx1-ubyte[.gz]``."""
    suffix = ".gz" if gz else ""
    opener = gzip.open if gz else open
    with opener(directory / f"{prefix}-images-idx3-ubyte{suffix}", "wb") as f:
        f.write(struct.pack(">BBBBIII", 0, 0, 8, 3, *images.shape) + images.astype(np.uint8).tobytes())
    with opener(directory / f"{prefix}-labels-idx1-ubyte{suffix}", "wb") as f:
        f.write(struct.pack(">BBBBI", 0, 0, 8, 1, len(labels)) + labels.astype(np.uint8).tobytes())


def _digits(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), rng.integers(0, 10, n)


@pytest.mark.parametrize("gz", [True, False])
def test_idx_round_trip_and_split_choice(tmp_path: Path, gz: bool) -> None:
    train, test = _digits(7, 1), _digits(3, 2)
    write_idx(tmp_path, "train", *train, gz=gz)
    write_idx(tmp_path, "t10k", *test, gz=gz)
    for split, (images, labels) in (("train", train), ("eval", test)):
        got = load_mnist(str(tmp_path), split)
        assert got.images.dtype == np.uint8 and got.images.shape == images.shape
        assert got.labels.dtype == np.int64
        np.testing.assert_array_equal(got.images, images)
        np.testing.assert_array_equal(got.labels, labels)
        assert str(tmp_path) in got.source


def test_single_pair_serves_both_splits_and_torchvision_layout(tmp_path: Path) -> None:
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    write_idx(raw, "t10k", *_digits(4))
    assert len(load_mnist(str(tmp_path), "train")) == len(load_mnist(str(tmp_path), "eval")) == 4


def _truncate(path: Path) -> None:
    path.write_bytes(gzip.compress(gzip.decompress(path.read_bytes())[:-10]))


def _bad_magic(path: Path) -> None:
    path.write_bytes(gzip.compress(b"\x01\x02" + gzip.decompress(path.read_bytes())[2:]))


def _not_gzip(path: Path) -> None:
    path.write_bytes(b"this is not gzip data")


def _label_out_of_range(path: Path) -> None:
    raw = bytearray(gzip.decompress(path.read_bytes()))
    raw[-1] = 42
    path.write_bytes(gzip.compress(bytes(raw)))


def _fewer_labels(path: Path) -> None:
    raw = gzip.decompress(path.read_bytes())
    path.write_bytes(gzip.compress(struct.pack(">BBBBI", 0, 0, 8, 1, 4) + raw[8:12]))


CORRUPTIONS = [  # (file to damage, how, words the one-line message must contain)
    ("images", _truncate, "header promises"),
    ("images", _bad_magic, "bad magic"),
    ("images", _not_gzip, "corrupt IDX file"),
    ("labels", _label_out_of_range, "outside 0-9"),
    ("labels", _fewer_labels, "4 labels"),
    ("labels", Path.unlink, "no MNIST IDX files"),
]


@pytest.mark.parametrize("which, damage, words", CORRUPTIONS, ids=[c[1].__name__.strip("_") for c in CORRUPTIONS])
def test_corrupt_idx_raises_one_line_data_error(tmp_path: Path, which: str, damage, words: str) -> None:
    write_idx(tmp_path, "t10k", *_digits(5))
    damage(tmp_path / f"t10k-{which}-idx{3 if which == 'images' else 1}-ubyte.gz")
    with pytest.raises(DataError, match=words) as info:
        read_idx_dir(tmp_path, "eval")
    assert "\n" not in str(info.value)
    assert isinstance(info.value, ValueError)


def test_missing_directory_raises_data_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        load_mnist(str(tmp_path / "nope"), "eval")


def test_bad_split_raises() -> None:
    with pytest.raises(DataError, match="unknown split"):
        load_mnist("embedded", "test")


def test_official_test_set(mnist_dir: Path, mnist_official: bool) -> None:
    if not mnist_official:  # mnist_dir holds the 500 embedded eval digits: checked by the test below
        pytest.skip(f"official MNIST test set not found at {SHARED_MNIST} (or {NO_SHARED_MNIST_ENV} is set): "
                    "this test checks its 10,000 digits and class counts")
    arrays = load_mnist(str(mnist_dir), "eval")
    assert arrays.images.shape == (10000, 28, 28) and arrays.images.dtype == np.uint8
    assert np.bincount(arrays.labels).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def test_mnist_dir_fallback_is_the_embedded_eval_split_as_plain_idx(tmp_path: Path) -> None:
    """Without the official set, ``mnist_dir`` is the product's own 500 held-out digits, written as plain IDX."""
    write_embedded_eval_idx(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]
    images, labels = (tmp_path / "t10k-images-idx3-ubyte").read_bytes(), (tmp_path / "t10k-labels-idx1-ubyte").read_bytes()
    assert images[:16] == struct.pack(">IIII", 0x00000803, 500, 28, 28) and len(images) == 16 + 500 * 28 * 28
    assert labels[:8] == struct.pack(">II", 0x00000801, 500) and len(labels) == 8 + 500
    back, evals = read_idx_dir(tmp_path, "eval"), load_mnist("embedded", "eval")
    np.testing.assert_array_equal(back.images, evals.images)
    np.testing.assert_array_equal(back.labels, evals.labels)
    assert np.bincount(back.labels).tolist() == [50] * 10


def test_embedded_split_is_stratified_deterministic_and_disjoint() -> None:
    train, evals = load_mnist("embedded", "train"), load_mnist("embedded", "eval")
    assert (len(train), len(evals)) == (4500, 500)
    assert np.bincount(train.labels).tolist() == [450] * 10
    assert np.bincount(evals.labels).tolist() == [50] * 10
    images, labels = data_mod._embedded_all()
    train_idx, eval_idx = data_mod.embedded_split_indices(labels)
    assert not set(train_idx) & set(eval_idx)
    np.testing.assert_array_equal(data_mod.embedded_split_indices(labels)[1], eval_idx)
    np.testing.assert_array_equal(evals.images, images[eval_idx])
    assert evals.images.max() == 255 and evals.images.dtype == np.uint8


def test_auto_offline_falls_back_fast_with_one_notice(monkeypatch, tmp_path: Path, capsys) -> None:
    monkeypatch.setenv("TORCH2TF_DATA", str(tmp_path / "cache"))
    monkeypatch.setattr(data_mod, "_reachable", lambda url: False)
    data_mod._offline_notice.cache_clear()
    train, evals = load_mnist("auto", "train"), load_mnist("auto", "eval")
    assert (len(train), len(evals)) == (4500, 500)
    assert "embedded" in evals.source and "unreachable" in evals.source
    assert capsys.readouterr().err.count("notice: full MNIST") == 1


def test_auto_uses_torchvision_cache_when_present(monkeypatch, tmp_path: Path) -> None:
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    write_idx(raw, "train", *_digits(6, 1), gz=False)
    write_idx(raw, "t10k", *_digits(2, 2), gz=False)
    monkeypatch.setenv("TORCH2TF_DATA", str(tmp_path))
    monkeypatch.setattr(data_mod, "_reachable", lambda url: pytest.fail("no network probe when cached"))
    assert len(load_mnist("auto", "train")) == 6 and len(load_mnist("auto", "eval")) == 2


_TORCHVISION_CHECKS = r"""
import numpy as np, torch
from PIL import Image
from reference_models.data import load_mnist, normalize_nchw, normalize_nhwc
from reference_models.torch_data import mnist_transform, train_batches

# normalize_* is bit-identical to ToTensor() + Normalize((0.5,), (0.5,)), over every byte value
image = (np.arange(28 * 28) % 256).astype(np.uint8).reshape(28, 28)
expected = mnist_transform()(Image.fromarray(image, mode="L")).numpy()
got = normalize_nchw(image[None])[0]
assert got.dtype == np.float32 and got.shape == (1, 28, 28), (got.dtype, got.shape)
np.testing.assert_array_equal(got, expected)
np.testing.assert_array_equal(normalize_nhwc(image[None])[0, :, :, 0], expected[0])
assert (got.min(), got.max()) == (-1.0, 1.0)

# the tensor route and the torchvision route yield the same batches, same order
arrays = load_mnist("embedded", "eval")
fast = train_batches(arrays, loader="tensor", batch_size=50, seed=3)
slow = train_batches(arrays, loader="torchvision", batch_size=50, seed=3)
for batches in (fast, slow):
    batches.set_epoch(1)
fast_x, fast_y = map(torch.cat, zip(*fast))
slow_x, slow_y = map(torch.cat, zip(*slow))
assert fast_x.shape == (500, 1, 28, 28) and torch.equal(fast_y, slow_y)
assert torch.equal(fast_x, slow_x)
assert len(fast) == len(slow) == 10
print("ok")
"""


def test_torchvision_route_yields_bit_identical_pixels() -> None:
    """In a child process: importing torchvision after TensorFlow (other tests load it) segfaults."""
    from reference_models.testing import REPO

    done = subprocess.run([sys.executable, "-c", _TORCHVISION_CHECKS], capture_output=True, text=True, cwd=REPO,
                          timeout=300)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-3000:]


def test_tf_data_pipeline_yields_the_same_pixels() -> None:
    from reference_models.keras_data import eval_dataset, train_dataset
    from reference_models.quiet import import_tensorflow

    tf = import_tensorflow()
    arrays = load_mnist("embedded", "eval")
    x, y = zip(*eval_dataset(tf, arrays, batch_size=128).as_numpy_iterator())
    np.testing.assert_array_equal(np.concatenate(x), normalize_nhwc(arrays.images))
    np.testing.assert_array_equal(np.concatenate(y), arrays.labels)
    shuffled = list(train_dataset(tf, arrays, batch_size=64, seed=0).as_numpy_iterator())
    assert shuffled[0][0].shape == (64, 28, 28, 1) and shuffled[0][0].dtype == np.float32
    assert sum(len(b[1]) for b in shuffled) == 500
