"""scripts/bench_train's table logic (the runs themselves are too slow for the test suite)."""

from __future__ import annotations

import os
from pathlib import Path

from reference_models import bench


def test_tables_name_the_rows_the_report_needs() -> None:
    assert {bench.TORCH_DEFAULT, bench.KERAS, "torch --loader torchvision"} <= set(bench.CONFIGS)
    assert not set(bench.CONFIGS) & set(bench.EXTRA_CONFIGS)


def test_ratio_is_paired_within_rounds(capsys) -> None:
    rates = {bench.TORCH_DEFAULT: [1000.0, 4000.0, 3000.0], "torch --loader torchvision": [500.0, 1000.0, 900.0],
             bench.KERAS: [4000.0, 5000.0, 3600.0]}
    bench.print_table(rates)
    out = capsys.readouterr().out
    assert "1.25x median of paired rounds" in out  # ratios 4.0, 1.25, 1.2 -> median 1.25
    assert "1.25x best vs best" in out and "target <= 1.5x: met" in out


def test_script_is_executable_and_uses_the_venv() -> None:
    script = Path(__file__).resolve().parents[1] / "scripts" / "bench_train"
    assert os.access(script, os.X_OK)
    assert ".venv/bin/python" in script.read_text()
