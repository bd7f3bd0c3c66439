"""Parity metrics, the tolerance table, and the report (JSON + Markdown).

Every runtime is compared with the reference (PyTorch eval mode; onnxruntime for ``.onnx`` sources) on the
same real inputs, in the PyTorch layout. Metrics are scale-aware: ``max_rel_err`` divides each sample's
worst absolute error by that sample's largest reference magnitude, so a 1e-4 error means the same on
logits of 0.1 and of 100. Top-1 agreement (and accuracy) is measured only on outputs that are class scores
(:mod:`converter.parity.classes` says which); every other output is judged by the error bound and cosine.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from converter._convert.layout import nonfinite_mismatch
from converter.errors import ParityFailed
from converter.parity import metrics
from converter.parity.classes import ClassAxis, by_rule
from converter.parity.markdown import localisation_line, report_markdown  # noqa: F401  (localisation_line: re-export)

#: Default pass criteria per precision (README "Parity tolerances" shows this same table).
#: fp32: allclose-style bound |Δ| <= atol + rtol·max|ref| on every sample, plus identical top-1 on decisive
#: predictions. fp16: top-1 agreement and per-sample cosine. int8: accuracy drop vs the reference (labels) or,
#: without labels, top-1 agreement and cosine. Top-1 applies to class-score outputs only (:mod:`.classes`).
#: ``tie_margin`` (reduced precisions): a prediction whose reference top-1 lead over the runner-up is at
#: most this fraction of the sample's largest |class score| is a *near-tie* — within the rounding that precision
#: is allowed, so its flip says nothing about the conversion. Agreement is judged on the other (decisive)
#: predictions; the report still shows agreement over all of them and how many were near-ties. A trained
#: classifier has almost no near-ties; random-weight zoo nets have many. fp32 rows have no ``tie_margin``: their
#: near-ties are the predictions that lead by at most twice the row's own bound (atol + rtol·max|ref| of the
#: sample; each of the two scores may move by the bound), so a flip is never an fp32 failure while |Δ| holds.
#: ``localise_rel_err`` is no pass criterion (:func:`tolerance_for` leaves it out of the rows): the relative error
#: (:func:`converter.parity.metrics.relative_error`) at which localisation counts one module's output as
#: diverged at that precision (:mod:`converter.diagnosis.localise`). The int8 keep-float search aims above this
#: table's int8 row (:data:`converter.quantization.quantise.MIN_AGREEMENT` says by how much and why).
TOLERANCES: dict[str, dict[str, float]] = {
    "fp32": {"atol": 1e-4, "rtol": 1e-4, "top1_agreement": 1.0, "cosine_min": 0.99999, "localise_rel_err": 1e-3},
    "fp16": {"top1_agreement": 0.999, "cosine_min": 0.999, "tie_margin": 0.01, "localise_rel_err": 1e-2},
    "dynamic_int8": {"accuracy_drop_pp": 1.0, "top1_agreement": 0.97, "cosine_min": 0.98, "tie_margin": 0.05,
                     "localise_rel_err": 0.05},
    "int8": {"accuracy_drop_pp": 1.0, "top1_agreement": 0.97, "cosine_min": 0.98, "tie_margin": 0.05,
             "localise_rel_err": 0.05},
}
#: Keys of :data:`TOLERANCES` that other stages read and the pass/fail judge does not.
DIAGNOSIS_KEYS = ("localise_rel_err",)
#: A reference whose largest magnitude is below this makes any absolute comparison vacuous.
DEGENERATE_SCALE = 1e-6
#: labelled samples from which one predicted class for all of them flags a degenerate classifier
MIN_VARIED = 20


@dataclass
class RuntimeResult:
    runtime: str
    precision: str
    artifact: str | None
    max_abs_err: float
    mean_abs_err: float
    max_rel_err: float
    cosine_min: float
    top1_agreement: float | None
    accuracy: float | None
    tolerance: dict
    passed: bool
    reason: str = ""
    #: predictions whose reference lead is within ``tie_margin`` (excluded from the judged agreement)
    near_ties: int | None = None
    #: top-1 agreement over the decisive predictions (what ``tie_margin`` precisions are judged on)
    decisive_agreement: float | None = None
    batch_sizes: list[int] = field(default_factory=list)
    size_bytes: int | None = None
    localisation: dict | None = None


@dataclass
class ParityReport:
    """Every runtime's row against the reference; ``passed`` when every row passed and no warning was raised.

    ``class_axes``: output name -> how top-1 judged it (``{"axis": 1, "classes": [4, 84] | None, "by": "user" |
    "name" | "shape"}``), or None for an output judged by the error bound and cosine only."""

    passed: bool
    reference: str
    samples: int
    runtimes: list[RuntimeResult]
    reference_accuracy: float | None = None
    reference_scale: float = 0.0
    warnings: list[str] = field(default_factory=list)
    data: str = ""
    class_axes: dict[str, dict | None] = field(default_factory=dict)
    #: how to feed each artifact (names, dtypes, layouts, TFLite's own input order): :mod:`converter._convert.feeding`
    feeding: list[str] = field(default_factory=list)
    #: the sizes parity ran each dynamic dimension at (``seq = 16 and 8``), empty without ``--dynamic-dim``
    dynamic_dims: str = ""

    def to_json(self) -> dict:
        """What ``parity.json`` holds, as plain JSON types: the fields above in this order, ``runtimes`` a list of
        dicts with every :class:`RuntimeResult` field. A number that does not exist (the errors of a row that could
        not run: infinite) is None, never ``Infinity``/``NaN``. Fields are only ever added, never renamed."""
        out = asdict(self)
        return json.loads(json.dumps(out, default=_jsonable), parse_constant=lambda c: None)

    def to_markdown(self) -> str:
        """What ``parity.md`` holds (and the command prints): the table, worst row first, then the warnings, which
        outputs top-1 judged, each localised row, and how to feed each artifact."""
        return report_markdown(self)

    def raise_if_failed(self) -> "ParityReport":
        """This report if it passed; else raise :class:`converter.errors.ParityFailed` (exit code 1), whose one-line
        message names each failing row and why, then the warnings that fail the report; the table travels as
        the exception's note (shown under the message in a traceback or by pytest) and ``exc.report`` is this."""
        if self.passed:
            return self
        why = "; ".join([f"{r.runtime} ({r.precision}): {r.reason}" for r in self.failures()] + self.warnings)
        exc = ParityFailed(f"parity failed vs {self.reference}: {why or 'no runtime was compared'}",
                           "the artifacts are kept; parity.md has the table")
        exc.report = self
        exc.add_note(self.to_markdown())
        raise exc

    def failures(self) -> list[RuntimeResult]:
        return [r for r in self.runtimes if not r.passed]

    def write(self, out_dir: Path) -> None:
        (out_dir / "parity.json").write_text(json.dumps(self.to_json(), indent=2, allow_nan=False) + "\n")
        (out_dir / "parity.md").write_text(self.to_markdown() + "\n")


