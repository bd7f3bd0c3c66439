"""Faulty data: NaN/Inf and empty inputs, NaN weights, NaN outputs.

Bad data a user hands over (``--parity-data``, ``--calibration-data``, ``train-reference --train-data``) is refused
with exit 2 and one line naming the problem; a model that *outputs* NaN/Inf converts, and its parity report fails
(exit 1) naming how many samples the reference outputs NaN/Inf for, never a bogus layout error or a traceback.
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
from converter.parity.data import check_samples
from tests.conftest import run_cli

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
    return d


_TRAIN = ["--framework", "torch", "--epochs", "1"]
EXIT_2_CASES = [
    # id, command, args ({d}: the crafted inputs), fragment of the one `<command>: error:` line
    # the convert rows of these checks are in tests/test_faults.py's table
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
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
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
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "output 'output' is NaN/Inf everywhere on the sample input" in lines[0], r.stderr
    assert list(tmp_path.iterdir()) == []
