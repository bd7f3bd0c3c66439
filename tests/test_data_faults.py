"""Faulty data: NaN/Inf and empty inputs, NaN weights, NaN outputs, ``.npz`` parity data, ``--class-axis``.

Bad data a user hands over (``--parity-data``, ``--calibration-data``, ``train-reference --train-data``) is refused
with exit 2 and one line naming the problem; a model that *outputs* NaN/Inf converts, and its parity report fails
(exit 1) naming how many samples the reference outputs NaN/Inf for, never a bogus layout error or a traceback.
An ``.npz`` (one array per input name) feeds a multi-input model its real, typed data.
"""

from __future__ import annotations

import struct
import warnings
from pathlib import Path

import numpy as np
import pytest

from converter._convert import layout
from converter.errors import InputError
from converter.parity.judge import compare, reference_warnings, tolerance_for
from converter.parity.data import check_samples, load_parity_data
from tests.conftest import message_lines, run_cli

NAN, INF = float("nan"), float("inf")
SAMPLES = "20"


# ------------------------------------------------------------------------------------------ layout detection

def _image(shape=(1, 2, 3, 5), nan_at=((0, 1, 2, 4), (0, 0, 0, 0))) -> np.ndarray:
    x = np.arange(np.prod(shape), dtype=np.float32).reshape(shape) - 7.0
    for index in nan_at:
        x[index] = NAN
    return x


def _nhwc(x: np.ndarray) -> np.ndarray:
    return np.transpose(x, layout.channels_last(x.ndim))


_CUBE = np.random.default_rng(0).standard_normal((1, 4, 4, 4)).astype(np.float32)
_CUBE[0, 1, 2, 3] = NAN
_TF_NAN = _nhwc(_image(nan_at=()))
_TF_NAN[0, 0, 0, 1] = NAN  # TF adds a NaN of its own where ONNX is finite: still the right layout, parity says the rest
DETECT_CASES = [
    # id, reference (ONNX), candidate (TF), expected permutation
    ("2-D logits with NaN", np.array([[1.0, NAN, 3.0]], np.float32), np.array([[1.0, NAN, 3.0]], np.float32), (0, 1)),
    ("NCHW with NaN, TF returns NHWC", _image(), _nhwc(_image()), (0, 2, 3, 1)),
    ("NCHW with NaN, TF keeps NCHW", _image(), _image(), (0, 1, 2, 3)),
    ("NaN and Inf at the same places", np.array([[INF, NAN, -INF, 2.0]]), np.array([[INF, NAN, -INF, 2.0]]), (0, 1)),
    ("square cube: the NaN mask and the values decide", _CUBE, _nhwc(_CUBE), (0, 2, 3, 1)),
    ("TF adds a NaN where ONNX is finite", _image(nan_at=()), _TF_NAN, (0, 2, 3, 1)),
    ("all NaN, shapes tell the layouts apart", np.full((1, 2, 3, 5), NAN), np.full((1, 3, 5, 2), NAN), (0, 2, 3, 1)),
    ("all NaN, both layouts have the same shape", np.full((1, 4, 4, 4), NAN), np.full((1, 4, 4, 4), NAN), None),
    ("all NaN, no layout has TF's shape", np.full((1, 10), NAN), np.full((1, 9), NAN), None),
]


@pytest.mark.parametrize(("case", "reference", "candidate", "perm"), DETECT_CASES, ids=[c[0] for c in DETECT_CASES])
def test_detect_perm_treats_matching_nan_as_equal(case, reference, candidate, perm) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "invalid value" RuntimeWarning from NaN/Inf arithmetic either
        assert layout.detect_perm(reference, candidate) == perm


# ------------------------------------------------------------------------------------------ parity.compare

def _logits() -> np.ndarray:
    ref = np.tile(np.array([[3.0, 1.0, -1.0, 0.5]], np.float32), (6, 1))
    ref[2, 1] = NAN
    ref[4, 3] = INF
    return ref


def _with(value: float, at: tuple[int, int], base: np.ndarray | None = None) -> np.ndarray:
    x = (_logits() if base is None else base).copy()
    x[at] = value
    return x