def _jsonable(value):
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    raise TypeError(type(value))


def failed_row(runtime: str, precision: str, artifact: str | None, tolerance: dict, reason: str) -> RuntimeResult:
    """The row of a runtime that produced no outputs at all (artifact not built, or not runnable)."""
    return RuntimeResult(runtime, precision, artifact, math.inf, math.inf, math.inf, -1.0, None, None, tolerance,
                         False, reason)


def tolerance_for(precision: str, atol: float | None = None, rtol: float | None = None) -> dict:
    """The pass criteria of ``precision`` (a row's ``tolerance``), with the fp32 bound's overrides."""
    tol = {k: v for k, v in TOLERANCES[precision].items() if k not in DIAGNOSIS_KEYS}
    if atol is not None:
        tol["atol"] = atol
    if rtol is not None:
        tol["rtol"] = rtol
    return tol


def top1(output: np.ndarray, class_axis: ClassAxis | None = None) -> np.ndarray | None:
    """Class predictions along ``class_axis``; without one, along the axis the rule gives an unnamed output
    (:func:`converter.parity.classes.by_rule`: the last axis of [N, C]); None when there is no class axis."""
    axis = class_axis or by_rule(None, output.shape)
    return None if axis is None else axis.top1(output)


def class_axes_of(outputs: Sequence[np.ndarray], output_names: Sequence[str] | None = None
                  ) -> list[ClassAxis | None]:
    """The class axis of each output by the rule alone (its name and shape; no ``--class-axis``)."""
    names = list(output_names or [])
    return [by_rule(names[k] if k < len(names) else None, o.shape) for k, o in enumerate(outputs)]


@dataclass(frozen=True)
class Reference:
    """A reference's outputs with what every comparison against them needs, computed once
    (:func:`prepare_reference`): parity compares 6-10 rows against the same reference, and these passes over it
    were half of each comparison (yolov8n's 100 samples: ~0.1 s a row)."""

    outputs: list[np.ndarray]
    flat: np.ndarray  # [N, features] float64, NaN/Inf kept
    finite: bool  # no NaN/Inf anywhere
    peak: np.ndarray  # [N]: each sample's largest finite |value|


