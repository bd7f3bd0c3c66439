"""The benchmark machinery (not its timings): every runtime row, the Markdown table, valid PNGs, exact FLOPs.

One conversion of the reference net (random weights: accuracy is not under test here) and one
``scripts/benchmark --quick`` run (1 round, 20 batch-1 / 2 batch-64 calls, 512 digits) per module.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.conftest import ROOT, run_cli

ALL_RUNTIMES = ("pytorch", "torchscript", "torch_compile", "onnxruntime", "saved_model", "saved_model_xla",
                "tflite_fp32", "tflite_fp16", "tflite_dynamic_int8", "tflite_int8", "tflite_onnx2tf_raw",
                "tflite_litert", "tflite_fp32_aa")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def bench_run(tmp_path_factory, mnist_dir) -> tuple[Path, dict, str]:
    import torch

    from reference_models.mnist_cnn import MnistCNN

    work = tmp_path_factory.mktemp("bench")
    torch.manual_seed(0)
    torch.save(MnistCNN().state_dict(), work / "w.pt")
    out = work / "conv"
    conv = run_cli("convert", "mnist_cnn", "--weights", work / "w.pt", "--out", out, "--no-parity")
    assert conv.returncode == 0, conv.stderr
    # the litert-torch row (a ~3 GB venv, ~30 s of export) has its own slow test below
    runtimes = ["--runtimes", ",".join(r for r in ALL_RUNTIMES if r != "tflite_litert")]
    run = subprocess.run([str(ROOT / "scripts" / "benchmark"), str(out), "--quick", "--data", str(mnist_dir),
                          "--json", str(work / "b.json"), "--md", str(work / "b.md"), "--plots", str(work / "plots"),
                          *runtimes], capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    return work, json.loads((work / "b.json").read_text()), (work / "b.md").read_text()


@pytest.mark.slow
def test_the_litert_torch_row_runs_beside_ours(bench_run, mnist_dir):
    """litert-torch's own .tflite of the same source (its venv built if missing), timed beside ours, and checked."""
    work, _, _ = bench_run
    run = subprocess.run([str(ROOT / "scripts" / "benchmark"), str(work / "conv"), "--quick", "--data", str(mnist_dir),
                          "--runtimes", "tflite_fp32,tflite_litert,tflite_fp32_aa", "--json", str(work / "l.json"),
                          "--md", str(work / "l.md")], capture_output=True, text=True, timeout=1800)
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads((work / "l.json").read_text())
    rows = {r["runtime"]: r for r in result["rows"]}
    assert rows["tflite_litert"]["ok"], rows["tflite_litert"]["error"]
    assert rows["tflite_litert"]["latency_median_s"] > 0 and rows["tflite_litert"]["accuracy"] > 0
    (check,) = [c for c in result["checks"] if "litert-torch" in c["what"]]
    assert check["value"] > 0 and "A/A control" in check["what"]