COMPARE_CASES = [
    # id, runtime output (the reference is _logits()), passed, fragment of the reason
    ("same NaN/Inf, same values", _logits(), True, ""),
    ("same NaN/Inf, a finite value off", _with(3.001, (0, 0)), False, "|Δ|"),
    ("NaN where the reference is finite", _with(NAN, (1, 0)), False, "1 NaN/Inf values where the reference is finite"),
    ("finite where the reference is NaN", _with(1.0, (2, 1)), False, "1 finite values where the reference is NaN/Inf"),
    ("-Inf where the reference is +Inf", _with(-INF, (4, 3)), False, "1 NaN/Inf values of another kind"),
    ("NaN where the reference is +Inf", _with(NAN, (4, 3)), False, "1 NaN/Inf values of another kind"),
]


@pytest.mark.parametrize(("case", "got", "passed", "reason"), COMPARE_CASES, ids=[c[0] for c in COMPARE_CASES])
@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_compare_matches_nan_masks_before_values(case, got, passed, reason, precision) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        row = compare("tflite", precision, None, [_logits()], [got], None, None, tolerance_for(precision))
    if precision != "fp32" and reason == "|Δ|":  # reduced precisions judge agreement and cosine, not |Δ|
        passed, reason = True, ""
    assert row.passed is passed, row.reason
    assert reason in row.reason
    if passed:  # errors are measured on the finite positions: finite numbers, not NaN
        assert np.isfinite([row.max_abs_err, row.mean_abs_err, row.max_rel_err, row.cosine_min]).all()
    if "NaN/Inf" in reason:
        assert "sample" in row.reason


# ------------------------------------------------------------------------------------------ reference_warnings

def test_reference_warnings_count_samples_with_nan_or_inf() -> None:
    ref = np.tile(np.array([[2.0, -1.0, 0.5]], np.float32), (100, 1))
    ref[[3, 40, 41], 0] = NAN
    ref[40, 2] = INF  # a second bad value in a sample already counted
    ref[77, 1] = -INF
    scale, found = reference_warnings([ref, np.ones((100, 2), np.float32)], None, reference_name="pytorch",
                                      output_names=["logits", "aux"])
    assert found == ["the reference (pytorch) outputs NaN/Inf for 4 of 100 samples (output 'logits'): parity cannot "
                     "judge them — fix the model or its weights"]
    assert scale == 2.0  # the largest finite magnitude, not Inf


def test_reference_warnings_all_nan_is_one_warning_not_a_flat_one() -> None:
    scale, found = reference_warnings([np.full((20, 10), NAN, np.float32)])
    assert scale == 0.0
    assert len(found) == 1 and "NaN/Inf for 20 of 20 samples (output #0)" in found[0], found


# ------------------------------------------------------------------------------------------ check_samples

SAMPLE_CASES = [
    # id, array, model input shape (None: unknown yet), fragment of the error (None: accepted)
    ("fits", np.zeros((3, 1, 4, 4), np.float32), (1, 1, 4, 4), None),
    ("one sample without its batch axis", np.zeros((1, 4, 4), np.float32), (1, 1, 4, 4), None),
    ("integers are finite", np.zeros((3, 5), np.int64), (1, 5), None),
    ("wrong shape", np.zeros((10, 3, 4, 4), np.float32), (1, 1, 4, 4), "holds shape [10, 3, 4, 4] but the model "
                                                                        "input is [N,1,4,4]"),
    ("no samples", np.zeros((0, 1, 4, 4), np.float32), (1, 1, 4, 4), "holds no samples (shape [0, 1, 4, 4])"),
    ("no samples, shape unknown", np.zeros((0, 3, 8, 8), np.float32), None, "holds no samples"),
    ("a scalar", np.array(1.0), None, "holds no samples"),
    ("NaN and Inf", np.array([[0.0, NAN], [INF, -INF]]), None, "holds 3 non-finite values (NaN/Inf) of 4"),
    ("text", np.array([["a", "b"]]), None, "values, not numbers"),
]


@pytest.mark.parametrize(("case", "array", "shape", "error"), SAMPLE_CASES, ids=[c[0] for c in SAMPLE_CASES])
def test_check_samples(case, array, shape, error) -> None:
    if error is None:
        checked = check_samples(array, "data.npy", shape)
        assert checked.ndim == len(shape) and checked.shape[1:] == tuple(shape[1:])
        return
    with pytest.raises(InputError) as info:
        check_samples(array, "data.npy", shape)
    assert str(info.value).startswith("data.npy ") and error in str(info.value), str(info.value)


# ------------------------------------------------------------------------------------------ .npz parity data