def prepare_reference(outputs: Sequence[np.ndarray] | Reference) -> Reference:
    """``outputs`` ready for :func:`compare` (a :class:`Reference` passes through)."""
    if isinstance(outputs, Reference):
        return outputs
    outputs = list(outputs)
    flat = _flat64(outputs)
    finite = bool(np.isfinite(flat).all())
    clean = flat if finite else np.where(np.isfinite(flat), flat, 0.0)
    peak = np.max(np.abs(clean), axis=1) if clean.size else np.zeros(len(clean))
    return Reference(outputs, flat, finite, peak)


def _flat64(outputs: Sequence[np.ndarray]) -> np.ndarray:
    return np.concatenate([np.asarray(o).reshape(len(o), -1) for o in outputs], axis=1).astype(np.float64)


def compare(
    runtime: str,
    precision: str,
    artifact: str | None,
    reference: list[np.ndarray] | Reference,
    candidate: list[np.ndarray],
    labels: np.ndarray | None,
    reference_accuracy: float | None,
    tolerance: dict,
    output_names: Sequence[str] | None = None,
    class_axes: Sequence[ClassAxis | None] | None = None,
) -> RuntimeResult:
    """All metrics for one runtime (every output; the worst output decides, and a failure's reason names it:
    ``output #1 'boxes': ...``, numbered from 0 in the model's order; ``output_names`` label them).

    Top-1 agreement (and accuracy) is measured on the outputs with a class axis: ``class_axes``, one entry per
    output (:func:`converter.parity.classes.resolve`; None: the rule on ``output_names`` and shapes). A flip whose
    reference lead is a near-tie (``tie_margin``; fp32: within twice the row's bound) never fails the row.

    NaN/Inf (nobuco-style): the NaN, +Inf and -Inf masks of reference and runtime are compared before any value.
    A position that is NaN/Inf on one side only, or a different kind of non-finite on the two sides, fails the
    row, and the reason counts each kind of mismatch (NaN != NaN, so a value comparison would pass or crash).
    Where the masks agree, the errors, cosine and tolerances are computed on the finite positions only: a
    runtime that reproduces the reference's NaN exactly passes this row, and the report still fails through
    :func:`reference_warnings`, which refuses a reference that outputs NaN/Inf at all.

    An output whose shape differs from the reference's (or a missing one) fails the row, naming it. ``reference``:
    the outputs, or a :class:`Reference` prepared once for many rows (same result).
    """
    prepared = prepare_reference(reference)
    reference = prepared.outputs
    wrong = next((k for k, (r, c) in enumerate(zip(reference, candidate)) if np.shape(r) != np.shape(c)), None)
    if wrong is not None or len(candidate) != len(reference):
        what = (f"output {_output_label(wrong, output_names)} has shape {list(np.shape(candidate[wrong]))}, the "
                f"reference {list(np.shape(reference[wrong]))}" if wrong is not None else
                f"{len(candidate)} outputs, the reference {len(reference)}")
        return failed_row(runtime, precision, artifact, tolerance, what)
    ref = prepared.flat
    got = _flat64(candidate)
    axes = list(class_axes) if class_axes is not None else class_axes_of(reference, output_names)
    accuracy = accuracy_of(candidate[0], labels, axes[0]) if axes[0] is not None else None
    agreement = top1_agreement(reference, candidate, axes)
    near_ties, decisive = decisive_agreement(reference, candidate, tolerance.get("tie_margin"), axes,
                                             bound=_row_bound(tolerance, prepared.peak))
    both_finite = prepared.finite and bool(np.isfinite(got).all())
    mismatch = "" if both_finite else _nonfinite_mismatch(ref, got)
    if mismatch:
        return RuntimeResult(runtime, precision, artifact, math.inf, math.inf, math.inf, -1.0, agreement, accuracy,
                             tolerance, False, _mismatched_outputs(reference, candidate, output_names) + mismatch,
                             near_ties, decisive)
    if both_finite:
        diff = np.abs(got - ref)
        mean_abs = float(diff.mean()) if diff.size else 0.0
    else:
        mask = np.isfinite(ref)  # == np.isfinite(got) here
        ref, got = np.where(mask, ref, 0.0), np.where(mask, got, 0.0)
        diff = np.abs(got - ref)
        mean_abs = float(diff[mask].mean()) if mask.any() else 0.0
    per_sample, scale = metrics.per_sample_of(diff, prepared.peak)
    max_abs = float(per_sample.max())
    max_rel = float((per_sample / scale).max())  # == metrics.relative_error(ref, got): these are its parts
    cosine = cosine_min(ref, got)
    judged = agreement if near_ties is None else decisive
    passed, reason = _judge(precision, tolerance, per_sample, scale, cosine, judged, accuracy, reference_accuracy)
    if reason.startswith("top-1") and near_ties is not None:
        reason += f" on decisive predictions ({near_ties} near-ties excluded)"
    if not passed:
        reason = _which_output(reason, precision, reference, candidate, labels, reference_accuracy, tolerance,
                               output_names, axes)
    elif len(reference) > 1:
        # each output against its own scale too: judged together, a small output (an embedding beside boxes that
        # reach 480) would be held to the large one's bound and cosine, and could be wrong entirely
        for k, alone in _each_output(precision, reference, candidate, labels, reference_accuracy, tolerance, axes):
            max_rel, cosine = max(max_rel, alone.max_rel_err), min(cosine, alone.cosine_min)
            if passed and not alone.passed:
                passed, reason = False, f"output {_output_label(k, output_names)}: {alone.reason}"
    return RuntimeResult(runtime, precision, artifact, max_abs, mean_abs, max_rel, cosine, agreement, accuracy,
                         tolerance, passed, reason, near_ties, decisive)


