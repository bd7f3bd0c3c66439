"""The parity judge on hand-made outputs: near-ties excused (fp32: within the row's own bound), decisive flips never."""

from __future__ import annotations

import numpy as np
import pytest

from converter.parity.judge import compare, tolerance_for

# 100 samples over 10 classes; the first `n` samples' top-1 leads the runner-up by `lead` (fraction of max |logit|)
def _reference(lead: float, n: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    ref = rng.uniform(-1, 0, (100, 10)).astype(np.float32)
    ref[:, 0] = 1.0
    ref[:n, 1] = 1.0 - lead
    return ref


def _flip_first(ref: np.ndarray, n: int) -> np.ndarray:
    got = ref.copy()
    got[:n, 0], got[:n, 1] = ref[:n, 1], ref[:n, 0]
    return got


@pytest.mark.parametrize(
    ("precision", "lead", "flips", "passed", "near_ties"),
    [
        ("fp16", 0.005, 1, True, 1),  # a 0.5 % lead is inside fp16's 1 % tie margin: the flip is excused
        ("fp16", 0.02, 1, False, 0),  # a 2 % lead is decisive: the same flip fails (agreement bar 0.999)
        ("int8", 0.04, 5, True, 5),  # int8's tie margin is 5 % (cosine still gates the error itself)
        ("int8", 0.08, 5, False, 0),  # 5 decisive flips in 100: 95 % < the 97 % bar
        ("fp32", 0.005, 1, False, 0),  # fp32: a 0.5 % flip is beyond the |Δ| bound (2e-4 at scale 1): fails
        ("fp32", 1e-4, 1, True, 1),  # a flip that keeps |Δ| within the bound is a near-tie in fp32 too
    ],
)
def test_near_ties_are_excused_only_within_the_precision_margin(precision, lead, flips, passed, near_ties) -> None:
    ref = _reference(lead, flips)
    got = _flip_first(ref, flips)
    row = compare("tflite", precision, None, [ref], [got], None, None, tolerance_for(precision))
    assert row.top1_agreement == pytest.approx(1 - flips / 100)  # the raw agreement is reported as measured
    assert row.near_ties == near_ties
    assert row.passed is passed, row.reason
    if not passed and precision != "fp32":
        assert "decisive" in row.reason


def test_cosine_still_gates_when_every_prediction_is_a_tie() -> None:
    ref = np.ones((10, 4), np.float32)
    got = ref.copy()
    got[:, 0] = -1.0  # far off, but every reference prediction is a 4-way tie
    row = compare("tflite", "fp16", None, [ref], [got], None, None, tolerance_for("fp16"))
    assert row.near_ties == 10 and not row.passed and "cosine" in row.reason


#: (reference outputs, labels, how many warnings): when the comparison itself proves nothing
_VARIED = np.eye(3, dtype=np.float32)[np.arange(60) % 3] * 4.0 - 1.0  # predicts 0, 1, 2, 0, 1, 2, ...
_CONSTANT = np.tile(np.array([[-1.0, 0.5, 3.0]], np.float32), (60, 1))  # predicts class 2 for everything
WARNING_CASES = [
    ("varied predictions, labelled", _VARIED, np.arange(60) % 3, 0),
    ("one class for every labelled sample", _CONSTANT, np.arange(60) % 3, 1),
    ("one class, no labels (e.g. random inputs)", _CONSTANT, None, 0),
    ("one class, labels all that class too", _CONSTANT, np.full(60, 2), 0),
    ("one class on too few samples to tell", _CONSTANT[:10], np.arange(10) % 3, 0),
    ("flat outputs", np.full((60, 3), 1e-9, np.float32), None, 1),
]


@pytest.mark.parametrize(("case", "reference", "labels", "count"), WARNING_CASES, ids=[c[0] for c in WARNING_CASES])
def test_reference_warnings(case, reference, labels, count) -> None:
    """A labelled classifier that answers one class for everything (any artifact matches its accuracy by doing
    the same) and outputs too flat for any tolerance both make the report fail with a warning."""
    from converter.parity.judge import reference_warnings

    _, warnings = reference_warnings([reference], labels)
    assert len(warnings) == count, warnings


def test_the_keras_port_runs_at_its_own_batch_whatever_the_chunk() -> None:
    """The reference net's Keras port is fed KERAS_CHUNK samples per call (its last bits follow the batch), while
    the PyTorch rows run at side.FREE_CHUNK; its outputs come back whole and in order."""
    from converter._convert.side import FREE_CHUNK
    from converter.parity import runtimes

    seen: list[int] = []

    def keras_model(x, training: bool):
        seen.append(len(x))
        return x.reshape(len(x), -1).sum(axis=1, keepdims=True)

    x = np.arange(150 * 4, dtype=np.float32).reshape(150, 4)
    runner = runtimes.keras_native_runner(keras_model, [])
    out = runtimes.run_batched(runner, [x], FREE_CHUNK)
    assert FREE_CHUNK != runtimes.KERAS_CHUNK and seen == [64, 64, 22]
    np.testing.assert_array_equal(out[0], x.sum(axis=1, keepdims=True))