_IDS = np.random.default_rng(0).integers(0, 100, (8, 6)).astype(np.int64)
_MASK = np.ones((8, 6), np.int64)
_TEXT = {"input_ids": _IDS, "attention_mask": _MASK}
_NAMES, _SHAPES, _INT64 = ["input_ids", "attention_mask"], [(1, 6), (1, 6)], [np.dtype(np.int64)] * 2
_FLOATS = np.zeros((8, 4), np.float32)
_FLOATS[3, 1], _FLOATS[5, 2] = NAN, INF
NPZ_CASES = [
    # id, arrays saved, input names, shapes, dtypes, --input-range, fragment of the error (None: accepted)
    ("ids and mask", _TEXT, _NAMES, _SHAPES, _INT64, (), None),
    ("keys in another order", {"attention_mask": _MASK, "input_ids": _IDS}, _NAMES, _SHAPES, _INT64, (), None),
    ("inside --input-range", _TEXT, _NAMES, _SHAPES, _INT64, ((0, 100), (0, 2)), None),
    ("a bool mask for an int64 input", {**_TEXT, "attention_mask": _MASK.astype(bool)}, _NAMES, _SHAPES, _INT64, (),
     None),
    ("int32 ids for an int64 input", {**_TEXT, "input_ids": _IDS.astype(np.int32)}, _NAMES, _SHAPES, _INT64, (), None),
    ("a missing key", {"input_ids": _IDS}, _NAMES, _SHAPES, _INT64, (),
     "has no array 'attention_mask' (the model's inputs: input_ids, attention_mask) — save one array per input "
     "name, e.g. numpy.savez(path, input_ids=..., attention_mask=...)"),
    ("an extra key", {**_TEXT, "token_type_ids": _MASK}, _NAMES, _SHAPES, _INT64, (),
     "holds 'token_type_ids', which is no input of the model (its inputs: input_ids, attention_mask)"),
    ("float ids", {**_TEXT, "input_ids": _IDS.astype(np.float32)}, _NAMES, _SHAPES, _INT64, (),
     "['input_ids'] holds float32 values but the input is int64 — save it as integers"),
    ("different sample counts", {**_TEXT, "attention_mask": _MASK[:5]}, _NAMES, _SHAPES, _INT64, (),
     "holds different sample counts ('input_ids' 8, 'attention_mask' 5)"),
    ("ids outside --input-range", _TEXT, _NAMES, _SHAPES, _INT64, ((0, 50), (0, 2)),
     f"['input_ids'] holds values in [{_IDS.min()}, {_IDS.max()}], outside --input-range 0,50"),
    ("ids beyond int32", {**_TEXT, "input_ids": _IDS + 2**40}, _NAMES, _SHAPES, [np.dtype(np.int32)] * 2, (),
     "beyond int32's"),
    ("2 in a bool mask", {**_TEXT, "attention_mask": _MASK * 2}, _NAMES, _SHAPES,
     [np.dtype(np.int64), np.dtype(bool)], (), "['attention_mask'] holds values in [2, 2], beyond bool's [0, 1]"),
    ("a wrong shape", {**_TEXT, "input_ids": _IDS[:, :5]}, _NAMES, _SHAPES, _INT64, (),
     "['input_ids'] holds shape [8, 5] but the model input is [N,6]"),
    ("NaN and Inf for a float input", {"x": _FLOATS}, ["x"], [(1, 4)], [np.dtype(np.float32)], (),
     "['x'] holds 2 non-finite values (NaN/Inf) of 32"),
    ("float64 beyond float16", {"x": np.full((2, 4), 1e6)}, ["x"], [(1, 4)], [np.dtype(np.float16)], (),
     "(as float16) holds 8 non-finite values"),
    ("an empty array", {"x": _FLOATS[:0]}, ["x"], [(1, 4)], [np.dtype(np.float32)], (), "['x'] holds no samples"),
    ("complex numbers", {"x": np.ones((8, 4), np.complex64)}, ["x"], [(1, 4)], [np.dtype(np.float32)], (),
     "['x'] holds complex64 values"),
]


@pytest.mark.parametrize(("case", "arrays", "names", "shapes", "dtypes", "ranges", "error"), NPZ_CASES,
                         ids=[c[0] for c in NPZ_CASES])
