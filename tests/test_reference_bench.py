"""scripts/bench_train (:mod:`converter.bench.training`), run for real at its smallest size (1 round of 1 epoch per
variant on the embedded digits, ~30 s on 2 shared cores), and its table logic on synthetic numbers."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from converter.bench import training as bench

ROOT = Path(__file__).resolve().parents[1]
#: "torch (default: tensor loader)    3,161    3,161    0.82x": name, best, median, keras/this
ROW = re.compile(r"^(?P<name>\S.*?)\s{2,}(?P<best>[\d,]+)\s+(?P<median>[\d,]+)\s+(?P<ratio>\d+\.\d\d)x$")
ROUND = re.compile(r"^round (?P<round>\d+): (?P<name>\S.*?)\s{2,}(?P<rate>[\d,]+) samples/s$")
SUMMARY = re.compile(r"^keras / torch default: (?P<median>\d+\.\d\d)x median of paired rounds, (?P<best>\d+\.\d\d)x "
                     r"best vs best \(target <= 1\.5x: (?P<verdict>met|NOT met)\)$")


def _number(text: str) -> float:
    return float(text.replace(",", ""))


@pytest.fixture(scope="module")
def bench_run(tmp_path_factory) -> tuple[subprocess.CompletedProcess, Path]:
    tmp = tmp_path_factory.mktemp("bench_train-tmp")
    run = subprocess.run([str(ROOT / "scripts" / "bench_train"), "--rounds", "1", "--epochs", "1"],
                         capture_output=True, text=True, timeout=300, cwd=tmp, env={**os.environ, "TMPDIR": str(tmp)})
    assert run.returncode == 0, run.stderr[-3000:]
    return run, tmp


def test_bench_train_measures_every_variant_and_its_ratios_agree(bench_run) -> None:
    run, tmp = bench_run
    rows = {m["name"]: m for m in map(ROW.match, run.stdout.splitlines()) if m}
    rounds = {m["name"]: m for m in map(ROUND.match, run.stderr.splitlines()) if m}
    (summary,) = [m for m in map(SUMMARY.match, run.stdout.splitlines()) if m]
    torch_names = [n for n in rows if n.startswith("torch")]
    (keras_name,) = [n for n in rows if n.startswith("keras")]
    (torch_default,) = [n for n in torch_names if "default" in n]
    assert len(rows) >= 3 and len(torch_names) >= 2, run.stdout  # torch default, torch torchvision, keras
    assert set(rounds) == set(rows), (run.stdout, run.stderr)  # one round: one measurement per variant
    assert {m["round"] for m in rounds.values()} == {"1"}

    rates = {}
    for name, row in rows.items():
        best, median, measured = _number(row["best"]), _number(row["median"]), _number(rounds[name]["rate"])
        assert best > 0 and median > 0, row.group(0)
        assert best == median == measured, (row.group(0), rounds[name].group(0))  # one round: all the same figure
        rates[name] = measured

    # the printed ratios are the printed rates' (integers, so within rounding of the last digit)
    keras, torch = rates[keras_name], rates[torch_default]
    for name, row in rows.items():
        assert float(row["ratio"]) == pytest.approx(keras / rates[name], abs=0.011), row.group(0)
    assert float(rows[keras_name]["ratio"]) == 1.0
    ratio = float(summary["median"])
    assert ratio == pytest.approx(keras / torch, abs=0.011), summary.group(0)
    assert float(summary["best"]) == ratio  # one round: its paired ratio is the best-vs-best ratio
    assert float(rows[torch_default]["ratio"]) == ratio
    assert summary["verdict"] == ("met" if ratio <= 1.5 else "NOT met")
    assert list(tmp.iterdir()) == []  # the training runs' output went to a temporary directory, now removed


def test_tables_name_the_rows_the_report_needs() -> None:
    assert {bench.TORCH_DEFAULT, bench.KERAS, "torch --loader torchvision"} <= set(bench.BENCH_TRAIN.values())
    assert not set(bench.BENCH_TRAIN) & set(bench.BENCH_TRAIN_EXTRA)
    assert set(bench.BENCH_TRAIN) | set(bench.BENCH_TRAIN_EXTRA) <= set(bench.VARIANTS)  # one table of variants


def test_ratio_is_paired_within_rounds(capsys) -> None:
    rates = {bench.TORCH_DEFAULT: [1000.0, 4000.0, 3000.0], "torch --loader torchvision": [500.0, 1000.0, 900.0],
             bench.KERAS: [4000.0, 5000.0, 3600.0]}
    bench.print_table(rates)
    out = capsys.readouterr().out
    assert "1.25x median of paired rounds" in out  # ratios 4.0, 1.25, 1.2 -> median 1.25
    assert "1.25x best vs best" in out and "target <= 1.5x: met" in out
