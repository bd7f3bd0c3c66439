"""The inputs every runtime sees: real MNIST digits, a user's ``.npy``/``.npz``/IDX directory, or seeded noise.

All arrays are in the PyTorch layout, in the model's input dtypes, with the batch axis first. A user's file is
checked before any model runs on it (:func:`check_samples`; an ``.npz`` also by input name, dtype kind, sample
count and ``--input-range``): a wrong file is one line and exit 2, never a model error far from its cause.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from converter.errors import InputError


@dataclass(frozen=True)
class ParityData:
    inputs: list[np.ndarray]  # one [N, ...] array per model input
    labels: np.ndarray | None
    description: str
    #: the user's or MNIST data (full int8 may calibrate on it); False for seeded noise, never used to calibrate
    real: bool = True


def load_parity_data(
    source: str,
    input_shapes: list[tuple[int, ...]],
    input_dtypes: list[np.dtype],
    samples: int,
    seed: int = 0,
    ranges: tuple[tuple[int, int], ...] = (),
    names: Sequence[str] = (),
) -> ParityData:
    """``mnist`` (real held-out digits), ``random`` (seeded), or a PATH: an IDX directory, an ``.npy`` (one input), or
    an ``.npz`` with one array per input, keyed by the input ``names`` (what the artifacts call them)."""
    if samples < 1:  # else a ZeroDivisionError in the metrics, or numpy's complaint about a negative size
        raise InputError(f"--parity-samples {samples} is not a positive number of samples",
                         "pass at least 1 (default: 1000 for mnist_cnn, 100 otherwise), or --no-parity")
    if source == "random":
        return _random(input_shapes, input_dtypes, samples, seed, ranges, names)
    if source == "mnist":
        from reference_models.data import DataError, load_mnist

        try:
            arrays = load_mnist("auto", "eval")
        except DataError as exc:
            raise InputError(str(exc)) from None
        return _mnist(arrays, input_shapes, samples, seed)
    path = Path(source)
    if not path.exists():
        raise InputError(f"--parity-data {source} does not exist",
                         "pass mnist, random, an IDX directory, a .npy or an .npz file")
    if path.is_dir():
        from reference_models.data import DataError, read_idx_dir

        try:
            arrays = read_idx_dir(path)
        except DataError as exc:
            raise InputError(str(exc)) from None
        return _mnist(arrays, input_shapes, samples, seed)
    if path.suffix == ".npy":
        return _npy(path, input_shapes, input_dtypes, samples)
    if path.suffix == ".npz":
        inputs = _npz(path, list(names), input_shapes, input_dtypes, samples, ranges)
        return ParityData(inputs, None, f"{len(inputs[0])} samples from {path.name} ({', '.join(names)})")
    raise InputError(f"--parity-data {source} is neither a directory nor a .npy or .npz file",
                     "pass mnist, random, an IDX directory, a .npy or an .npz file")


def _mnist(arrays, input_shapes, samples: int, seed: int) -> ParityData:
    from reference_models.data import normalize_nchw

    if len(input_shapes) != 1 or tuple(input_shapes[0][1:]) != (1, 28, 28):
        shapes = " ".join(",".join(map(str, s)) for s in input_shapes)
        raise InputError(f"MNIST parity data has shape [N,1,28,28] but the model takes {shapes}",
                         "pass --parity-data random or a .npy file of the model's input shape")
    count = min(samples, len(arrays.labels))
    # a fixed, seeded subset so the same seed always compares the same digits
    index = np.sort(np.random.default_rng(seed).permutation(len(arrays.labels))[:count])
    images = check_samples(normalize_nchw(arrays.images[index]), f"--parity-data {arrays.source}")
    return ParityData([images], arrays.labels[index].astype(np.int64), f"{count} real MNIST digits: {arrays.source}")


def is_padding_mask(name: str, shape: Sequence[int], dtype, value_range: tuple[int, int] | None) -> bool:
    """Whether an input is a [N, seq] padding mask (``attention_mask``, ``padding_mask``, ``*_mask``: bool, or integer
    in [0, 2)), whose seeded data is a run of 1s then 0s per sample, as a tokenizer pads a batch: uniform 0/1 noise
    would mask the first key of a causal model's early query rows, whose outputs are then meaningless in every
    runtime (and differ between them), so parity would judge noise."""
    binary = np.issubdtype(dtype, np.bool_) or (np.issubdtype(dtype, np.integer) and tuple(value_range or (0, 2)) == (0, 2))
    return binary and len(shape) == 2 and name.lower().endswith("mask")


def _padding_masks(rng: np.random.Generator, samples: int, length: int, dtype) -> np.ndarray:
    """[samples, length]: sample i keeps its first L_i positions (L_i uniform in 1..length), the rest padded."""
    kept = rng.integers(1, length + 1, size=samples) if length else np.zeros(samples, np.int64)
    return (np.arange(length)[None, :] < kept[:, None]).astype(dtype)


def _random(input_shapes, input_dtypes, samples: int, seed: int, ranges: tuple[tuple[int, int], ...] = (),
            names: Sequence[str] = ()) -> ParityData:
    rng = np.random.default_rng(seed)
    inputs, kinds = [], []
    for k, (shape, dtype) in enumerate(zip(input_shapes, input_dtypes)):
        full = (samples, *shape[1:])
        name = names[k] if k < len(names) else ""
        if is_padding_mask(name, shape, dtype, ranges[k] if k < len(ranges) else None):
            inputs.append(_padding_masks(rng, samples, int(shape[1]), dtype))
            kinds.append("padding masks (1s then 0s)")
        elif np.issubdtype(dtype, np.integer):
            low, high = ranges[k] if k < len(ranges) else (0, 2)  # --input-range, drawn uniformly in [low, high)
            inputs.append(rng.integers(low, high, size=full).astype(dtype))
            kinds.append(f"{np.dtype(dtype)} in [{low}, {high})")
        elif np.issubdtype(dtype, np.bool_):
            inputs.append(rng.integers(0, 2, size=full).astype(bool))
            kinds.append("bool")
        else:
            inputs.append(rng.standard_normal(full).astype(dtype))
            kinds.append("N(0,1)")
    # each input by name when the names are known (a text model checked on token ids 0 and 1 only must not read as
    # "N(0,1)"); without names, each kind once
    what = (", ".join(f"{n}: {k}" for n, k in zip(names, kinds)) if len(names) == len(kinds) > 1
            else ", ".join(dict.fromkeys(kinds)))
    return ParityData(inputs, None, f"{samples} seeded samples: {what} (seed {seed})", real=False)


def _npy(path: Path, input_shapes, input_dtypes, samples: int) -> ParityData:
    if len(input_shapes) != 1:
        raise InputError(f"a .npy parity file feeds one input but the model has {len(input_shapes)}",
                         "save one array per input name with numpy.savez (an .npz), or pass --parity-data random")
    try:
        array = np.load(path, allow_pickle=False)
    except Exception as exc:
        raise InputError(f"cannot read {path}: {_numpy_reason(exc)}", "pass a file written by numpy.save") from None
    array = check_samples(array, str(path), input_shapes[0])
    with np.errstate(over="ignore"):  # checked again once cast: a float64 beyond float32's range becomes Inf
        array = check_samples(array[:samples].astype(input_dtypes[0], copy=False), f"{path} (as {input_dtypes[0]})")
    return ParityData([np.ascontiguousarray(array)], None, f"{len(array)} samples from {path.name}")


def _npz(path: Path, names: list[str], input_shapes, input_dtypes, samples: int,
         ranges: tuple[tuple[int, int], ...]) -> list[np.ndarray]:
    """One array per input name from ``path`` (``numpy.savez``), in the model's input order and dtypes.

    Refused, each in one line naming the key: a missing or extra key, a shape that is not the input's, float data
    for an integer or bool input (a cast would silently truncate), integers that do not fit the input's dtype or
    fall outside its ``--input-range``, bool data that is not 0/1, arrays with different sample counts, and
    (:func:`check_samples`) empty or non-finite arrays."""
    if len(names) != len(input_shapes):  # a caller that does not know the names yet: no key can be matched
        raise InputError(f"--parity-data {path.name}: the model's input names are not known here",
                         "pass the .npz to the convert command, or ParityData in the API")
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
    except Exception as exc:
        raise InputError(f"cannot read {path}: {_numpy_reason(exc)}",
                         "pass a file written by numpy.savez, one array per input name") from None
    listed = ", ".join(names)
    for name in names:
        if name not in arrays:
            raise InputError(f"--parity-data {path.name} has no array {name!r} (the model's inputs: {listed})",
                             f"save one array per input name, e.g. numpy.savez(path, {'=..., '.join(names)}=...)")
    extra = [key for key in arrays if key not in names]
    if extra:
        raise InputError(f"--parity-data {path.name} holds {extra[0]!r}, which is no input of the model "
                         f"(its inputs: {listed})", "drop that array or name it after an input (--input-name sets "
                         "the names)")
    inputs = []
    for k, (name, shape, dtype) in enumerate(zip(names, input_shapes, input_dtypes)):
        what = f"--parity-data {path.name}[{name!r}]"
        array = check_samples(arrays[name], what, shape)
        inputs.append(_as_input(array, np.dtype(dtype), what, ranges[k] if k < len(ranges) else None))
    counts = {name: len(a) for name, a in zip(names, inputs)}
    if len(set(counts.values())) > 1:
        text = ", ".join(f"{name!r} {n}" for name, n in counts.items())
        raise InputError(f"--parity-data {path.name} holds different sample counts ({text})",
                         "save the same number of samples N for every input: sample i of each array goes together")
    return [np.ascontiguousarray(a[:samples]) for a in inputs]


def _as_input(array: np.ndarray, dtype: np.dtype, what: str, value_range: tuple[int, int] | None) -> np.ndarray:
    """``array`` in the input's ``dtype``, refused where the cast would change a value or the kind of data."""
    if array.dtype.kind not in "iubf":  # complex: a cast would drop the imaginary part
        raise InputError(f"{what} holds {array.dtype} values", "save real numbers (integers, floats or bools)")
    if dtype.kind in "iub":
        if array.dtype.kind == "f":
            raise InputError(f"{what} holds {array.dtype} values but the input is {dtype}",
                             f"save it as integers, e.g. ids.astype(np.{dtype}) (a cast would truncate silently)")
        low, high = (int(array.min()), int(array.max())) if array.size else (0, 0)
        limits = (0, 1) if dtype.kind == "b" else (np.iinfo(dtype).min, np.iinfo(dtype).max)
        if low < limits[0] or high > limits[1]:
            raise InputError(f"{what} holds values in [{low}, {high}], beyond {dtype}'s [{limits[0]}, {limits[1]}]",
                             "save values the input can hold")
        if value_range is not None and dtype.kind != "b" and (low < value_range[0] or high >= value_range[1]):
            raise InputError(f"{what} holds values in [{low}, {high}], outside --input-range "
                             f"{value_range[0]},{value_range[1]} (LOW <= value < HIGH)",
                             "fix the data, or widen --input-range to the model's real range (e.g. its vocabulary)")
    with np.errstate(over="ignore"):  # a float64 beyond float16/32's range becomes Inf: refused as non-finite
        return check_samples(array.astype(dtype, copy=False), f"{what} (as {dtype})")