def test_npz_parity_data(tmp_path, case, arrays, names, shapes, dtypes, ranges, error) -> None:
    path = tmp_path / "data.npz"
    np.savez(path, **arrays)
    load = lambda: load_parity_data(str(path), shapes, dtypes, 6, ranges=ranges, names=names)  # noqa: E731
    if error is not None:
        with pytest.raises(InputError) as info:
            load()
        message = str(info.value)
        assert message.startswith("--parity-data data.npz") and error in message and "\n" not in message, message
        return
    data = load()
    assert data.real and data.labels is None and "6 samples from data.npz (input_ids, attention_mask)" in data.description
    for name, x, dtype in zip(names, data.inputs, dtypes):  # in the model's order and dtypes, the first 6 samples
        assert x.dtype == dtype and x.flags.c_contiguous
        np.testing.assert_array_equal(x, arrays[name][:6].astype(dtype))


MASK_CASES = [
    # id, name, dtype, range, is a padding mask
    ("attention_mask int64 in [0, 2)", "attention_mask", np.int64, (0, 2), True),
    ("padding_mask bool", "padding_mask", np.bool_, None, True),
    ("decoder_attention_mask without a range", "decoder_attention_mask", np.int32, None, True),
    ("a mask the sample holds all 1s in", "attention_mask", np.int64, (1, 2), False),
    ("token ids", "input_ids", np.int64, (0, 2), False),
    ("a float mask", "attention_mask", np.float32, None, False),
]


@pytest.mark.parametrize(("case", "name", "dtype", "value_range", "masked"), MASK_CASES, ids=[c[0] for c in MASK_CASES])
def test_seeded_padding_masks_keep_a_prefix(case, name, dtype, value_range, masked) -> None:
    """Seeded data for a padding mask is 1s then 0s per sample (at least one 1), as a tokenizer pads: uniform 0/1
    noise masks a causal model's first key, and those rows' outputs are noise in every runtime."""
    data = load_parity_data("random", [(1, 12), (1, 12)], [np.dtype(np.int64), np.dtype(dtype)], 200, 3,
                            ranges=((0, 50), value_range or (0, 2)), names=["input_ids", name])
    mask = data.inputs[1]
    assert mask.shape == (200, 12) and mask.dtype == dtype
    kept = mask.astype(np.int64).sum(axis=1)
    prefix = (np.arange(12)[None, :] < kept[:, None]).astype(np.int64)
    if masked:
        np.testing.assert_array_equal(mask.astype(np.int64), prefix)
        assert kept.min() >= 1 and kept.max() == 12 and len(np.unique(kept)) == 12  # every length drawn
        assert f"{name}: padding masks (1s then 0s)" in data.description
    else:
        assert not np.array_equal(mask.astype(np.int64), prefix) or value_range == (1, 2)
        assert "padding masks" not in data.description
    np.testing.assert_array_equal(data.inputs[0], load_parity_data("random", [(1, 12), (1, 12)], [np.dtype(np.int64),
                                  np.dtype(dtype)], 200, 3, ranges=((0, 50), value_range or (0, 2)),
                                  names=["input_ids", name]).inputs[0])  # seeded: the same data twice


def test_an_unreadable_npz_is_one_line(tmp_path) -> None:
    path = tmp_path / "data.npz"
    path.write_bytes(b"not a zip file")
    with pytest.raises(InputError, match=r"cannot read .*data\.npz: .* — pass a file written by numpy\.savez"):
        load_parity_data(str(path), _SHAPES, _INT64, 6, names=_NAMES)


# ------------------------------------------------------------------------------------------ the commands

def _write_idx(directory: Path, prefix: str, images: np.ndarray, labels: np.ndarray) -> None:
    """A valid, uncompressed IDX pair (see reference_models/idx.py for the format)."""
    directory.mkdir(parents=True, exist_ok=True)
    for kind, array in (("images-idx3", images), ("labels-idx1", labels)):
        header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
        (directory / f"{prefix}-{kind}-ubyte").write_bytes(header + array.astype(np.uint8).tobytes())


def _crafted(root: Path) -> Path:
    """Every bad input file the command cases use, under ``root/in``."""
    d = root / "in"
    _write_idx(d / "idx_empty", "t10k", np.zeros((0, 28, 28)), np.zeros((0,)))
    _write_idx(d / "idx_empty_train", "train", np.zeros((0, 28, 28)), np.zeros((0,)))
    np.save(d / "empty.npy", np.zeros((0, 1, 28, 28), np.float32))
    nan = np.zeros((10, 1, 28, 28), np.float32)
    nan[2, 0, 3, 4], nan[5, 0, 1, 1], nan[9, 0, 0, 0] = NAN, INF, -INF
    np.save(d / "nan.npy", nan)
    np.save(d / "cal_empty.npy", np.zeros((0, 3, 8, 8), np.float32))
    np.save(d / "cal_wrong_shape.npy", np.zeros((10, 3, 28, 28), np.float32))
    np.save(d / "cal_too_big_for_float32.npy", np.full((2, 1, 28, 28), 1e300))
    np.savez(d / "ids_only.npz", input_ids=_IDS)
    np.savez(d / "float_ids.npz", input_ids=_IDS.astype(np.float32), attention_mask=_MASK)
    return d


