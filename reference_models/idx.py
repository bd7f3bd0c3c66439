"""Read the IDX files MNIST ships in (``*-images-idx3-ubyte[.gz]``, ``*-labels-idx1-ubyte[.gz]``).

Format (big-endian): two zero bytes, a type byte (0x08 = unsigned byte), a dimension count, one uint32 per
dimension, then the data. Every way a file can be wrong raises :class:`DataError` with one line that names
the file, what is wrong and how to fix it.
"""

from __future__ import annotations

import gzip
import re
import zlib
from pathlib import Path

import numpy as np

from reference_models.errors import DataError

_UBYTE = 0x08
_FIX = "re-download it (e.g. torchvision.datasets.MNIST(root, download=True)) or point at another directory"
# "train-images-idx3-ubyte", "t10k-labels-idx1-ubyte.gz", and the "t10k-images.idx3-ubyte" spelling.
_IDX_NAME = re.compile(r"^(?P<prefix>.+?)-(?P<kind>images|labels)[-.]idx(?P<ndim>[13])-ubyte(?:\.gz)?$")


def read_idx_file(path: Path, expect_ndim: int) -> np.ndarray:
    """Return the uint8 array stored in one IDX file (optionally gzipped); raise DataError if it is not one."""
    raw = _read_bytes(path)
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise DataError(f"corrupt IDX file {path}: bad magic number; {_FIX}")
    dtype, ndim = raw[2], raw[3]
    if dtype != _UBYTE or ndim != expect_ndim:
        raise DataError(
            f"corrupt IDX file {path}: header says type 0x{dtype:02x} with {ndim} dims, "
            f"expected 0x08 with {expect_ndim}; {_FIX}"
        )
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"corrupt IDX file {path}: truncated header; {_FIX}")
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    want = int(np.prod(shape))
    if len(raw) - header != want:
        raise DataError(
            f"corrupt IDX file {path}: header promises {want} bytes of data for shape {shape}, "
            f"found {len(raw) - header}; {_FIX}"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape).copy()


def _read_bytes(path: Path) -> bytes:
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                return f.read()
        return path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"missing IDX file {path}; {_FIX}") from None
    except (OSError, EOFError, zlib.error) as err:  # gzip.BadGzipFile is an OSError
        raise DataError(f"corrupt IDX file {path}: {err}; {_FIX}") from None


def find_idx_pairs(directory: Path) -> dict[str, tuple[Path, Path]]:
    """Map each prefix (``train``, ``t10k``, ...) to its (images, labels) files in ``directory``.

    Prefixes with only one of the two files are left out; the plain file wins over its ``.gz`` twin.
    """
    found: dict[tuple[str, str], Path] = {}
    for path in sorted(directory.iterdir(), key=lambda p: (p.name.endswith(".gz"), p.name), reverse=True):
        match = _IDX_NAME.match(path.name)
        if match and path.is_file():
            found[(match["prefix"], match["kind"])] = path
    prefixes = {prefix for prefix, _ in found}
    return {
        prefix: (found[(prefix, "images")], found[(prefix, "labels")])
        for prefix in sorted(prefixes)
        if (prefix, "images") in found and (prefix, "labels") in found
    }


def read_idx_pair(images_path: Path, labels_path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Read and cross-check one images/labels pair: 28x28 images, labels 0-9, equal counts."""
    images = read_idx_file(images_path, expect_ndim=3)
    labels = read_idx_file(labels_path, expect_ndim=1)
    if images.shape[1:] != (28, 28):
        raise DataError(f"{images_path} holds {images.shape[1]}x{images.shape[2]} images, MNIST is 28x28; {_FIX}")
    if len(images) != len(labels):
        raise DataError(
            f"{images_path} has {len(images)} images but {labels_path} has {len(labels)} labels; {_FIX}"
        )
    if len(labels) and int(labels.max()) > 9:
        raise DataError(f"corrupt IDX file {labels_path}: label {int(labels.max())} outside 0-9; {_FIX}")
    return images, labels.astype(np.int64)