def check_samples(array: np.ndarray, what: str, input_shape: Sequence[int] | None = None) -> np.ndarray:
    """The one check of user-supplied model inputs (``--parity-data`` and ``--calibration-data``), in the order a
    user fixes them: the shape (when ``input_shape``, the model input's PyTorch shape, is known), then at least
    one sample, then every value finite. Returns ``array``, with a batch axis added when it holds exactly one
    sample without one. ``what`` names the data in the message (e.g. ``--calibration-data x.npy``).

    Why refuse rather than carry on: no samples divides by zero in the metrics (or leaves TFLite nothing to
    calibrate on), and a NaN/Inf input makes every runtime's output NaN/Inf where parity cannot judge it, or
    poisons every int8 range; both would surface far from their cause, or pass vacuously.
    """
    if input_shape is not None:
        want = tuple(input_shape[1:])
        if array.ndim == len(want) and tuple(array.shape) == want:
            array = array[None]
        if tuple(array.shape[1:]) != want:
            raise InputError(f"{what} holds shape {list(array.shape)} but the model input is [N,{','.join(map(str, want))}]",
                             "save the inputs as one array of shape [N, *input_shape[1:]] in the PyTorch layout")
    if array.ndim == 0 or array.size == 0:
        raise InputError(f"{what} holds no samples (shape {list(array.shape)})",
                         "save at least one sample, as an array of shape [N, *input_shape[1:]]")
    if not np.issubdtype(array.dtype, np.number) and array.dtype != np.bool_:
        raise InputError(f"{what} holds {array.dtype} values, not numbers",
                         "save the inputs as a numeric array with numpy.save")
    if np.issubdtype(array.dtype, np.inexact):
        bad = int(array.size - np.count_nonzero(np.isfinite(array)))
        if bad:
            raise InputError(f"{what} holds {bad} non-finite values (NaN/Inf) of {array.size}",
                             "replace or drop those samples; every input must be a finite number")
    return array


def load_calibration(path: str | Path) -> np.ndarray:
    """A ``--calibration-data`` ``.npy`` as float32, refused (before any export) when unreadable, empty or not
    all finite; its shape is checked against the model's inputs once they are known
    (:func:`converter._convert.artifacts.check_calibration`), by the same :func:`check_samples`."""
    try:
        array = np.load(path, allow_pickle=False)
    except Exception as exc:
        raise InputError(f"cannot read --calibration-data {path}: {_numpy_reason(exc)}",
                         "pass an .npy array [N, *input_shape[1:]] in the PyTorch layout") from None
    what = f"--calibration-data {path}"
    with np.errstate(over="ignore"):  # a float64 beyond float32's range becomes Inf: refused as non-finite
        return check_samples(check_samples(array, what).astype(np.float32), f"{what} (as float32)")


def _numpy_reason(exc: Exception) -> str:
    """Why ``numpy.load(allow_pickle=False)`` refused a file, in a few words: Python objects (a pickle, which is
    never loaded) said as such; anything else as the exception's type."""
    if "allow_pickle=False" in str(exc):
        return "it holds Python objects (a pickle, which is never loaded); save numeric arrays"
    return type(exc).__name__