_TRAIN = ["--framework", "torch", "--epochs", "1"]
_TEXT_MODEL = ["tests.toy_models:tiny_text", "--input-shape", "1,6", "--input-dtype", "int64", "--input-shape", "1,6",
               "--input-dtype", "int64", "--input-name", "input_ids", "--input-name", "attention_mask",
               "--precision", "fp32"]
_LINEAR = ["tests.toy_models:tiny_linear", "--input-shape", "1,4", "--precision", "fp32", "--targets", "onnx"]
EXIT_2_CASES = [
    # id, command, args ({d}: the crafted inputs), fragment of the one `<command>: error:` line
    # the convert rows of the NaN/empty checks are in tests/test_faults.py's table; every .npz fault is in NPZ_CASES
    (".npz without an input's array", "convert", [*_TEXT_MODEL, "--parity-data", "{d}/ids_only.npz"],
     "--parity-data ids_only.npz has no array 'attention_mask' (the model's inputs: input_ids, attention_mask)"),
    (".npz with float token ids", "convert", [*_TEXT_MODEL, "--parity-data", "{d}/float_ids.npz"],
     "--parity-data float_ids.npz['input_ids'] holds float32 values but the input is int64"),
    ("--input-range on a float input", "convert",
     ["tests.toy_models:image_and_sequence", "--input-shape", "1,3,8,8", "--input-shape", "1,4,6", "--input-dtype",
      "float32", "--input-dtype", "int64", "--input-range", "0,50", "--precision", "fp32", "--targets", "onnx"],
     "--input-range 0,50 (#1) falls on input #1, which is float32: ranges are given in input order"),
    ("--class-axis naming no output", "convert", [*_LINEAR, "--class-axis", "logits:1"],
     "--class-axis logits: the model has no output 'logits' (its outputs: output)"),
    ("--class-axis naming no output, parity off", "convert", [*_LINEAR, "--class-axis", "output0:1:4:84", "--no-parity"],
     "--class-axis output0: the model has no output 'output0' (its outputs: output)"),
    ("--class-axis beyond the output's rank", "convert", [*_LINEAR, "--class-axis", "output:2"],
     "--class-axis output:2: output 'output' has shape [1, 3], so axis 2 is out of range"),
    ("--class-axis without an axis", "convert", [*_LINEAR, "--class-axis", "output"],
     "--class-axis output is not NAME:AXIS"),
    ("train-data IDX dir with 0 images", "train-reference", [*_TRAIN, "--train-data", "{d}/idx_empty_train",
                                                            "--eval-data", "embedded"], "holds no samples (0 images)"),
    ("eval-data IDX dir with 0 images", "train-reference", [*_TRAIN, "--train-data", "embedded",
                                                           "--eval-data", "{d}/idx_empty"], "holds no samples (0 images)"),
]


@pytest.mark.parametrize(("case", "tool", "args", "needle"), EXIT_2_CASES, ids=[c[0] for c in EXIT_2_CASES])
def test_bad_data_exit_2_one_line_nothing_written(tmp_path, case, tool, args, needle) -> None:
    d = _crafted(tmp_path)
    r = run_cli(tool, *[a.replace("{d}", str(d)) for a in args], "--out", tmp_path / "out", cwd=tmp_path)
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    lines = message_lines(r.stderr)
    assert len(lines) == 1 and lines[0].startswith(f"{tool}: error: "), r.stderr
    assert needle.replace("{d}", str(d)) in lines[0], lines[0]
    assert "Traceback" not in r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in"]  # no --out, no .out.partial-* / .out.tmp-*


def _nan_weights(path: Path) -> Path:
    import torch

    from reference_models.mnist_cnn import MnistCNN

    torch.manual_seed(0)
    state = MnistCNN().state_dict()
    state["fc2.weight"][3, 5] = NAN
    torch.save(state, path)
    return path


