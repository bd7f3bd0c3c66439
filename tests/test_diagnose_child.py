"""Localisation of a spec-given model runs in a child process: a model that cannot load beside TensorFlow
is still localised, and a child that crashes costs the diagnosis only, never the conversion."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import run_cli

ARGS = ("--input-shape", "1,3,8,8", "--precision", "fp32", "--localise", "--parity-samples", "8")
#: runtimes localisation replays (the others are skipped: pytorch, torchscript)
REPLAYED = {"onnxruntime", "saved_model", "tf2onnx_roundtrip", "tflite"}


def _rows(out: Path) -> dict[str, dict]:
    report = json.loads((out / "parity.json").read_text())
    return {row["runtime"]: row for row in report["runtimes"]}


def test_model_that_crashes_beside_tensorflow_is_localised(tmp_path):
    """Loading it in the TF process (as localisation did) died with exit 139 and no output."""
    result = run_cli("convert", "tests.toy_faults:crashes_beside_tensorflow", *ARGS, "--out", "OUT", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    rows = _rows(tmp_path / "OUT")
    assert REPLAYED <= rows.keys()
    for runtime in REPLAYED:
        localisation = rows[runtime]["localisation"]
        assert "error" not in localisation, localisation
        assert localisation["checked_modules"] == 2 and localisation["reproduced"] is False
    assert "PyTorch hooks" in rows["saved_model"]["localisation"]["method"]
    assert "skipped" in rows["pytorch"]["localisation"]


def test_crashing_localisation_child_does_not_fail_the_conversion(tmp_path):
    tmpdir = tmp_path / "tmpdir"
    tmpdir.mkdir()
    work = tmp_path / "work"
    work.mkdir()
    result = run_cli("convert", "tests.toy_faults:crashes_in_localisation", *ARGS, "--out", "OUT", cwd=work,
                     tmpdir=tmpdir)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    rows = _rows(work / "OUT")
    for runtime in REPLAYED | {"pytorch", "torchscript"}:
        error = rows[runtime]["localisation"]["error"]
        assert "crashed (exit -11, SIGSEGV)" in error and "crashing the localisation child" in error, error
    assert "the localisation child process crashed (exit -11" in result.stdout  # the terminal says so too
    assert [p.name for p in work.iterdir()] == ["OUT"]  # no .OUT.partial-*
    # .ses: onnxruntime's native library writes it into TMPDIR on import
    assert [p.name for p in tmpdir.iterdir() if p.name != ".ses"] == []