def _each_output(precision: str, reference, candidate, labels, reference_accuracy, tolerance: dict,
                 axes: Sequence[ClassAxis | None]):
    """(k, the row of output k judged alone) for every output whose reference is not degenerate (a reference output
    that peaks below ``DEGENERATE_SCALE`` has no scale to judge against: :func:`reference_warnings` fails the report
    on it instead)."""
    for k, ref in enumerate(reference):
        peak = _finite_peak(ref)
        if peak is not None and peak >= DEGENERATE_SCALE:
            yield k, _alone(k, precision, reference, candidate, labels, reference_accuracy, tolerance, axes)


def _alone(k: int, precision: str, reference, candidate, labels, reference_accuracy, tolerance: dict,
           axes: Sequence[ClassAxis | None]) -> RuntimeResult:
    """Output ``k`` judged as if it were the model's only one (labels and accuracy belong to the first output)."""
    return compare("", precision, None, [reference[k]], [candidate[k]], labels if k == 0 else None,
                   reference_accuracy if k == 0 else None, tolerance, class_axes=[axes[k]])


def _finite_peak(output: np.ndarray) -> float | None:
    """An output's largest finite |value|; None when it has none."""
    finite = np.abs(output[np.isfinite(output)])
    return float(finite.max()) if finite.size else None


def _which_output(reason: str, precision: str, reference, candidate, labels, reference_accuracy, tolerance: dict,
                  output_names: Sequence[str] | None, axes: Sequence[ClassAxis | None]) -> str:
    """``reason`` prefixed with the first output that fails when judged alone (the row judges them together);
    unchanged for a single output, or when no output fails alone (e.g. a cosine over all of them)."""
    if len(reference) < 2:
        return reason
    for k in range(len(reference)):
        alone = _alone(k, precision, reference, candidate, labels, reference_accuracy, tolerance, axes)
        if not alone.passed:
            return f"output {_output_label(k, output_names)}: {alone.reason}"
    return reason


def _output_label(k: int, output_names: Sequence[str] | None) -> str:
    return f"#{k}" + (f" {output_names[k]!r}" if output_names is not None and k < len(output_names) else "")


def _mismatched_outputs(reference, candidate, output_names: Sequence[str] | None) -> str:
    """``output #1 'boxes': `` (or ``outputs #0, #1: ``) naming where the NaN/Inf masks differ; "" for one output."""
    if len(reference) < 2:
        return ""
    which = [_output_label(k, output_names) for k, (r, c) in enumerate(zip(reference, candidate))
             if nonfinite_mismatch(r.reshape(r.shape[0], -1), c.reshape(c.shape[0], -1)).any()]
    return f"output{'s' if len(which) > 1 else ''} {', '.join(which)}: "


