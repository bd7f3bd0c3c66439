"""The parity judge, table by table, through its public functions only (``compare``, ``tolerance_for``,
``reference_warnings``, ``ParityReport``/``RuntimeResult``, ``to_markdown``).

Cases: the fp32 bound ``max|Δ| <= atol + rtol·max|ref|`` per sample (just inside / just outside, default and
overridden tolerances), samples of different scales, NaN/Inf masks across several outputs, a failure in a second
output, near-ties per precision, int8 judged by accuracy drop on labelled data, and the report's JSON/Markdown.
Single-output NaN/Inf cases live in ``test_data_faults.py``, the first near-tie cases in ``test_parity.py``.

Outputs are float64 here so that "just inside" and "just outside" a bound are exact (``compare`` works in float64).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import fields

import numpy as np
import pytest

from converter.parity.judge import ParityReport, RuntimeResult, compare, reference_warnings, to_markdown, tolerance_for

NAN, INF = float("nan"), float("inf")
DEFAULT_FP32 = {"atol": 1e-4, "rtol": 1e-4}  # README "Parity tolerances"


def _logits(scales, classes: int = 10, seed: int = 0) -> np.ndarray:
    """[len(scales), classes]: class 0 is top-1 at ``scale`` (the sample's max |ref|), the rest in [-0.9·scale, 0]."""
    scales = np.asarray(scales, dtype=np.float64)
    ref = np.random.default_rng(seed).uniform(-0.9, 0.0, (len(scales), classes)) * scales[:, None]
    ref[:, 0] = scales
    return ref


def _judge(precision, reference, candidate, labels=None, reference_accuracy=None, **overrides) -> RuntimeResult:
    return compare("tflite", precision, None, reference, candidate, labels, reference_accuracy,
                   tolerance_for(precision, **overrides))


# ------------------------------------------------------------------------------------------ tolerance_for

TOLERANCE_CASES = [
    # precision, overrides, the keys that must hold these values
    ("fp32", {}, {"atol": 1e-4, "rtol": 1e-4, "top1_agreement": 1.0}),
    ("fp32", {"atol": 1e-3}, {"atol": 1e-3, "rtol": 1e-4}),  # an override keeps the other default
    ("fp32", {"rtol": 0.0}, {"atol": 1e-4, "rtol": 0.0}),  # 0 is an override, not "unset"
    ("fp32", {"atol": 0.5, "rtol": 2e-3}, {"atol": 0.5, "rtol": 2e-3}),
    ("fp16", {}, {"top1_agreement": 0.999, "cosine_min": 0.999, "tie_margin": 0.01}),
    ("dynamic_int8", {}, {"accuracy_drop_pp": 1.0, "top1_agreement": 0.97, "tie_margin": 0.05}),
    ("int8", {}, {"accuracy_drop_pp": 1.0, "top1_agreement": 0.97, "cosine_min": 0.98, "tie_margin": 0.05}),
]


@pytest.mark.parametrize(("precision", "overrides", "expected"), TOLERANCE_CASES)
def test_tolerance_for(precision, overrides, expected) -> None:
    tol = tolerance_for(precision, **overrides)
    assert {k: tol.get(k) for k in expected} == expected
    if precision != "fp32" and not overrides:
        assert "atol" not in tol  # reduced precisions are not judged by an absolute bound
    assert tolerance_for(precision) == tolerance_for(precision)  # overrides never leak into the defaults
    assert tolerance_for("fp32")["atol"] == DEFAULT_FP32["atol"]


# ------------------------------------------------------------------------------------------ the fp32 bound

FP32_BOUND_CASES = [
    # id, overrides, sample scales, sample with the error, error as a multiple of its bound, passes
    ("default, scale 3, just inside", {}, [3.0] * 4, 2, 0.999, True),
    ("default, scale 3, just outside", {}, [3.0] * 4, 2, 1.001, False),
    ("default, scale 1000, just inside", {}, [1000.0] * 4, 0, 0.999, True),
    ("default, scale 1000, just outside", {}, [1000.0] * 4, 0, 1.001, False),
    ("default, error below the reference", {}, [5.0] * 4, 3, -1.001, False),
    ("atol only, rtol 0: just inside", {"atol": 1e-3, "rtol": 0.0}, [1000.0] * 4, 1, 0.999, True),
    ("atol only, rtol 0: just outside", {"atol": 1e-3, "rtol": 0.0}, [1000.0] * 4, 1, 1.001, False),
    ("rtol only, atol 0: just inside", {"atol": 0.0, "rtol": 1e-3}, [50.0] * 4, 1, 0.999, True),
    ("rtol only, atol 0: just outside", {"atol": 0.0, "rtol": 1e-3}, [50.0] * 4, 1, 1.001, False),
    # atol overridden, rtol keeps its default 1e-4: bound 0.01 + 1e-4 * 100 = 0.02 (0.01 alone would fail 0.999)
    ("atol override keeps default rtol, inside", {"atol": 1e-2}, [100.0] * 4, 0, 0.999, True),
    ("atol override keeps default rtol, outside", {"atol": 1e-2}, [100.0] * 4, 0, 1.001, False),
]


@pytest.mark.parametrize(("case", "overrides", "scales", "sample", "factor", "passed"), FP32_BOUND_CASES,
                         ids=[c[0] for c in FP32_BOUND_CASES])
def test_fp32_bound_is_atol_plus_rtol_times_the_sample_scale(case, overrides, scales, sample, factor, passed) -> None:
    tol = {**DEFAULT_FP32, **overrides}
    bound = tol["atol"] + tol["rtol"] * scales[sample]
    ref = _logits(scales)
    got = ref.copy()
    got[sample, 3] += factor * bound  # not the top-1 class: only the bound can fail the row
    row = _judge("fp32", [ref], [got], **overrides)
    assert row.passed is passed, row.reason
    assert row.max_abs_err == pytest.approx(abs(factor) * bound, rel=1e-6)
    assert row.max_rel_err == pytest.approx(abs(factor) * bound / scales[sample], rel=1e-6)
    assert row.top1_agreement == 1.0
    if passed:
        assert row.reason == ""
    else:
        assert row.reason.startswith("|Δ|") and f"on sample {sample}" in row.reason, row.reason
        assert f"{bound:.3g}" in row.reason, row.reason


#: samples 0..3 with max |ref| 1000, 1, 1, 1: bounds 0.1001, 2e-4, 2e-4, 2e-4 (default tolerances)
SCALES = [1000.0, 1.0, 1.0, 1.0]
PER_SAMPLE_CASES = [
    # id, {sample: error}, passes, sample named in the reason
    ("0.05 on the large sample is inside its bound", {0: 0.05}, True, None),
    ("the same 0.05 on a small sample is not", {1: 0.05}, False, 1),
    ("1.5e-4 on a small sample is inside its own bound", {1: 1.5e-4}, True, None),
    ("each sample inside its own bound", {0: 0.1, 1: 1.9e-4, 2: 1.9e-4, 3: 1.9e-4}, True, None),
    # the largest absolute error (0.09, sample 0) passes; the small sample 2 fails on 3e-4
    ("the failing sample is not the one with the largest error", {0: 0.09, 2: 3e-4}, False, 2),
]


@pytest.mark.parametrize(("case", "errors", "passed", "named"), PER_SAMPLE_CASES, ids=[c[0] for c in PER_SAMPLE_CASES])
def test_fp32_bound_is_per_sample(case, errors, passed, named) -> None:
    ref = _logits(SCALES)
    got = ref.copy()
    for sample, error in errors.items():
        got[sample, 2] += error
    row = _judge("fp32", [ref], [got])
    assert row.passed is passed, row.reason
    assert row.max_abs_err == pytest.approx(max(errors.values()), rel=1e-6)
    assert row.max_rel_err == pytest.approx(max(e / SCALES[s] for s, e in errors.items()), rel=1e-6)
    if named is not None:
        assert f"on sample {named}" in row.reason, row.reason


# ------------------------------------------------------------------------------------------ NaN/Inf, several outputs

def _two_outputs() -> tuple[np.ndarray, np.ndarray]:
    """Reference logits [6, 4] and a 4-D output [6, 2, 3, 3], both with NaN and ±Inf at fixed places."""
    logits = np.tile(np.array([[3.0, 1.0, -1.0, 0.5]]), (6, 1))
    logits[2, 1] = NAN
    logits[4, 3] = INF
    maps = np.linspace(-2.0, 2.0, 6 * 2 * 3 * 3).reshape(6, 2, 3, 3)
    maps[1, 0, 1, 1] = NAN
    maps[3, 1, 2, 0] = -INF
    maps[5, 1, 0, 2] = INF
    return logits, maps


def _set(*changes) -> list[np.ndarray]:
    """The reference outputs with ``(output, index, value)`` changes."""
    outputs = [o.copy() for o in _two_outputs()]
    for output, index, value in changes:
        outputs[output][index] = value
    return outputs


NONFINITE_CASES = [
    # id, candidate outputs, passes, fragments of the reason
    ("same NaN/Inf in both outputs", _set(), True, []),
    ("same masks, a finite value off in the second output", _set((1, (0, 0, 0, 0), -2.0 + 1e-2)), None, []),
    ("NaN in the second output where the reference is finite", _set((1, (3, 0, 0, 0), NAN)), False,
     ["1 NaN/Inf values where the reference is finite", "(first on sample 3)"]),
    ("finite in the second output where the reference is NaN", _set((1, (1, 0, 1, 1), 0.0)), False,
     ["1 finite values where the reference is NaN/Inf", "(first on sample 1)"]),
    ("+Inf in the second output where the reference is -Inf", _set((1, (3, 1, 2, 0), INF)), False,
     ["1 NaN/Inf values of another kind than the reference's", "(first on sample 3)"]),
    ("a mismatch in each output: counted together", _set((0, (5, 0), INF), (1, (2, 1, 1, 1), NAN)), False,
     ["2 NaN/Inf values where the reference is finite", "(first on sample 2)"]),
    ("one mismatch of each kind over two outputs",
     _set((0, (2, 1), 1.0), (1, (0, 0, 0, 0), NAN), (1, (5, 1, 0, 2), NAN)), False,
     ["1 NaN/Inf values where the reference is finite", "1 finite values where the reference is NaN/Inf",
      "1 NaN/Inf values of another kind than the reference's", "(first on sample 0)"]),
]


@pytest.mark.parametrize(("case", "got", "passed", "fragments"), NONFINITE_CASES, ids=[c[0] for c in NONFINITE_CASES])
@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_nonfinite_masks_are_compared_over_every_output(case, got, passed, fragments, precision) -> None:
    if passed is None:  # a finite error of 1e-2 at scale 3: fails the fp32 bound, inside fp16/int8 cosine and top-1
        passed = precision != "fp32"
        fragments = [] if passed else ["|Δ|", "on sample 0"]
    row = _judge(precision, list(_two_outputs()), got)
    assert row.passed is passed, row.reason
    for fragment in fragments:
        assert fragment in row.reason, row.reason
    if "NaN/Inf" in row.reason:  # no metric can be trusted: reported as the worst possible
        assert row.max_abs_err == math.inf and row.cosine_min == -1.0
    else:  # errors are measured on the finite positions of both outputs
        assert np.isfinite([row.max_abs_err, row.mean_abs_err, row.max_rel_err, row.cosine_min]).all()
        assert row.max_abs_err == pytest.approx(1e-2 if "off" in case else 0.0, abs=1e-12)


# ------------------------------------------------------------------------------------------ several outputs

def _flip(ref: np.ndarray, samples) -> np.ndarray:
    """Swap the top-1 (class 0) and class 1 of ``samples``."""
    got = ref.copy()
    got[samples, 0], got[samples, 1] = ref[samples, 1], ref[samples, 0]
    return got


def _with_lead(n: int, lead: float, tied, seed: int = 0) -> np.ndarray:
    """[n, 10] at scale 1: class 0 is top-1; in the ``tied`` samples class 1 trails it by ``lead``."""
    ref = _logits([1.0] * n, seed=seed)
    ref[tied, 1] = 1.0 - lead
    return ref


SECOND_OUTPUT_CASES = [
    # id, precision, candidate for the second output (given its reference), reason fragment, top-1 agreement
    ("fp32: a value off in the second output", "fp32",
     lambda r: r + np.where(np.arange(r.size).reshape(r.shape) == 17, 1e-3, 0.0), "on sample 1", 1.0),
    ("fp32: a flip in the second output", "fp32", lambda r: _flip(r, [4]), "|Δ|", 0.99),
    ("fp16: a decisive flip in the second output", "fp16", lambda r: _flip(r, [4]), "top-1 agreement 0.9900", 0.99),
    ("int8: 4 decisive flips in the second output", "int8", lambda r: _flip(r, [1, 2, 3, 4]),
     "top-1 agreement 0.9600 < 0.97", 0.96),
]


@pytest.mark.parametrize(("case", "precision", "make", "fragment", "agreement"), SECOND_OUTPUT_CASES,
                         ids=[c[0] for c in SECOND_OUTPUT_CASES])
def test_a_failure_in_the_second_output_fails_the_row(case, precision, make, fragment, agreement) -> None:
    first, second = _with_lead(100, 0.5, [], seed=1), _with_lead(100, 0.5, [], seed=2)
    row = _judge(precision, [first, second], [first.copy(), make(second)])
    assert not row.passed and fragment in row.reason, row.reason
    assert row.top1_agreement == pytest.approx(agreement)  # the worst output's agreement
    # the same candidate as the FIRST output fails just the same: the worst output decides, whichever it is
    swapped = _judge(precision, [second, first], [make(second), first.copy()])
    assert not swapped.passed and swapped.top1_agreement == pytest.approx(agreement)
    # and the first output alone passes
    assert _judge(precision, [first], [first.copy()]).passed


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_the_reason_names_the_failing_output(precision) -> None:
    first, second = _with_lead(100, 0.5, [], seed=1), _with_lead(100, 0.5, [], seed=2)
    got = second.copy()
    got[7, 3] += 1.0 if precision == "fp32" else 0.0
    if precision == "fp16":
        got = _flip(second, [7])
    row = _judge(precision, [first, second], [first.copy(), got])
    assert not row.passed
    assert re.search(r"output\s*(#\s*)?1\b", row.reason), row.reason  # outputs are numbered from #0


# ------------------------------------------------------------------------------------------ near-ties

NEAR_TIE_CASES = [
    # id, precision, lead of the tied samples (x max|ref|), tied samples, flipped samples, passes, near-ties
    ("fp16: flips at a 0.9 % lead are excused", "fp16", 0.009, 3, 3, True, 3),
    ("fp16: a flip at a 1.1 % lead is decisive", "fp16", 0.011, 1, 1, False, 0),
    ("fp16: ties counted even when none flips", "fp16", 0.005, 7, 0, True, 7),
    ("fp16: 2 excused flips, 1 decisive flip fails", "fp16", 0.005, 2, 3, False, 2),
    ("dynamic_int8: 4 flips at a 4.5 % lead are excused", "dynamic_int8", 0.045, 4, 4, True, 4),
    ("dynamic_int8: 4 flips at a 5.5 % lead fail (96 % < 97 %)", "dynamic_int8", 0.055, 4, 4, False, 0),
    ("int8: 10 excused flips although raw agreement is 90 %", "int8", 0.045, 10, 10, True, 10),
    ("int8: 3 decisive flips meet the 97 % bar exactly", "int8", 0.055, 3, 3, True, 0),
    ("fp32: a flip at a 0.1 % lead is never excused", "fp32", 0.001, 1, 1, False, None),
]


@pytest.mark.parametrize(("case", "precision", "lead", "tied", "flipped", "passed", "near_ties"), NEAR_TIE_CASES,
                         ids=[c[0] for c in NEAR_TIE_CASES])
@pytest.mark.parametrize("in_output", [0, 1])
def test_near_ties(case, precision, lead, tied, flipped, passed, near_ties, in_output) -> None:
    ref = _with_lead(100, lead, list(range(tied)))
    got = _flip(ref, list(range(flipped)))  # the first `flipped` samples; beyond `tied` they are decisive flips
    other = _with_lead(100, 0.5, [], seed=3)  # an output with no ties and no flips
    refs, gots = [ref, other], [got, other.copy()]
    if in_output == 1:
        refs, gots = refs[::-1], gots[::-1]
    # fp32: a loose bound, so that the flip itself, not |Δ|, is what fails the row
    row = _judge(precision, refs, gots, **({"atol": 1.0} if precision == "fp32" else {}))
    assert row.passed is passed, row.reason
    assert row.near_ties == near_ties
    assert row.top1_agreement == pytest.approx(1 - flipped / 100)  # reported over every prediction
    if near_ties is not None:
        decisive_flips = flipped - min(flipped, near_ties)  # the tied samples are the first ones flipped
        assert row.decisive_agreement == pytest.approx(1 - decisive_flips / (100 - near_ties))
    if not passed:
        assert "top-1 agreement" in row.reason, row.reason
        if precision != "fp32":
            assert f"({near_ties} near-ties excluded)" in row.reason, row.reason


# ------------------------------------------------------------------------------------------ int8 with labels

def _labelled(n: int, wrong: int) -> tuple[np.ndarray, np.ndarray]:
    """Reference [n, 10] predicting class 0 for every sample; labels: 1 for the last ``wrong`` samples, else 0."""
    ref = _with_lead(n, 0.5, [])
    labels = np.zeros(n, np.int64)
    labels[n - wrong:] = 1
    return ref, labels


LABELLED_CASES = [
    # id, precision, samples, correct predictions lost, wrong predictions corrected, passes, accuracy drop (pp)
    ("int8: 2 of 200 lost = 1.00 pp", "int8", 200, 2, 0, True, 1.0),
    ("int8: 3 of 200 lost = 1.50 pp", "int8", 200, 3, 0, False, 1.5),
    ("dynamic_int8: 1 of 100 lost = 1.00 pp", "dynamic_int8", 100, 1, 0, True, 1.0),
    ("dynamic_int8: 2 of 100 lost = 2.00 pp", "dynamic_int8", 100, 2, 0, False, 2.0),
    ("int8: 10 lost and 10 gained, agreement 90 %: accuracy decides", "int8", 200, 10, 10, True, 0.0),
    ("int8: 5 gained, accuracy rises", "int8", 200, 0, 5, True, -2.5),
]


@pytest.mark.parametrize(("case", "precision", "n", "lost", "gained", "passed", "drop"), LABELLED_CASES,
                         ids=[c[0] for c in LABELLED_CASES])
def test_int8_with_labels_is_judged_by_accuracy_drop(case, precision, n, lost, gained, passed, drop) -> None:
    ref, labels = _labelled(n, wrong=20)
    reference_accuracy = float(np.mean(ref.argmax(1) == labels))
    assert reference_accuracy == (n - 20) / n
    got = _flip(ref, list(range(lost)) + list(range(n - gained, n)))  # lose correct ones, correct wrong ones
    row = _judge(precision, [ref], [got], labels, reference_accuracy)
    assert row.accuracy == pytest.approx((n - 20 - lost + gained) / n)
    assert (reference_accuracy - row.accuracy) * 100 == pytest.approx(drop)
    assert row.top1_agreement == pytest.approx(1 - (lost + gained) / n)
    assert row.passed is passed, row.reason
    if not passed:
        assert f"accuracy drop {drop:.2f} pp > 1 pp" in row.reason, row.reason
    # without labels the same outputs are judged by top-1 agreement (>= 97 %) and cosine instead
    unlabelled = _judge(precision, [ref], [got])
    assert unlabelled.accuracy is None
    if lost + gained > 0.03 * n:
        assert not unlabelled.passed and "top-1 agreement" in unlabelled.reason, unlabelled.reason


# ------------------------------------------------------------------------------------------ reference_warnings

def _flat(n: int = 30) -> np.ndarray:
    return np.full((n, 3), 1e-9)


def _nan_in(x: np.ndarray, samples) -> np.ndarray:
    x = x.copy()
    x[samples, 0] = NAN
    return x


WARNING_CASES = [
    # id, reference outputs, output names, scale, warnings (fragments, one list per warning)
    ("NaN in the second output only", [_logits([3.0] * 30), _nan_in(_logits([5.0] * 30), [4, 9])], None, 5.0,
     [["for 2 of 30 samples (output #1)"]]),
    ("named outputs", [_logits([3.0] * 30), _nan_in(_logits([5.0] * 30), [4])], ["logits", "aux"], 5.0,
     [["for 1 of 30 samples (output 'aux')"]]),
    ("NaN in both outputs: one warning each", [_nan_in(_logits([2.0] * 30), [0]), _nan_in(_logits([7.0] * 30), [1, 2, 3])],
     None, 7.0, [["for 1 of 30 samples (output #0)"], ["for 3 of 30 samples (output #1)"]]),
    ("a flat output beside a real one: the scale is the largest", [_flat(), _logits([4.0] * 30)], None, 4.0, []),
    ("every output flat", [_flat(), _flat()], None, 1e-9, [["peak at 1e-09"]]),
    ("every output all NaN: no peak-at warning", [np.full((30, 3), NAN), np.full((30, 2), NAN)], None, 0.0,
     [["for 30 of 30 samples (output #0)"], ["for 30 of 30 samples (output #1)"]]),
]


@pytest.mark.parametrize(("case", "reference", "names", "scale", "expected"), WARNING_CASES,
                         ids=[c[0] for c in WARNING_CASES])
def test_reference_warnings_over_several_outputs(case, reference, names, scale, expected) -> None:
    found_scale, found = reference_warnings(reference, None, reference_name="pytorch", output_names=names)
    assert found_scale == pytest.approx(scale)
    assert len(found) == len(expected), found
    for warning, fragments in zip(found, expected):
        for fragment in fragments:
            assert fragment in warning, warning


# ------------------------------------------------------------------------------------------ the report

def _report() -> ParityReport:
    ref, labels = _labelled(200, wrong=20)
    reference_accuracy = 0.9
    tie_ref = _with_lead(200, 0.005, [0, 1])
    close = ref.copy()
    close[5, 4] += 3e-5
    rows = [
        compare("onnxruntime", "fp32", None, [ref], [close], labels, reference_accuracy, tolerance_for("fp32")),
        compare("tflite", "fp16", "model_fp16.tflite", [tie_ref], [_flip(tie_ref, [0])], None, None,
                tolerance_for("fp16")),
        compare("tflite", "int8", "model_int8.tflite", [ref], [_flip(ref, [0, 1, 2])], labels, reference_accuracy,
                tolerance_for("int8")),
        compare("saved_model", "fp32", "saved_model", [ref], [_nan_in(ref, [7])], labels, reference_accuracy,
                tolerance_for("fp32")),
        RuntimeResult(runtime="tflite", precision="dynamic_int8", artifact="model_dynamic_int8.tflite",
                      max_abs_err=0.125, mean_abs_err=0.0125, max_rel_err=0.0625, cosine_min=0.9990234375,
                      top1_agreement=0.995, accuracy=0.895, tolerance=tolerance_for("dynamic_int8"), passed=True,
                      reason="", near_ties=0, decisive_agreement=0.995, batch_sizes=[1, 64], size_bytes=699_816,
                      localisation={"module": "fc2", "op": "Gemm", "onnx_node": "/fc2/Gemm",
                                    "rel_err_output": 0.25, "rel_err_inputs": [1e-6]}),
    ]
    return ParityReport(passed=False, reference="pytorch", samples=200, runtimes=rows,
                        reference_accuracy=reference_accuracy, reference_scale=0.5,
                        warnings=["a warning for the table"], data="200 real MNIST digits: test")


def test_report_rows_are_what_compare_measured() -> None:
    """The report's rows carry real numbers (what the JSON and Markdown tests below round-trip)."""
    rows = {(r.runtime, r.precision): r for r in _report().runtimes}
    assert rows["onnxruntime", "fp32"].passed and rows["onnxruntime", "fp32"].max_abs_err == pytest.approx(3e-5)
    assert rows["tflite", "fp16"].passed and rows["tflite", "fp16"].near_ties == 2
    assert not rows["tflite", "int8"].passed and rows["tflite", "int8"].accuracy == pytest.approx(0.885)
    assert not rows["saved_model", "fp32"].passed and rows["saved_model", "fp32"].max_abs_err == math.inf


def _strict_json(text: str):
    def refuse(constant):
        raise ValueError(f"not JSON: {constant}")

    return json.loads(text, parse_constant=refuse)


def test_to_json_round_trips_every_row_and_number(tmp_path) -> None:
    report = _report()
    report.write(tmp_path)
    back = _strict_json((tmp_path / "parity.json").read_text())  # NaN/Infinity would not be JSON
    assert back == report.to_json() == _strict_json(json.dumps(report.to_json()))
    for key in ("passed", "reference", "samples", "reference_accuracy", "reference_scale", "warnings", "data"):
        assert back[key] == getattr(report, key), key
    assert len(back["runtimes"]) == len(report.runtimes)
    for row, got in zip(report.runtimes, back["runtimes"]):
        assert set(got) == {f.name for f in fields(RuntimeResult)}
        for f in fields(RuntimeResult):
            value = getattr(row, f.name)
            if isinstance(value, float) and not math.isfinite(value):
                assert got[f.name] is None, f.name  # no number to give: null, never Infinity
            else:
                assert got[f.name] == value, (row.runtime, row.precision, f.name)
        if all(math.isfinite(v) for v in (getattr(row, f.name) for f in fields(RuntimeResult)) if isinstance(v, float)):
            assert RuntimeResult(**got) == row  # a finite row reads back as the very same row


def test_to_markdown_has_every_row_worst_first() -> None:
    report = _report()
    md = to_markdown(report)
    assert "pytorch" in md and "200 samples" in md and "FAILED" in md and "90.00%" in md
    table = [line for line in md.splitlines() if line.startswith("| ") and not line.startswith("| runtime")]
    assert len(table) == len(report.runtimes)
    for row in report.runtimes:
        (line,) = [t for t in table if t.startswith(f"| {row.runtime} | {row.precision} |")]
        assert f"| {row.artifact or '-'} |" in line
        if math.isfinite(row.max_abs_err):
            assert f"| {row.max_abs_err:.3g} |" in line and f"| {row.max_rel_err:.3g} |" in line, line
        assert line.rstrip().endswith("| yes |" if row.passed else f"| NO: {row.reason} |"), line
        if row.near_ties:
            assert f"{row.near_ties} near-ties" in line, line
        if row.accuracy is not None:
            assert f"{row.accuracy:.2%}" in line, line
    failed = [i for i, line in enumerate(table) if "| NO: " in line]
    assert failed == list(range(len(failed))) and len(failed) == 2  # failures first
    assert "> warning: a warning for the table" in md
    assert "> localised: tflite (dynamic_int8) first diverges at module `fc2`" in md
    assert "0.70 MB" in md
