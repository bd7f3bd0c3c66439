"""The parity judge, table by table, through its public functions only (``compare``, ``tolerance_for``,
``reference_warnings``, ``classes.resolve``, ``ParityReport``/``RuntimeResult`` and its ``to_json``/``to_markdown``/
``raise_if_failed``).

Cases: the fp32 bound ``max|Δ| <= atol + rtol·max|ref|`` per sample (just inside / just outside, default and
overridden tolerances), samples of different scales, NaN/Inf masks across several outputs, a failure in a second
output, near-ties per precision (fp32's: within twice its own bound), which outputs are class scores (the name
rule, ``--class-axis`` and its errors) and how hidden states, detection heads and LM logits are judged, int8
judged by accuracy drop on labelled data, and the report's JSON/Markdown/exception.
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

from converter.errors import ConverterError, InputError, ParityFailed
from converter.options import ConvertOptions
from converter.parity.classes import resolve
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


SCALE_CASES = [
    # id, precision, candidate for the small output (given its reference), reason fragment
    ("fp32: the small output's sign flipped", "fp32", lambda r: -r, "output #1 'embedding': |Δ|"),
    ("fp32: the small output off by 10 % of its own scale", "fp32", lambda r: r * 1.1, "output #1 'embedding': |Δ|"),
    ("fp16: the small output's sign flipped", "fp16", lambda r: -r, "output #1 'embedding': cosine"),
    ("int8: the small output's sign flipped", "int8", lambda r: -r, "output #1 'embedding': cosine"),
]


@pytest.mark.parametrize(("case", "precision", "make", "fragment"), SCALE_CASES, ids=[c[0] for c in SCALE_CASES])
def test_each_output_is_judged_against_its_own_scale(case, precision, make, fragment) -> None:
    """Boxes that reach 480 beside an embedding of 1e-3: judged together, any embedding passes (the bound is
    atol + rtol·480 and the cosine is the boxes'); each output against its own scale, a wrong one fails."""
    rng = np.random.default_rng(0)
    boxes, embedding = rng.uniform(0, 480, (50, 4, 20)), rng.normal(0, 1e-3, (50, 16))
    row = compare("tflite", precision, None, [boxes, embedding], [boxes.copy(), make(embedding)], None, None,
                  tolerance_for(precision), output_names=["boxes", "embedding"], class_axes=[None, None])
    assert not row.passed and fragment in row.reason, row.reason
    exact = compare("tflite", precision, None, [boxes, embedding], [boxes.copy(), embedding.copy()], None, None,
                    tolerance_for(precision), output_names=["boxes", "embedding"], class_axes=[None, None])
    assert exact.passed and exact.cosine_min == pytest.approx(1.0) and exact.max_rel_err == 0.0


# ------------------------------------------------------------------------------------------ near-ties

NEAR_TIE_CASES = [
    # id, precision, tolerance overrides, lead of the tied samples (x max|ref|), tied samples, flipped samples,
    # passes, near-ties, fragment of the reason
    ("fp16: flips at a 0.9 % lead are excused", "fp16", {}, 0.009, 3, 3, True, 3, ""),
    ("fp16: a flip at a 1.1 % lead is decisive", "fp16", {}, 0.011, 1, 1, False, 0, "top-1 agreement"),
    ("fp16: ties counted even when none flips", "fp16", {}, 0.005, 7, 0, True, 7, ""),
    ("fp16: 2 excused flips, 1 decisive flip fails", "fp16", {}, 0.005, 2, 3, False, 2, "top-1 agreement"),
    ("dynamic_int8: 4 flips at a 4.5 % lead are excused", "dynamic_int8", {}, 0.045, 4, 4, True, 4, ""),
    ("dynamic_int8: 4 flips at a 5.5 % lead fail (96 % < 97 %)", "dynamic_int8", {}, 0.055, 4, 4, False, 0,
     "top-1 agreement 0.9600 < 0.97"),
    ("int8: 10 excused flips although raw agreement is 90 %", "int8", {}, 0.045, 10, 10, True, 10, ""),
    ("int8: 3 decisive flips meet the 97 % bar exactly", "int8", {}, 0.055, 3, 3, True, 0, ""),
    # fp32 (bound 1e-4 + 1e-4·1 = 2e-4 per sample at scale 1): a lead within twice the bound is a near-tie, so a
    # flip that keeps |Δ| inside the bound never fails the row; one that does not fails on |Δ|, not on top-1
    ("fp32: a flip at a 1e-4 lead keeps |Δ| inside the bound: a near-tie", "fp32", {}, 1e-4, 1, 1, True, 1, ""),
    ("fp32: 3 flips at a 1.9e-4 lead, inside the bound", "fp32", {}, 1.9e-4, 3, 3, True, 3, ""),
    ("fp32: a flip at a 3e-4 lead breaks the bound", "fp32", {}, 3e-4, 1, 1, False, 1, "|Δ| 0.0003 > 0.0002"),
    ("fp32: a flip at a 0.1 % lead breaks the bound", "fp32", {}, 1e-3, 1, 1, False, 0, "|Δ| 0.001 > 0.0002"),
    ("fp32: --atol 1 makes every lead below 2 a near-tie", "fp32", {"atol": 1.0}, 1e-3, 1, 1, True, 200, ""),
]


@pytest.mark.parametrize(("case", "precision", "overrides", "lead", "tied", "flipped", "passed", "near_ties", "fragment"),
                         NEAR_TIE_CASES, ids=[c[0] for c in NEAR_TIE_CASES])
@pytest.mark.parametrize("in_output", [0, 1])
def test_near_ties(case, precision, overrides, lead, tied, flipped, passed, near_ties, fragment, in_output) -> None:
    ref = _with_lead(100, lead, list(range(tied)))
    got = _flip(ref, list(range(flipped)))  # the first `flipped` samples; beyond `tied` they are decisive flips
    other = _with_lead(100, 0.5, [], seed=3)  # an output with no ties and no flips
    refs, gots = [ref, other], [got, other.copy()]
    if in_output == 1:
        refs, gots = refs[::-1], gots[::-1]
    row = _judge(precision, refs, gots, **overrides)
    assert row.passed is passed, row.reason
    assert row.near_ties == near_ties
    assert row.top1_agreement == pytest.approx(1 - flipped / 100)  # reported over every prediction
    if near_ties < 100:
        decisive_flips = flipped - min(flipped, near_ties)  # the tied samples are the first ones flipped
        assert row.decisive_agreement == pytest.approx(1 - decisive_flips / (100 - near_ties))
    else:
        assert row.decisive_agreement is None  # every prediction is a near-tie: top-1 judges nothing
    assert fragment in row.reason, row.reason
    if not passed and "top-1" in fragment:
        assert f"({near_ties} near-ties excluded)" in row.reason, row.reason


# ------------------------------------------------------------------------------------------ which outputs are classes

RULE_CASES = [
    # output name, PyTorch shape, class axis (None: error bound and cosine only), which rule decided
    ("logits", (4, 10), 1, "name"),
    ("logits", (4, 16, 1000), 2, "name"),  # a language model: one prediction per token
    ("logits", (4, 19, 8, 8), 1, "name"),  # segmentation logits [N, C, H, W]: the channel axis
    ("Logits", (4, 10), 1, "name"),
    ("start_logits", (4, 16), 1, "name"),
    ("pred_logits", (2, 100, 92), 2, "name"),  # DETR: one prediction per query
    ("logits_per_image", (4, 3), 1, "name"),
    ("probs", (4, 5), 1, "name"),
    ("class_scores", (4, 5), 1, "name"),
    ("output", (4, 10), 1, "shape"),  # an image classifier's default-named logits, as always
    ("output_1", (4, 10), 1, "shape"),
    ("output3", (4, 10), 1, "shape"),
    ("23", (4, 10), 1, "shape"),  # torch.onnx.export without output_names
    (None, (4, 10), 1, "shape"),
    ("output", (4, 16, 10), None, None),  # default-named 3-D: a sequence of features, not classes
    ("output", (4, 3, 8, 8), None, None),
    ("output0", (1, 84, 2100), None, None),  # a YOLO head: boxes and scores on one axis
    ("last_hidden_state", (2, 16, 32), None, None),
    ("hidden_states", (2, 16, 32), None, None),
    ("pooler_output", (2, 32), None, None),  # 2-D, but named: not a classifier
    ("embeddings", (2, 32), None, None),
    ("boxes", (2, 100, 4), None, None),
    ("logits", (4, 1), None, None),  # one class: no argmax to compare
    ("output", (4,), None, None),
]


@pytest.mark.parametrize(("name", "shape", "axis", "by"), RULE_CASES, ids=[f"{c[0]} {list(c[1])}" for c in RULE_CASES])
def test_the_class_axis_rule(name, shape, axis, by) -> None:
    (found,) = resolve([name], [shape])
    assert (found and found.axis, found and found.by) == (axis, by)


DECLARED_CASES = [
    # id, outputs {name: shape}, --class-axis entries, expected {name: (axis, start, stop)} or error fragment
    ("a YOLO head's classes: channels 4..83 of axis 1", {"output0": (1, 84, 2100)}, [("output0", 1, 4, 84)],
     {"output0": (1, 4, 84)}),
    ("a negative axis", {"output0": (1, 84, 2100)}, [("output0", -2, 4, None)], {"output0": (1, 4, 84)}),
    ("hidden states named by the user", {"last_hidden_state": (2, 16, 32)}, [("last_hidden_state", 2, 0, None)],
     {"last_hidden_state": (2, 0, None)}),
    ("none: judged by the bound only", {"logits": (4, 10), "scores": (4, 100)}, [("scores", None, 0, None)],
     {"logits": (1, 0, None), "scores": None}),
    ("an unknown name", {"output0": (1, 84, 2100)}, [("scores", 1, 0, None)],
     "--class-axis scores: the model has no output 'scores' (its outputs: output0)"),
    ("an axis beyond the rank", {"logits": (4, 10)}, [("logits", 2, 0, None)],
     "--class-axis logits:2: output 'logits' has shape [4, 10], so axis 2 is out of range"),
    ("the batch axis", {"logits": (4, 10)}, [("logits", 0, 0, None)], "so axis 0 is the batch axis"),
    ("classes beyond the axis", {"output0": (1, 84, 2100)}, [("output0", 1, 4, 90)],
     "axis 1 of output 'output0' has 84 channels, so classes 4:90 exceed it"),
    ("one class", {"output0": (1, 84, 2100)}, [("output0", 1, 83, None)], "so classes 83:84 are fewer than 2"),
]


@pytest.mark.parametrize(("case", "outputs", "declared", "expected"), DECLARED_CASES, ids=[c[0] for c in DECLARED_CASES])
def test_declared_class_axes(case, outputs, declared, expected) -> None:
    if isinstance(expected, str):
        with pytest.raises(InputError) as info:
            resolve(list(outputs), list(outputs.values()), declared)
        assert expected in str(info.value) and "\n" not in str(info.value), str(info.value)
        return
    found = resolve(list(outputs), list(outputs.values()), declared)
    assert {n: a and (a.axis, a.start, a.stop) for n, a in zip(outputs, found)} == expected


def _detection(n: int = 2, anchors: int = 300, seed: int = 0) -> np.ndarray:
    """A YOLO-style head [n, 84, anchors]: box coordinates up to 640 on channels 0..3, 80 class scores after them.
    Anchors 0..99 have a decisive best class (lead 0.5); the rest are random-init near-ties (leads ~1e-5)."""
    rng = np.random.default_rng(seed)
    head = np.empty((n, 84, anchors))
    head[:, :4] = rng.uniform(0, 640, (n, 4, anchors))
    head[:, 4:] = 0.5 + 1e-4 * rng.standard_normal((n, 80, anchors))
    head[:, 4 + 7, :100] = 1.0
    return head


def _swap_best(head: np.ndarray, anchors, classes: slice = slice(4, 84)) -> np.ndarray:
    """``head`` with the best and second-best class scores of ``anchors`` (of sample 0) swapped."""
    got = head.copy()
    for a in anchors:
        scores = got[0, classes, a]
        first, second = np.argsort(scores)[-1], np.argsort(scores)[-2]
        scores[first], scores[second] = scores[second], scores[first]
        got[0, classes, a] = scores
    return got


def _hidden(seed: int = 0) -> np.ndarray:
    """[4, 16, 32] hidden states whose values along the last axis are nearly equal (argmax is noise)."""
    return 1.0 + 1e-6 * np.random.default_rng(seed).standard_normal((4, 16, 32))


_HIDDEN = _hidden()
_HIDDEN_NOISY = _HIDDEN + 5e-5 * np.random.default_rng(1).standard_normal(_HIDDEN.shape)  # inside the bound, flips
_HIDDEN_OFF = _HIDDEN.copy()
_HIDDEN_OFF[2, 3, 4] += 1e-3
_STATES = np.random.default_rng(4).standard_normal((4, 16, 32))
_HEAD = _detection()
_HEAD_CLOSE = _HEAD * (1 + 1e-7 * np.random.default_rng(2).standard_normal(_HEAD.shape))  # the issue: 1.3e-7 rel
_YOLO = [("output0", 1, 4, 84)]
_LM = _logits([5.0] * 64, classes=50).reshape(4, 16, 50)
_LM_FLIP = _flip(_LM.reshape(64, 50), [5]).reshape(4, 16, 50)
OUTPUT_KIND_CASES = [
    # id, precision, output name, reference, candidate, --class-axis, passes, top-1 agreement (None: not judged),
    # fragment of the reason
    ("hidden states: argmax flips inside the bound are no failure", "fp32", "last_hidden_state", _HIDDEN,
     _HIDDEN_NOISY, [], True, None, ""),
    ("hidden states: a value beyond the bound fails", "fp32", "last_hidden_state", _HIDDEN, _HIDDEN_OFF, [], False,
     None, "|Δ| 0.001 > 0.0002"),
    ("hidden states, fp16: cosine judges", "fp16", "last_hidden_state", _HIDDEN, _HIDDEN_NOISY, [], True, None, ""),
    ("int8 hidden states scrambled: cosine fails", "int8", "last_hidden_state", _STATES, _STATES[..., ::-1], [],
     False, None, "cosine"),
    ("int8 hidden states 1 % off: cosine passes", "int8", "last_hidden_state", _STATES, _STATES * 1.01 + 0.01, [],
     True, None, ""),
    ("detection head, 1.3e-7 rel off: no class axis, passes", "fp32", "output0", _HEAD, _HEAD_CLOSE, [], True,
     None, ""),
    ("detection head with its class axis: near-tie flips excused", "fp32", "output0", _HEAD,
     _swap_best(_HEAD_CLOSE, range(100, 130)), _YOLO, True, 0.95, ""),
    ("detection head fp16: near-tie flips excused", "fp16", "output0", _HEAD, _swap_best(_HEAD, range(100, 130)),
     _YOLO, True, 0.95, ""),
    ("detection head fp16: a decisive anchor flip fails", "fp16", "output0", _HEAD, _swap_best(_HEAD, [3]), _YOLO,
     False, 1 - 1 / 600, "top-1 agreement 0.9950 < 0.999 on decisive predictions (400 near-ties excluded)"),
    ("detection head fp16 without a class axis: the same flip is in cosine only", "fp16", "output0", _HEAD,
     _swap_best(_HEAD, [3]), [], True, None, ""),
    ("language-model logits: one prediction per token", "fp16", "logits", _LM, _LM_FLIP, [], False, 1 - 1 / 64,
     "top-1 agreement 0.9844"),
    ("the same logits declared none: cosine judges the flip", "fp16", "logits", _LM, _LM_FLIP, [("logits", None)],
     False, None, "cosine 0.988031 < 0.999"),
]


@pytest.mark.parametrize(("case", "precision", "name", "reference", "candidate", "declared", "passed", "agreement",
                          "fragment"), OUTPUT_KIND_CASES, ids=[c[0] for c in OUTPUT_KIND_CASES])
def test_outputs_are_judged_by_what_they_are(case, precision, name, reference, candidate, declared, passed,
                                             agreement, fragment) -> None:
    declared = [ConvertOptions(class_axes=tuple(declared)).class_axes] if declared else [()]
    axes = resolve([name], [reference.shape], *declared)
    row = compare("saved_model", precision, None, [reference], [candidate], None, None, tolerance_for(precision),
                  [name], axes)
    assert row.passed is passed, row.reason
    assert fragment in row.reason, row.reason
    if agreement is None:
        assert row.top1_agreement is None and row.near_ties is None
    else:
        assert row.top1_agreement == pytest.approx(agreement)
    if "near-tie flips excused" in case:
        # every flipped anchor is a near-tie; fp32's limit is twice the row's bound (scores share it with boxes)
        assert row.near_ties >= 30 and row.decisive_agreement in (None, 1.0), (row.near_ties, row.decisive_agreement)


def test_accuracy_and_the_constant_class_warning_need_a_class_axis() -> None:
    ref, labels = _labelled(40, wrong=0)  # predicts class 0 for every sample
    assert compare("tflite", "int8", None, [ref], [ref], labels, 1.0, tolerance_for("int8"), ["logits"]).accuracy == 1.0
    row = compare("tflite", "int8", None, [ref], [ref], labels, 1.0, tolerance_for("int8"), ["pooler_output"])
    assert row.accuracy is None and row.top1_agreement is None and row.passed
    labels[::2] = 1
    assert len(reference_warnings([ref], labels, output_names=["logits"])[1]) == 1
    assert reference_warnings([ref], labels, output_names=["pooler_output"])[1] == []


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
    ("a flat output beside a real one: the scale is the largest, the flat one is named",
     [_flat(), _logits([4.0] * 30)], ["feats", "logits"], 4.0,
     [["reference output 'feats' peaks at 1e-09", "its comparison proves nothing", "do not return that output"]]),
    ("a small output beside a large one is no warning", [_logits([1e-3] * 30), _logits([480.0] * 30)], None, 480.0, []),
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
    axes = resolve(["logits", "pooler_output", "output0"], [(200, 10), (200, 32), (1, 84, 2100)], _YOLO)
    return ParityReport(passed=False, reference="pytorch", samples=200, runtimes=rows,
                        reference_accuracy=reference_accuracy, reference_scale=0.5,
                        warnings=["a warning for the table"], data="200 real MNIST digits: test",
                        class_axes={n: a and a.to_json() for n, a in zip(["logits", "pooler_output", "output0"], axes)})


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
    assert list(back) == ["passed", "reference", "samples", "runtimes", "reference_accuracy", "reference_scale",
                          "warnings", "data", "class_axes", "feeding", "dynamic_dims"]  # only ever appended
    for key in ("passed", "reference", "samples", "reference_accuracy", "reference_scale", "warnings", "data",
                "class_axes"):
        assert back[key] == getattr(report, key), key
    assert back["class_axes"] == {"logits": {"axis": 1, "classes": None, "by": "name"}, "pooler_output": None,
                                  "output0": {"axis": 1, "classes": [4, 84], "by": "user"}}
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
    md = report.to_markdown()
    assert md == to_markdown(report)  # the module function stays for existing callers
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
    assert ("> top-1 judged on: `logits` (axis 1, by name), `output0` (axis 1, classes 4:84, --class-axis); "
            "error bound and cosine only: `pooler_output`") in md.splitlines()


RAISE_CASES = [
    # id, which rows fail (by index into _report()'s rows), warnings, fragments of the one-line message
    ("two failing rows", None, ["a warning for the table"],
     ["parity failed vs pytorch: tflite (int8): accuracy drop 1.50 pp > 1 pp",
      "saved_model (fp32): 1 NaN/Inf values where the reference is finite"]),
    ("only a warning", [], ["reference outputs peak at 1e-09"], ["parity failed vs pytorch: reference outputs peak"]),
]


@pytest.mark.parametrize(("case", "failing", "warnings", "fragments"), RAISE_CASES, ids=[c[0] for c in RAISE_CASES])
def test_raise_if_failed(case, failing, warnings, fragments) -> None:
    report = _report()
    report.warnings = warnings
    if failing is not None:
        for k, row in enumerate(report.runtimes):
            row.passed, row.reason = (False, row.reason) if k in failing else (True, "")
    with pytest.raises(ParityFailed) as info:
        report.raise_if_failed()
    exc = info.value
    assert isinstance(exc, ConverterError) and exc.exit_code == 1 and exc.report is report
    message = str(exc)
    assert "\n" not in message, message
    for fragment in fragments:
        assert fragment in message, message
    assert exc.__notes__ == [report.to_markdown()]  # the table, under the message in a traceback / pytest


def test_raise_if_failed_returns_a_passed_report() -> None:
    report = _report()
    report.passed, report.warnings = True, []
    for row in report.runtimes:
        row.passed, row.reason = True, ""
    assert report.raise_if_failed() is report



@pytest.mark.parametrize("poison", ["none", "nan_on_both_sides", "nan_on_one_side", "inf_in_reference_only"])
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_a_prepared_reference_judges_exactly_like_the_plain_outputs(poison: str, precision: str) -> None:
    """Parity prepares the reference once for all its rows (``prepare_reference``); every field of every row must
    be what the plain outputs give, finite or not."""
    from dataclasses import asdict

    from converter.parity import judge

    rng = np.random.default_rng(11)
    ref = [rng.standard_normal((6, 10)).astype(np.float32), rng.standard_normal((6, 3, 4)).astype(np.float32)]
    got = [r + rng.standard_normal(r.shape).astype(np.float32) * 1e-6 for r in ref]
    if poison == "nan_on_both_sides":
        ref[1][2, 1, 1] = got[1][2, 1, 1] = np.nan
    elif poison == "nan_on_one_side":
        got[0][3, 4] = np.nan
    elif poison == "inf_in_reference_only":
        ref[1][0, 0, 0] = np.inf
    tol = judge.tolerance_for(precision)
    plain = judge.compare("r", precision, None, ref, got, None, None, tol, ["logits", "extra"])
    prepared = judge.compare("r", precision, None, judge.prepare_reference(ref), got, None, None, tol,
                             ["logits", "extra"])
    assert json.dumps(asdict(prepared), default=str) == json.dumps(asdict(plain), default=str)
    assert plain.passed is (poison in ("none", "nan_on_both_sides")), plain.reason
