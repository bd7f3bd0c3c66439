"""How long and how much memory conversion costs: ``convert`` against the raw ``onnx2tf`` CLI it wraps.

Four candidates, each a separate process, run interleaved (order rotated each round) and repeated;
the medians are compared as ratios, which survive a noisy shared machine better than absolute seconds:

- ``convert_no_parity``: ``convert MODEL --weights W --precision fp32,fp16 --no-parity`` — the same
  artifacts raw onnx2tf writes (SavedModel + float32/float16 TFLite), plus the ONNX export;
- ``onnx2tf_raw``: ``onnx2tf -i model.onnx -o DIR`` in a temporary cwd, on the ONNX file of a first convert;
- ``convert_parity``: the same conversion with parity on ``parity_samples`` real digits (8 rows: PyTorch,
  TorchScript, onnxruntime, SavedModel, TFLite fp32/fp16, Keras-native, tf2onnx round trip) — the target's job;
- ``convert_parity_all``: the default ``convert`` — all four precisions (two int8 conversions more, one of them
  calibrated) and parity on every runtime; reported beside the others, with no target of its own.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from converter.bench.proc import GIB, ProcResult, Summary, rotated, run_measured, summarise

TARGET_NO_PARITY = 0.8  # convert / raw onnx2tf, same artifacts
TARGET_PARITY = 1.2  # convert with parity on 1000 digits / raw onnx2tf
TARGET_PEAK_GIB = 1.5


@dataclass
class ConvertBenchConfig:
    weights: Path
    parity_data: str
    model: str = "mnist_cnn"
    parity_samples: int = 1000
    rounds: int = 3
    workdir: Path | None = None
    bin_dir: Path = field(default_factory=lambda: Path(sys.executable).parent)


def commands(cfg: ConvertBenchConfig, onnx_file: Path, work: Path, k: int) -> dict[str, tuple[list[str], Path]]:
    """argv and cwd of every candidate for round ``k`` (fresh output dirs each round)."""
    convert = str(cfg.bin_dir / "convert")
    base = [convert, cfg.model, "--weights", str(cfg.weights)]
    raw_cwd = work / f"raw{k}"
    raw_cwd.mkdir()
    return {
        "convert_no_parity": (base + ["--out", str(work / f"np{k}"), "--precision", "fp32,fp16", "--no-parity"], work),
        "onnx2tf_raw": ([str(cfg.bin_dir / "onnx2tf"), "-i", str(onnx_file), "-o", str(raw_cwd / "out")], raw_cwd),
        "convert_parity": (base + ["--out", str(work / f"p{k}"), "--precision", "fp32,fp16", "--parity-data",
                                   cfg.parity_data, "--parity-samples", str(cfg.parity_samples)], work),
        "convert_parity_all": (base + ["--out", str(work / f"pa{k}"), "--parity-data", cfg.parity_data,
                                       "--parity-samples", str(cfg.parity_samples)], work),
    }


def run(cfg: ConvertBenchConfig, log=print) -> dict:
    """Run every round; return the JSON-ready result (summaries, ratios, target verdicts, breakdowns)."""
    work = Path(tempfile.mkdtemp(prefix="bench-convert-", dir=cfg.workdir))
    try:
        seed_dir = work / "seed"
        first = run_measured("seed_convert", [str(cfg.bin_dir / "convert"), cfg.model, "--weights", str(cfg.weights),
                                              "--out", str(seed_dir), "--precision", "fp32", "--no-parity"], cwd=work)
        if first.returncode != 0:
            raise RuntimeError(f"the seed convert failed:\n{first.tail}")
        onnx_file = seed_dir / "model.onnx"
        results: dict[str, list[ProcResult]] = {}
        breakdown: dict[str, list[dict]] = {}
        names = ["convert_no_parity", "onnx2tf_raw", "convert_parity", "convert_parity_all"]
        for k in range(cfg.rounds):
            cmds = commands(cfg, onnx_file, work, k)
            for name in rotated(names, k):
                argv, cwd = cmds[name]
                res = run_measured(name, argv, cwd=cwd)
                log(f"  round {k + 1}/{cfg.rounds} {name:18s} rc={res.returncode} wall={res.wall_s:6.1f}s "
                    f"cpu={res.cpu_s:6.1f}s peak={res.peak_tree_rss / GIB:.2f}GiB")
                results.setdefault(name, []).append(res)
                timings = _timings(argv)
                if timings:
                    breakdown.setdefault(name, []).append(timings)
            for name in names:
                _cleanup(cmds[name])
        return _result(cfg, {n: summarise(n, r) for n, r in results.items()}, breakdown,
                       {n: paired_ratios(r, results["onnx2tf_raw"]) for n, r in results.items()})
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _timings(argv: list[str]) -> dict | None:
    if "--out" not in argv:
        return None
    manifest = Path(argv[argv.index("--out") + 1]) / "manifest.json"
    return json.loads(manifest.read_text()).get("timings_s") if manifest.is_file() else None


def _cleanup(cmd: tuple[list[str], Path]) -> None:
    argv, cwd = cmd
    if "--out" in argv:
        shutil.rmtree(argv[argv.index("--out") + 1], ignore_errors=True)
    elif "-o" in argv:
        shutil.rmtree(cwd, ignore_errors=True)


def paired_ratios(runs: list[ProcResult], baseline: list[ProcResult]) -> list[float]:
    """Wall-time ratio of each round to the baseline's run of the same round (both successful).

    The rounds are interleaved, so a VM that drifts between rounds (raw onnx2tf: 5.3 s one day, 6.1-7.9 s the
    next) moves both sides of a pair together; the median of these ratios is the drift-robust figure."""
    return [a.wall_s / b.wall_s for a, b in zip(runs, baseline) if a.returncode == 0 and b.returncode == 0]


def _result(cfg: ConvertBenchConfig, s: dict[str, Summary], breakdown: dict[str, list[dict]],
            paired: dict[str, list[float]]) -> dict:
    import statistics

    raw = s["onnx2tf_raw"]
    checks = []
    for name, target in (("convert_no_parity", TARGET_NO_PARITY), ("convert_parity", TARGET_PARITY),
                         ("convert_parity_all", None)):
        for metric in ("wall_s_median", "cpu_s_median"):
            ratio = getattr(s[name], metric) / getattr(raw, metric)
            checks.append(_check(f"{name} / onnx2tf_raw ({metric.split('_')[0]})", ratio, target, "x"))
        ratios = paired.get(name)
        if ratios:
            check = _check(f"{name} / onnx2tf_raw (wall, median of {len(ratios)} paired rounds)",
                           statistics.median(ratios), target, "x")
            checks.append({**check, "range": [round(min(ratios), 3), round(max(ratios), 3)]})
    for name, summ in s.items():
        checks.append(_check(f"{name} peak memory (tree, GiB)", summ.peak_tree_rss / GIB, TARGET_PEAK_GIB, "GiB"))
    return {
        "benchmark": "convert", "model": cfg.model, "weights": str(cfg.weights), "rounds": cfg.rounds,
        "parity_samples": cfg.parity_samples, "candidates": {n: v.to_json() for n, v in s.items()},
        "checks": checks,
        "convert_stage_timings_s_median": {n: _median_dict(v) for n, v in breakdown.items()},
    }


def _check(what: str, value: float, target: float | None, unit: str) -> dict:
    """One measured ratio against its target; ``target=None`` reports the value alone (``met`` is None)."""
    if target is None:
        return {"what": what, "value": round(value, 3), "target": None, "met": None, "miss": ""}
    met = value <= target
    miss = "" if met else f"{value:.2f}{unit} vs target {target}{unit}: {value / target:.2f}x over"
    return {"what": what, "value": round(value, 3), "target": target, "met": met, "miss": miss}


def _median_dict(rows: list[dict]) -> dict:
    import statistics

    keys = sorted({k for r in rows for k in r})
    return {k: round(statistics.median(r[k] for r in rows if k in r), 3) for k in keys}


def to_markdown(result: dict) -> str:
    """The table a person reads: one row per candidate, then the target checks."""
    lines = ["| candidate | runs (failed) | wall median s | CPU median s | peak tree RSS GiB | max single RSS GiB |",
             "|---|---|---|---|---|---|"]
    for name, c in result["candidates"].items():
        lines.append(f"| {name} | {c['runs']} ({c['failures']}) | {c['wall_s_median']:.2f} | {c['cpu_s_median']:.2f} "
                     f"| {c['peak_tree_rss'] / GIB:.2f} | {c['max_rss'] / GIB:.2f} |")
    lines += ["", "| check | value | target | met |", "|---|---|---|---|"]
    for c in result["checks"]:
        verdict = "(reported)" if c["met"] is None else "yes" if c["met"] else "NO: " + c["miss"]
        target = "-" if c["target"] is None else f"<= {c['target']}"
        value = f"{c['value']} (range {c['range'][0]}-{c['range'][1]})" if "range" in c else c["value"]
        lines.append(f"| {c['what']} | {value} | {target} | {verdict} |")
    for name, c in result["candidates"].items():
        if c["first_failure"]:
            lines += ["", f"{name} failed {c['failures']}x; last output lines:", "```", c["first_failure"], "```"]
    return "\n".join(lines)