def _nonfinite_mismatch(ref: np.ndarray, got: np.ndarray) -> str:
    """Why the NaN/Inf masks of ``ref`` and ``got`` ([N, features]) differ, or "" when they agree."""
    wrong = nonfinite_mismatch(ref, got)
    if not wrong.any():
        return ""
    ref_ok, got_ok = np.isfinite(ref), np.isfinite(got)
    counts = [(int((wrong & ref_ok).sum()), "NaN/Inf values where the reference is finite"),
              (int((wrong & got_ok).sum()), "finite values where the reference is NaN/Inf"),
              (int((wrong & ~ref_ok & ~got_ok).sum()), "NaN/Inf values of another kind than the reference's")]
    first = int(np.flatnonzero(wrong.any(axis=1))[0])
    return "; ".join(f"{n} {what}" for n, what in counts if n) + f" (first on sample {first})"


def _judge(precision, tol, per_sample, scale, cosine, agreement, accuracy, reference_accuracy) -> tuple[bool, str]:
    if "atol" in tol:
        bound = tol["atol"] + tol.get("rtol", 0.0) * scale
        worst = int(np.argmax(per_sample - bound))
        if per_sample[worst] > bound[worst]:
            return False, (f"|Δ| {per_sample[worst]:.3g} > {bound[worst]:.3g} "
                           f"(atol {tol['atol']:g} + rtol {tol.get('rtol', 0):g}·|ref|) on sample {worst}")
    drop_limit = tol.get("accuracy_drop_pp")
    if drop_limit is not None and accuracy is not None and reference_accuracy is not None:
        drop = (reference_accuracy - accuracy) * 100
        if drop > drop_limit + 1e-9:  # 1 sample in 100 is exactly 1 pp, not more
            return False, f"accuracy drop {drop:.2f} pp > {drop_limit:g} pp"
        return True, ""
    need = tol.get("top1_agreement")
    if need is not None and agreement is not None and agreement < need:
        return False, f"top-1 agreement {agreement:.4f} < {need:g}"
    need = tol.get("cosine_min")
    if need is not None and cosine < need:
        return False, f"cosine {cosine:.6f} < {need:g}"
    return True, ""


def cosine_min(ref: np.ndarray, got: np.ndarray) -> float:
    num = np.sum(ref * got, axis=1)
    den = np.linalg.norm(ref, axis=1) * np.linalg.norm(got, axis=1)
    both_zero = (den == 0) & (np.abs(ref).max(axis=1) == 0) & (np.abs(got).max(axis=1) == 0)
    cos = np.where(both_zero, 1.0, num / np.where(den == 0, 1.0, den))
    return float(cos.min())


def top1_agreement(reference: list[np.ndarray], candidate: list[np.ndarray],
                   class_axes: Sequence[ClassAxis | None] | None = None) -> float | None:
    """The lowest, over outputs with a class axis (``class_axes``; None: the rule on unnamed outputs), fraction of
    predictions (per sample; per position or anchor of a [N, ..., C] output) whose top-1 matches the reference."""
    scores = []
    for r, c, axis in zip(reference, candidate, _axes(class_axes, reference)):
        if axis is not None:
            scores.append(float(np.mean(axis.top1(r) == axis.top1(c))))
    return min(scores) if scores else None


def decisive_agreement(reference: list[np.ndarray], candidate: list[np.ndarray], tie_margin: float | None,
                       class_axes: Sequence[ClassAxis | None] | None = None, *, bound: np.ndarray | None = None
                       ) -> tuple[int | None, float | None]:
    """(near-ties, agreement over the decisive predictions) for outputs with a class axis; (None, None) when
    neither ``tie_margin`` nor ``bound`` is given or no output has classes. A prediction is decisive when the
    reference's top-1 leads the runner-up by more than ``tie_margin`` x that sample's largest |class score| and,
    with ``bound`` (a row's per-sample error bound atol + rtol·scale, [N]: fp32's), by more than twice the bound:
    a smaller lead can flip while every value stays within the bound."""
    if tie_margin is None and bound is None:
        return None, None
    ties, scores = 0, []
    for r, c, axis in zip(reference, candidate, _axes(class_axes, reference)):
        if axis is None:
            continue
        lead = axis.lead(r)
        limit = np.zeros(lead.shape)
        if bound is not None:  # a precision with both (fp16 under --atol): a near-tie by either counts as one
            limit = np.maximum(limit, 2.0 * bound.reshape((-1,) + (1,) * (lead.ndim - 1)))
        if tie_margin is not None:
            limit = np.maximum(limit, tie_margin * axis.scale(r))
        decisive = lead > limit
        ties += int((~decisive).sum())
        if decisive.any():
            scores.append(float(np.mean(axis.top1(r)[decisive] == axis.top1(c)[decisive])))
    if not scores and not ties:
        return None, None
    return ties, (min(scores) if scores else None)


