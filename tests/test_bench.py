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
                "tflite_fp32_aa")
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
    run = subprocess.run([str(ROOT / "scripts" / "benchmark"), str(out), "--quick", "--data", str(mnist_dir),
                          "--json", str(work / "b.json"), "--md", str(work / "b.md"), "--plots", str(work / "plots")],
                         capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    return work, json.loads((work / "b.json").read_text()), (work / "b.md").read_text()


def test_every_runtime_has_a_row_with_positive_latency(bench_run, mnist_official):
    _, result, _ = bench_run
    digits = 512 if mnist_official else 500  # --quick scores 512 digits; the embedded fallback holds 500
    rows = {r["runtime"]: r for r in result["rows"]}
    assert set(rows) == set(ALL_RUNTIMES)
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
    for name in ALL_RUNTIMES:
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
    for row in result["rows"]:
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