def test_a_source_whose_weights_moved_is_a_one_line_error(bench_run, tmp_path):
    """The benchmark reloads the directory's PyTorch source (FLOPs, the torch rows): weights moved since the
    conversion stop it at once with one line naming the file, exit 2, before any child starts."""
    import shutil

    work, _, _ = bench_run
    moved = tmp_path / "conv"
    shutil.copytree(work / "conv", moved, ignore=shutil.ignore_patterns("bench"))
    manifest = json.loads((moved / "manifest.json").read_text())
    manifest["source"]["weights"] = str(tmp_path / "gone.pt")
    (moved / "manifest.json").write_text(json.dumps(manifest))
    run = subprocess.run([str(ROOT / "scripts" / "benchmark"), str(moved), "--quick"], capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 2, run.stderr[-2000:]
    lines = [ln for ln in run.stderr.splitlines() if ln.strip()]
    assert lines[-1].startswith("benchmark: error: ") and "gone.pt" in lines[-1], run.stderr[-2000:]
    assert "Traceback" not in run.stderr and not (moved / "bench").exists()


def test_every_runtime_has_a_row_with_positive_latency(bench_run, mnist_official):
    _, result, _ = bench_run
    digits = 512 if mnist_official else 500  # --quick scores 512 digits; the embedded fallback holds 500
    rows = {r["runtime"]: r for r in result["rows"]}
    assert set(rows) == set(ALL_RUNTIMES) - {"tflite_litert"}
    for name, row in rows.items():
        assert row["ok"], f"{name}: {row['error']}"
        assert 0 < row["latency_median_s"] <= row["latency_p90_s"], name
        assert row["throughput_sps"] > 0 and row["threads"] == 1, name
        assert row["batch64_mode"], name
        assert 0.0 <= row["accuracy"] <= 1.0 and row["accuracy_samples"] == digits, name


def test_batch64_mode_is_recorded_honestly(bench_run):
    rows = {r["runtime"]: r for r in bench_run[1]["rows"]}
    assert rows["pytorch"]["batch64_mode"] == "native"
    # the artifacts were exported with a fixed batch of 1: TFLite must be resized or looped, never "native"
    assert rows["tflite_fp32"]["batch64_mode"] in ("resized", "loop of batch-1 calls")
    assert rows["saved_model"]["batch64_mode"] == "loop of batch-1 calls"


def test_markdown_lists_every_runtime_and_the_checks(bench_run):
    _, _, md = bench_run
    lines = [line for line in md.splitlines() if line.startswith("| ")]
    for name in set(ALL_RUNTIMES) - {"tflite_litert"}:  # (its row: the slow test above)
        assert any(line.startswith(f"| {name} | 1 |") for line in lines), name
    assert "tflite_fp32 / raw onnx2tf tflite latency" in md
    assert "dynamic_int8 / fp32 latency" in md


def test_plots_are_valid_pngs(bench_run):
    work, result, _ = bench_run
    paths = [Path(p) for p in result["plots"]]
    assert {p.name for p in paths} == {"latency.png", "tradeoff.png"}
    for path in paths:
        assert path.parent == work / "plots"
        data = path.read_bytes()
        assert data[:8] == PNG_MAGIC, path
        width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")  # IHDR
        assert width > 300 and height > 200, (path, width, height)


def test_flop_count_of_the_reference_net_is_exact(bench_run):
    """Convention: FLOPs = 2 x MACs of Conv/Linear, bias included (a K-term dot product + bias = 2K FLOPs)."""
    conv = 26 * 26 * 32 * (1 * 3 * 3) * 2  # output positions x channels x (in_ch * kh * kw) x 2
    fc1 = 32 * 13 * 13 * 128 * 2
    fc2 = 128 * 10 * 2
    work = bench_run[1]["work"]
    assert [layer["flops"] for layer in work["layers"]] == [conv, fc1, fc2]
    assert work["flops_per_sample"] == conv + fc1 + fc2 == 1_776_384
    assert work["macs_per_sample"] == work["flops_per_sample"] // 2
    assert work["parameters"] == (32 * 9 + 32) + (5408 * 128 + 128) + (128 * 10 + 10)
    assert work["weight_bytes_fp32"] == 4 * work["parameters"]


def test_flop_count_without_a_benchmark():
    from converter.bench.roofline import count_flops
    from reference_models.mnist_cnn import MnistCNN

    work = count_flops(MnistCNN().eval(), (4, 1, 28, 28))  # per sample, whatever the batch
    assert work["flops_per_sample"] == 26 * 26 * 32 * 9 * 2 + 5408 * 128 * 2 + 128 * 10 * 2


def test_latency_floor_and_machine_rates_are_recorded(bench_run):
    result = bench_run[1]
    machine = result["machine"]["1"]
    assert machine["matmul_flops_s"] > 1e8 and machine["copy_bandwidth_bytes_s"] > 1e8
    for row in (r for r in result["rows"] if r["ok"]):
        assert row["floor_b1_s"] > 0 and row["latency_vs_floor"] > 0, row["runtime"]
    whats = " ".join(c["what"] for c in result["checks"])
    assert "tflite_fp32 / raw onnx2tf tflite latency (A/A control" in whats
    assert "dynamic_int8 / fp32 latency" in whats



def test_training_variants_map_to_trainer_flags(tmp_path):
    from converter.bench.training import TrainingBenchConfig, argv_for

    cfg = TrainingBenchConfig(epochs=1, batch_size=32, train_data="embedded", eval_data=None)
    flags = {"--compile", "--batch-size", "--train-data"}
    argv = argv_for("torch_compile", cfg, tmp_path / "o", flags)
    assert argv[1:] == ["--framework", "torch", "--out", str(tmp_path / "o"), "--epochs", "1", "--compile",
                        "--batch-size", "32", "--train-data", "embedded"]
    assert argv_for("keras_jit_compile", cfg, tmp_path / "o", flags) is None  # trainer lacks --jit-compile


def test_training_markdown_shows_ratios_and_device():
    from converter.bench.training import TrainingBenchConfig, _result, to_markdown

    def run(sps: list[float], acc: float) -> dict:
        proc = {"returncode": 0, "wall_s": 10.0, "peak_tree_rss": 2 ** 30, "tail": ""}
        metrics = {"samples_per_second": sum(sps) / len(sps), "epoch_samples_per_second": sps,
                   "test_accuracy": acc, "device": "cpu"}
        return {"process": proc, "metrics": metrics, "argv": ["--framework", "torch"]}

    result = _result(TrainingBenchConfig(), {"torch_eager": [run([100, 100], 0.9)],
                                             "torch_compile": [run([20, 300], 0.9)]}, {}, None)
    (ratio,) = result["ratios"]
    assert ratio["value"] == 1.6 and ratio["last_epoch"] == 3.0
    md = to_markdown(result)
    assert "| torch_compile | cpu | 160 | 300 | 90.00 % |" in md
    assert "| torch_compile / torch_eager samples/s | 1.60x | 3.00x | 2-5x |" in md


# ----------------------------------------------------------- the litert-torch row, without the litert venv


def _fake_row(runtime: str, latency_s: float, ok: bool = True) -> dict:
    return {"runtime": runtime, "threads": 1, "ok": ok, "latency_median_s": latency_s, "accuracy": None}


def test_tflite_fp32_is_checked_against_litert_torch_with_the_aa_control():
    from converter.bench.core import _checks
    from converter.bench.serving_report import TARGET_TFLITE_VS_LITERT

    rows = [_fake_row("tflite_fp32", 100e-6), _fake_row("tflite_litert", 125e-6), _fake_row("tflite_fp32_aa", 102e-6)]
    (check,) = _checks(rows)
    assert check["what"] == "t=1 tflite_fp32 / litert-torch tflite latency (A/A control, same file twice: 1.020)"
    assert check["value"] == 0.8 and check["target"] == TARGET_TFLITE_VS_LITERT and check["met"]
    assert _checks([rows[0], _fake_row("tflite_litert", 0.0, ok=False)]) == []  # a FAILED peer: no ratio


def test_litert_row_plumbing(tmp_path):
    from converter.bench import core, litert, runtimes

    cfg = core.BenchConfig(out_dir=tmp_path)
    args = core._mnist_args(cfg, None, tmp_path / "litert_torch.tflite")
    assert args[args.index("--tflite") + 1] == str(tmp_path / "litert_torch.tflite")
    argv = litert.litert_command(Path("/v/bin/python"), "mnist_cnn", Path("/o/m.tflite"), input_shape=(1, 1, 28, 28),
                                 weights="/w/model.pt")
    assert argv[3:] == ["mnist_cnn", "/o/m.tflite", "--input-shape", "1,1,28,28", "--weights", "/w/model.pt"]
    manifest = {"source": {"kind": "reference"}, "inputs": [{"pytorch_shape": [1, 1, 28, 28],
                                                             "perm_from_pytorch": [0, 2, 3, 1]}]}
    # litert-torch's file keeps the PyTorch layout; an ONNX source has no PyTorch module to give it
    _, precision, perm = runtimes.tflite_file("tflite_litert", tmp_path, manifest, None, Path("/l.tflite"))
    assert (precision, perm) == ("fp32", (0, 1, 2, 3))
    assert core._available("tflite_litert", tmp_path, manifest)
    assert not core._available("tflite_litert", tmp_path, {**manifest, "source": {"kind": "onnx"}})


def test_a_litert_export_that_failed_leaves_its_row_failed_with_the_reason(tmp_path):
    from converter.bench import core

    cfg = core.BenchConfig(out_dir=tmp_path, log=lambda m: None)
    reason = "litert-torch export failed (exit 2): litert_child: RuntimeError: no"
    (row,) = core._run_threads(cfg, ["tflite_litert"], 1, None, reason, tmp_path, {"source": {}, "artifacts": {}})
    assert not row["ok"] and row["error"] == reason and row["runtime"] == "tflite_litert"


def test_litert_child_builds_the_module_the_pytorch_rows_load():
    """The litert venv has no TensorFlow: the child's module comes from the torch-only source loader."""
    import torch

    from converter._convert.sources import load_model
    from converter.bench.litert_child import source_module

    module, (sample,) = source_module("mnist_cnn", None, (1, 1, 28, 28))
    assert tuple(sample.shape) == (1, 1, 28, 28) and not module.training
    with torch.no_grad():
        assert torch.equal(module(sample), load_model("mnist_cnn").module(sample))