def _axes(class_axes: Sequence[ClassAxis | None] | None, reference: Sequence[np.ndarray]) -> list[ClassAxis | None]:
    return list(class_axes) if class_axes is not None else class_axes_of(reference)


def _row_bound(tolerance: dict, peak: np.ndarray) -> np.ndarray | None:
    """An fp32 row's per-sample bound atol + rtol·max|ref| ([N]; ``peak``: each sample's largest finite |ref|);
    None without atol."""
    if "atol" not in tolerance:
        return None
    return tolerance["atol"] + tolerance.get("rtol", 0.0) * peak


def accuracy_of(output: np.ndarray, labels: np.ndarray | None, class_axis: ClassAxis | None = None) -> float | None:
    """The fraction of samples whose top-1 (along ``class_axis``; None: the rule for an unnamed output) is the
    label; None without labels, or when the output holds no single prediction per sample."""
    pred = top1(output, class_axis)
    if labels is None or pred is None or pred.ndim != 1:
        return None
    return float(np.mean(pred == labels[: len(pred)]))


def reference_warnings(reference: list[np.ndarray], labels: np.ndarray | None = None, *,
                       reference_name: str | None = None, output_names: Sequence[str] | None = None,
                       class_axes: Sequence[ClassAxis | None] | None = None) -> tuple[float, list[str]]:
    """The reference's scale (its largest finite magnitude), and a warning when it makes the comparison
    meaningless: outputs too flat for any tolerance to matter, outputs that are NaN/Inf for some samples (no
    tolerance can judge those positions, and the NaN usually means broken weights or inputs outside the model's
    domain, not something to convert faithfully), or (on labelled data) a classifier that predicts the same
    class for every sample, whose accuracy and agreement any artifact matches by answering that class too.

    ``reference_name`` (e.g. ``pytorch``) and ``output_names`` only make the NaN/Inf warning name them;
    ``class_axes`` (None: the rule on the names) say whether the first output is a classifier's."""
    peaks = [_finite_peak(r) for r in reference]
    scale = max((peak for peak in peaks if peak is not None), default=0.0)

    def which(k: int) -> str:
        return repr(output_names[k]) if output_names and k < len(output_names) else f"#{k}"

    warnings = []
    for k, r in enumerate(reference):
        bad = int((~np.isfinite(r.reshape(r.shape[0], -1))).any(axis=1).sum()) if r.ndim and r.size else 0
        if bad:
            who = f"the reference ({reference_name})" if reference_name else "the reference"
            warnings.append(f"{who} outputs NaN/Inf for {bad} of {len(r)} samples (output {which(k)}): parity cannot "
                            "judge them — fix the model or its weights")
    # all NaN/Inf: the warning above says why; "peaks at 0" would only mislead
    nothing_finite = any(r.size for r in reference) and all(peak is None for peak in peaks)
    if scale < DEGENERATE_SCALE and not nothing_finite:
        warnings.append(f"reference outputs peak at {scale:.3g}: any absolute tolerance passes, so this "
                        "comparison proves nothing — give the model real weights (or calibrate BatchNorm)")
    elif len(reference) > 1:  # one output that flat beside others: its own comparison proves nothing
        for k, peak in enumerate(peaks):
            if peak is not None and peak < DEGENERATE_SCALE:
                warnings.append(f"reference output {which(k)} peaks at {peak:.3g}: any absolute tolerance passes on "
                                "it, so its comparison proves nothing — give the model real weights (or calibrate "
                                "BatchNorm), or do not return that output")
    axes = list(class_axes) if class_axes is not None else class_axes_of(reference, output_names)
    predicted = top1(reference[0], axes[0]) if reference and axes[0] is not None else None
    if labels is not None and predicted is not None and predicted.ndim == 1 and len(predicted) >= MIN_VARIED \
            and len(np.unique(predicted)) == 1 and len(np.unique(labels[:len(predicted)])) > 1:
        warnings.append(f"the reference predicts class {int(predicted[0])} for all {len(predicted)} labelled samples: "
                        "accuracy and top-1 agreement prove nothing — train the model (or use varied data)")
    return scale, warnings


def to_markdown(report: ParityReport) -> str:
    """:meth:`ParityReport.to_markdown` (kept for existing callers)."""
    return report.to_markdown()