def _samples_with_nan(spec: str, weights: Path | None, shape: tuple[int, ...]) -> int:
    """How many of the seeded parity samples the PyTorch model outputs NaN/Inf for, counted here, independently."""
    import torch

    from converter.parity.data import load_parity_data
    from converter._convert.sources import load_model

    module = load_model(spec, weights).module.eval()
    data = load_parity_data("random", [shape], [np.dtype(np.float32)], int(SAMPLES), 0).inputs[0]
    with torch.no_grad():
        out = module(torch.from_numpy(data)).numpy()
    return int((~np.isfinite(out.reshape(len(out), -1))).any(axis=1).sum())


NAN_OUTPUT_CASES = [
    # id, model, input shape, NaN weights?
    ("reference net with one NaN weight", "mnist_cnn", (1, 1, 28, 28), True),
    ("sqrt of a linear layer: NaN for some samples", "tests.toy_data_faults:sqrt_head", (1, 4), False),
    ("log of a 4-D input: NaN in an NHWC output", "tests.toy_data_faults:log_of_input", (1, 2, 4, 4), False),
]


@pytest.mark.parametrize(("case", "spec", "shape", "nan_weights"), NAN_OUTPUT_CASES, ids=[c[0] for c in NAN_OUTPUT_CASES])
def test_nan_outputs_fail_parity_with_exit_1(tmp_path, case, spec, shape, nan_weights) -> None:
    weights = _nan_weights(tmp_path / "nan.pt") if nan_weights else None
    expected = _samples_with_nan(spec, weights, shape)
    assert 0 < expected, "the case must produce NaN outputs"
    args = [spec, "--input-shape", ",".join(map(str, shape)), "--precision", "fp32", "--parity-data", "random",
            "--parity-samples", SAMPLES, "--out", tmp_path / "out"]
    r = run_cli("convert", *args, *(["--weights", weights] if weights else []), cwd=tmp_path)
    assert r.returncode == 1, (r.returncode, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr and "does not match ONNX shape" not in r.stderr
    report = (tmp_path / "out" / "parity.md").read_text()
    assert f"outputs NaN/Inf for {expected} of {SAMPLES} samples" in report, report
    assert f"outputs NaN/Inf for {expected} of {SAMPLES} samples" in r.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["out", *(["nan.pt"] if weights else [])])


def test_all_nan_output_of_ambiguous_layout_is_a_clear_error(tmp_path) -> None:
    """[1, 4, 4, 4] is NCHW and NHWC alike and NaN everywhere: the layout cannot be measured, and says so."""
    r = run_cli("convert", "tests.toy_data_faults:nan_cube", "--input-shape", "1,4,4,4", "--precision", "fp32",
                "--parity-samples", SAMPLES, "--out", tmp_path / "out", cwd=tmp_path)
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    lines = message_lines(r.stderr)
    assert len(lines) == 1 and "output 'output' is NaN/Inf everywhere on the sample input" in lines[0], r.stderr
    assert list(tmp_path.iterdir()) == []


def test_npz_parity_data_feeds_a_two_input_text_model(tmp_path) -> None:
    """Token ids and a mask, int64, from an .npz keyed by input name: every fp32 row compares on those samples."""
    ids = np.random.default_rng(1).integers(0, 100, (12, 6)).astype(np.int64)  # tiny_text's vocabulary: 100
    mask = np.ones_like(ids)
    mask[:, 4:] = 0
    np.savez(tmp_path / "text.npz", attention_mask=mask, input_ids=ids)  # the keys, not their order, match
    r = run_cli("convert", *_TEXT_MODEL, "--parity-data", tmp_path / "text.npz", "--parity-samples", "10",
                "--out", tmp_path / "out", cwd=tmp_path)
    assert r.returncode == 0, (r.stdout, r.stderr)
    import json

    report = json.loads((tmp_path / "out" / "parity.json").read_text())
    assert report["passed"] and report["samples"] == 10, report  # the first 10 of the file's 12
    assert report["data"] == "10 samples from text.npz (input_ids, attention_mask)"
    rows = {r["runtime"]: r for r in report["runtimes"]}
    assert {"pytorch", "onnxruntime", "saved_model", "tflite"} <= set(rows)
    for row in rows.values():
        assert row["passed"] and row["max_rel_err"] <= 1e-5, row
    assert report["class_axes"] == {"output": {"axis": 1, "classes": None, "by": "shape"}}

