"""Progress on long work: the command names each stage and the elapsed time (lines in a log, a live status line on
a terminal), says nothing extra with ``--quiet``, and the manifest keeps each stage's time."""

from __future__ import annotations

import io
import json
import re

import pytest

from converter._convert.progress import Reporter, reporting, stage
from tests.conftest import run_cli

STAGES = ["loading the model and exporting it to ONNX", "translating ONNX to TensorFlow (onnx2tf, 1 nodes)",
          "writing the SavedModel", "writing model_fp32.tflite",
          "parity: the SavedModel back to ONNX (tf2onnx round trip)", "writing model_fp16.tflite",
          "parity: the PyTorch reference outputs (computed beside the TF build)",
          "parity: 12 samples through every runtime"]
LINE = re.compile(r"^convert: \[\s*(\d+\.\d) s\] (.+)$")


@pytest.mark.parametrize("quiet", [False, True], ids=["log", "quiet"])
def test_the_command_names_each_stage_with_the_elapsed_time(tmp_path, quiet: bool) -> None:
    done = run_cli("convert", "tests.toy_models:tiny_linear", "--input-shape", "1,4", "--precision", "fp32,fp16",
                   "--parity-samples", "12", "--out", tmp_path / "out", *(["--quiet"] if quiet else []))
    assert done.returncode == 0, done.stderr
    lines = [LINE.match(line) for line in done.stderr.splitlines()]
    stages = [m.group(2) for m in lines if m]
    times = [float(m.group(1)) for m in lines if m]
    assert stages == ([] if quiet else STAGES), done.stderr
    assert times == sorted(times)
    timings = json.loads((tmp_path / "out" / "manifest.json").read_text())["timings_s"]
    assert {"pytorch_stage", "onnx_to_tf", "saved_model", "tflite_fp32", "tflite_fp16", "pytorch_reference_wait", "parity",
            "total"} <= set(timings)
    assert "PASSED" in done.stdout  # the table is printed either way


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_on_a_terminal_one_live_line_shows_the_stage() -> None:
    terminal = _Terminal()
    with reporting(Reporter(terminal)):
        stage("writing the SavedModel")
    text = terminal.getvalue()
    assert "convert: writing the SavedModel" in text and "\x1b[" in text  # rich redraws the line in place
    assert "[    " not in text  # not the log format


def test_library_calls_are_silent_unless_asked(capsys) -> None:
    stage("nobody listens")
    log = io.StringIO()
    with reporting(Reporter(log, live=False, prefix="mine")):
        stage("one")
    assert capsys.readouterr().err == "" and re.fullmatch(r"mine: \[\s*0\.\d s\] one\n", log.getvalue())
