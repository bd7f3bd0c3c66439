"""``parity.md``: a :class:`converter.parity.judge.ParityReport` as a Markdown table and its notes (warnings,
which outputs top-1 judged, localisation), worst row first. The report's ``to_markdown()`` is the public way in."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from converter.parity.judge import ParityReport, RuntimeResult


def report_markdown(report: ParityReport) -> str:
    """The report as a table, worst first (failures, then by relative error)."""
    rows = sorted(report.runtimes, key=lambda r: (r.passed, -_finite(r.max_rel_err)))
    sizes = f"; dynamic dims at {report.dynamic_dims}" if report.dynamic_dims else ""
    head = (f"Parity vs **{report.reference}** on {report.samples} samples ({report.data}{sizes}): "
            f"**{'PASSED' if report.passed else 'FAILED'}**")
    if report.reference_accuracy is not None:
        head += f" — reference accuracy {report.reference_accuracy:.2%}"
    lines = [head, "",
             "| runtime | precision | artifact | size | max abs err | mean abs err | max rel err | cosine min | top-1 agree | accuracy | passed |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(
            f"| {r.runtime} | {r.precision} | {r.artifact or '-'} | {_size(r.size_bytes)} | {r.max_abs_err:.3g} | {r.mean_abs_err:.3g} | "
            f"{r.max_rel_err:.3g} | {r.cosine_min:.6f} | {_agreement_cell(r)} | {_pct(r.accuracy)} | "
            f"{passed_cell(r.passed, r.reason)} |")
    lines += [f"> warning: {w}" for w in report.warnings]
    if report.class_axes:
        lines.append(judged_line(report.class_axes))
    lines += [localisation_line(r) for r in rows if r.localisation]
    if report.feeding:
        lines += ["", "How to feed the artifacts (every one takes the inputs by these names):", ""]
        lines += [f"- {line}" for line in report.feeding]
    return "\n".join(lines)


def judged_line(class_axes: dict[str, dict | None]) -> str:
    """Which outputs top-1 judged and which the error bound and cosine alone, e.g. ``> top-1 judged on: `logits`
    (axis 1, by name); error bound and cosine only: `last_hidden_state`, `pooler_output``."""
    judged = [f"`{name}` ({_axis_text(axis)})" for name, axis in class_axes.items() if axis is not None]
    alone = [f"`{name}`" for name, axis in class_axes.items() if axis is None]
    parts = ([f"top-1 judged on: {', '.join(judged)}"] if judged else []) + \
        ([f"error bound and cosine only: {', '.join(alone)}"] if alone else [])
    return "> " + "; ".join(parts)


def _axis_text(axis: dict) -> str:
    classes = axis.get("classes")
    by = {"user": "--class-axis", "name": "by name", "shape": "default-named [N, C]"}.get(axis.get("by"), axis.get("by"))
    return f"axis {axis['axis']}" + (f", classes {classes[0]}:{classes[1]}" if classes else "") + f", {by}"


def localisation_line(row: RuntimeResult) -> str:
    """The ``> localised: ...`` line of ``row`` in ``parity.md`` and on the terminal (:func:`to_markdown`), e.g.
    ``> localised: tflite (fp32) first diverges at module `conv1` (Conv, ONNX node `/conv1/Conv`): relative
    error 0.41 at its output, 2e-07 at its inputs``; a row not localised says why (skipped, error, or note)."""
    loc = row.localisation or {}
    where = f"{row.runtime} ({row.precision})"
    if loc.get("module"):
        inputs = ", ".join(f"{e:.2g}" for e in loc.get("rel_err_inputs") or []) or "-"
        return (f"> localised: {where} first diverges at module `{loc['module']}` ({loc.get('op', '?')}, ONNX node "
                f"`{loc.get('onnx_node', '?')}`): relative error {loc.get('rel_err_output', float('nan')):.3g} at its "
                f"output, {inputs} at its inputs")
    reason = loc.get("skipped") or loc.get("error") or loc.get("note") or "no single module exceeds the tolerance"
    return f"> localised: {where}: {reason}"


def _agreement_cell(row: RuntimeResult) -> str:
    if not row.near_ties:
        return _pct(row.top1_agreement)
    if row.decisive_agreement is None:  # nothing decisive to judge (e.g. a random-init detection head)
        return f"{_pct(row.top1_agreement)} (all {row.near_ties} near-ties)"
    return f"{_pct(row.top1_agreement)} ({_pct(row.decisive_agreement)} of decisive; {row.near_ties} near-ties)"


def _size(value: int | None) -> str:
    return "-" if value is None else (f"{value / 1e6:.2f} MB" if value >= 1e5 else f"{value / 1e3:.1f} kB")


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.2%}"


def _finite(value: float) -> float:
    return value if math.isfinite(value) else 1e300


def passed_cell(passed: bool, reason: str) -> str:
    """``yes``, ``yes (a note)`` for a row that passed with something to say (a dynamic-range file left float), or
    ``NO: why``."""
    if not passed:
        return f"NO: {reason}"
    return f"yes ({reason})" if reason else "yes"
