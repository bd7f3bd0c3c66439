"""The conversion benchmark's arithmetic: paired per-round ratios and the target checks built from them."""

from __future__ import annotations

from pathlib import Path

import pytest

from converter.bench.convert import ConvertBenchConfig, _result, paired_ratios, to_markdown
from converter.bench.proc import ProcResult, summarise


def _runs(name: str, walls: list[float], failed: tuple[int, ...] = ()) -> list[ProcResult]:
    return [ProcResult(name, 1 if k in failed else 0, w, w, 2**30, 2**29) for k, w in enumerate(walls)]


@pytest.mark.parametrize(("walls", "raw", "failed", "raw_failed", "expected"), [
    ([4.0, 6.0], [8.0, 8.0], (), (), [0.5, 0.75]),
    ([4.0, 6.0, 3.0], [8.0, 8.0, 6.0], (1,), (), [0.5, 0.5]),  # a failed round has no ratio
    ([4.0, 6.0, 3.0], [8.0, 8.0, 6.0], (), (0,), [0.75, 0.5]),  # nor a round whose baseline failed
])
def test_paired_ratios_skip_failed_rounds(walls, raw, failed, raw_failed, expected) -> None:
    assert paired_ratios(_runs("c", walls, failed), _runs("raw", raw, raw_failed)) == pytest.approx(expected)


def test_paired_median_is_robust_to_drift_and_checked_against_the_target() -> None:
    """Raw onnx2tf drifts from 5 to 8 s across rounds and convert with it (0.7x in every round): the paired
    median is 0.7x with range 0.7-0.7 and meets the 0.8x target; a candidate that is 0.625-1.0x of its rounds
    gets its real range reported beside the median."""
    raw = _runs("onnx2tf_raw", [5.0, 5.0, 8.0, 8.0, 8.0])
    conv = _runs("convert_no_parity", [3.5, 3.5, 5.6, 5.6, 5.6])
    others = {n: _runs(n, [5.0] * 5) for n in ("convert_parity", "convert_parity_all")}
    results = {"onnx2tf_raw": raw, "convert_no_parity": conv, **others}
    out = _result(ConvertBenchConfig(weights=Path("w.pt"), parity_data="random"),
                  {n: summarise(n, r) for n, r in results.items()}, {},
                  {n: paired_ratios(r, raw) for n, r in results.items()})
    checks = {c["what"]: c for c in out["checks"]}
    paired = checks["convert_no_parity / onnx2tf_raw (wall, median of 5 paired rounds)"]
    assert paired["value"] == pytest.approx(0.7) and paired["met"] and paired["range"] == [0.7, 0.7]
    assert checks["convert_no_parity / onnx2tf_raw (wall)"]["value"] == pytest.approx(0.7)  # medians 5.6 / 8
    slow = checks["convert_parity / onnx2tf_raw (wall, median of 5 paired rounds)"]
    assert slow["value"] == pytest.approx(0.625) and slow["range"] == [0.625, 1.0]
    assert "(range 0.7-0.7)" in to_markdown(out)
