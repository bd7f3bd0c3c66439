"""Training benchmark of the reference trainers through the ``train-reference`` CLI: ``scripts/benchmark
--training`` and ``scripts/bench_train`` (:func:`main`), one harness.

Every variant runs as a separate process, interleaved over rounds (order rotated each round, so load from other
processes on a shared machine hits every variant alike), all on the same data, batch size and epochs. Each run's
``metrics.json`` gives samples/s and test accuracy; the process gives wall time and peak memory.

``scripts/benchmark --training``: torch eager / ``--compile`` / ``--amp`` and Keras default / ``--jit-compile`` /
``--mixed-precision``; ratios against each framework's default, and Keras default against torch eager
(:func:`to_markdown`).

``scripts/bench_train``: torch's tensor loader and ``--loader torchvision`` against Keras (``--extra``: workers,
one thread, contiguous NCHW, active OpenMP wait). The figure per run is the median of its per-epoch samples/s after
the first (warm-up) epoch; each variant reports its best and median round, and the keras/torch ratio is taken
within each round (same load), the median of those reported (:func:`print_table`).

The guide claims 2-5x from XLA / ``torch.compile`` and gains from mixed precision. Those claims come
from GPUs; on a CPU the result depends on the instruction set (bf16 needs ``avx512_bf16`` or AMX, fp16
needs ``avx512_fp16``/AMX-FP16 and kernels that use them), so the CPU flags are recorded next to them.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from converter.bench.proc import GIB, ProcResult, rotated, run_measured

#: variant -> (framework, train-reference flags beyond --framework)
VARIANTS: dict[str, tuple[str, list[str]]] = {
    "torch_eager": ("torch", []),
    "torch_compile": ("torch", ["--compile"]),
    "torch_amp": ("torch", ["--amp"]),
    "keras_default": ("keras", []),
    "keras_jit_compile": ("keras", ["--jit-compile"]),
    "keras_mixed_precision": ("keras", ["--mixed-precision"]),
    "torch_loader_torchvision": ("torch", ["--loader", "torchvision"]),
    "torch_loader_torchvision_workers2": ("torch", ["--loader", "torchvision", "--workers", "2"]),
    "torch_threads1": ("torch", ["--threads", "1"]),
    "torch_no_channels_last": ("torch", ["--no-channels-last"]),
    "torch_omp_active": ("torch", []),
}
#: variants that differ by their environment only
ENV: dict[str, dict[str, str]] = {"torch_omp_active": {"OMP_WAIT_POLICY": "ACTIVE"}}
#: what ``scripts/benchmark --training`` runs: the guide's compile and mixed-precision claims
GUIDE_VARIANTS = ("torch_eager", "torch_compile", "torch_amp", "keras_default", "keras_jit_compile",
                  "keras_mixed_precision")
#: what ``scripts/bench_train`` runs, under the names its table prints
BENCH_TRAIN: dict[str, str] = {"torch_eager": "torch (default: tensor loader)",
                               "torch_loader_torchvision": "torch --loader torchvision",
                               "keras_default": "keras (fit, tf.data)"}
#: ``scripts/bench_train --extra`` adds these
BENCH_TRAIN_EXTRA: dict[str, str] = {"torch_loader_torchvision_workers2": "torch --loader torchvision --workers 2",
                                     "torch_threads1": "torch --threads 1",
                                     "torch_no_channels_last": "torch --no-channels-last",
                                     "torch_omp_active": "torch OMP_WAIT_POLICY=ACTIVE"}
TORCH_DEFAULT, KERAS = BENCH_TRAIN["torch_eager"], BENCH_TRAIN["keras_default"]
RATIOS = (("torch_compile", "torch_eager"), ("torch_amp", "torch_eager"),
          ("keras_jit_compile", "keras_default"), ("keras_mixed_precision", "keras_default"),
          ("keras_default", "torch_eager"))
CLAIMED = {"torch_compile": "2-5x", "keras_jit_compile": "2-5x", "torch_amp": "> 1x", "keras_mixed_precision": "> 1x"}


@dataclass
class TrainingBenchConfig:
    epochs: int = 2
    rounds: int = 1
    batch_size: int = 64
    train_data: str = "embedded"
    eval_data: str | None = "/work/shared/data/mnist"
    keep: Path | None = None
    variants: tuple[str, ...] = GUIDE_VARIANTS


def _exe() -> Path:
    return Path(sys.executable).with_name("train-reference")


def supported_flags() -> set[str]:
    """The long options ``train-reference --help`` lists (optional flags are passed only if supported)."""
    run = subprocess.run([str(_exe()), "--help"], capture_output=True, text=True)
    return set(re.findall(r"--[a-z][a-z0-9-]*", run.stdout)) if run.returncode == 0 else set()


def argv_for(name: str, cfg: TrainingBenchConfig, out: Path, flags: set[str]) -> list[str] | None:
    """The command of one variant, or None when the trainer lacks the variant's flag."""
    framework, extra = VARIANTS[name]
    if any(f.startswith("--") and f not in flags for f in extra):
        return None
    argv = [str(_exe()), "--framework", framework, "--out", str(out), "--epochs", str(cfg.epochs)] + extra
    optional = {"--batch-size": str(cfg.batch_size), "--train-data": cfg.train_data, "--eval-data": cfg.eval_data}
    for flag, value in optional.items():
        if value is not None and flag in flags:
            argv += [flag, value]
    return argv


Progress = Callable[[int, str, ProcResult, dict], str]


def _progress(rounds: int) -> Progress:
    def line(k: int, name: str, res: ProcResult, metrics: dict) -> str:
        return (f"  round {k + 1}/{rounds} {name:22s} rc={res.returncode} wall={res.wall_s:6.1f}s "
                f"sps={metrics.get('samples_per_second', '-')} acc={metrics.get('test_accuracy', '-')}")
    return line


def run(cfg: TrainingBenchConfig, log=print, progress: Progress | None = None) -> dict:
    """Run every variant ``cfg.rounds`` times, interleaved; return the JSON-ready result.

    ``progress(round, variant, process, metrics)`` makes the line logged after each run."""
    progress = progress or _progress(cfg.rounds)
    if not _exe().is_file():
        return _result(cfg, {}, {}, "train-reference is not installed in this venv")
    flags = supported_flags()
    if not flags:
        return _result(cfg, {}, {}, "train-reference --help failed: the trainers are not ready")
    work = cfg.keep or Path(tempfile.mkdtemp(prefix="bench-training-"))
    work.mkdir(parents=True, exist_ok=True)
    runs: dict[str, list[dict]] = {}
    skipped: dict[str, str] = {}
    try:
        for k in range(cfg.rounds):
            for name in rotated(list(cfg.variants), k):
                out = work / f"{name}-r{k}"
                argv = argv_for(name, cfg, out, flags)
                if argv is None:
                    skipped[name] = f"train-reference has no {' '.join(VARIANTS[name][1])}"
                    continue
                env = {**os.environ, **ENV[name]} if name in ENV else None
                res = run_measured(name, argv, cwd=work, env=env)
                metrics = _metrics(out)
                log(progress(k, name, res, metrics))
                runs.setdefault(name, []).append({"process": res.to_json(), "metrics": metrics,
                                                  "argv": argv[1:]})
    finally:
        if cfg.keep is None:
            shutil.rmtree(work, ignore_errors=True)
    return _result(cfg, runs, skipped, None)


def _metrics(out: Path) -> dict:
    path = out / "metrics.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def _result(cfg: TrainingBenchConfig, runs: dict, skipped: dict, error: str | None) -> dict:
    from converter.bench.core import environment

    rows = []
    for name, items in runs.items():
        ok = [i for i in items if i["process"]["returncode"] == 0 and i["metrics"].get("samples_per_second")]
        m = [i["metrics"] for i in ok]
        rows.append({
            "variant": name, "framework": VARIANTS[name][0], "runs": len(items), "ok": len(ok),
            "device": _device(m), "command": "train-reference " + " ".join(_out_as_dir(items[0]["argv"])),
            "samples_per_second": statistics.median(x["samples_per_second"] for x in m) if m else None,
            "samples_per_second_all": [round(x["samples_per_second"]) for x in m],
            # the last epoch alone: what compilation (torch.compile, XLA) costs up front is excluded
            "last_epoch_sps": statistics.median(x["epoch_samples_per_second"][-1] for x in m
                                                ) if m and all(x.get("epoch_samples_per_second") for x in m) else None,
            "test_accuracy": statistics.median(x["test_accuracy"] for x in m if "test_accuracy" in x) if m else None,
            "wall_s": statistics.median(i["process"]["wall_s"] for i in items),
            "peak_tree_rss_gib": max(i["process"]["peak_tree_rss"] for i in items) / GIB,
            "failure": next((i["process"]["tail"] for i in items if i["process"]["returncode"] != 0), ""),
        })
    by = {r["variant"]: r for r in rows if r["samples_per_second"]}
    ratios = [{"what": f"{a} / {b} samples/s", "value": round(by[a]["samples_per_second"] / by[b]["samples_per_second"], 3),
               "last_epoch": _ratio(by[a]["last_epoch_sps"], by[b]["last_epoch_sps"]),
               "claimed": CLAIMED.get(a, "")} for a, b in RATIOS if a in by and b in by]
    env = environment()
    return {"benchmark": "training", "epochs": cfg.epochs, "runs": runs, "rounds": cfg.rounds, "batch_size": cfg.batch_size,
            "train_data": cfg.train_data, "rows": rows, "ratios": ratios, "skipped": skipped, "error": error,
            "cpu_flags": env["cpu_flags"], "environment": env}


def _out_as_dir(argv: list[str]) -> list[str]:
    """The command a reader reruns: the run's temporary ``--out`` shown as ``DIR``."""
    return [("DIR" if i and argv[i - 1] == "--out" else a) for i, a in enumerate(argv)]


def _times(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}x"


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else round(a / b, 3)


def _device(metrics: list[dict]) -> str:
    for m in metrics:
        for key in ("device", "devices"):
            if m.get(key):
                return str(m[key])
    return "cpu (this machine has no GPU)"


def to_markdown(result: dict) -> str:
    """Rows per variant, then the ratios next to what the guide claims, then the CPU flags."""
    if result["error"]:
        return f"Training benchmark not run: {result['error']}."
    lines = ["| variant | device | samples/s (all epochs; min–max) | samples/s (last epoch) | test accuracy | wall s "
             "| peak RSS GiB | command |", "|---|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        sps = "FAILED" if r["samples_per_second"] is None else f"{r['samples_per_second']:,.0f}"
        if len(r.get("samples_per_second_all", [])) > 1:  # the spread a reader must judge every ratio against
            sps += f" ({min(r['samples_per_second_all']):,}–{max(r['samples_per_second_all']):,})"
        acc = "-" if r["test_accuracy"] is None else f"{100 * r['test_accuracy']:.2f} %"
        last = "-" if r.get("last_epoch_sps") is None else f"{r['last_epoch_sps']:,.0f}"
        lines.append(f"| {r['variant']} | {r['device']} | {sps} | {last} | {acc} | {r['wall_s']:.1f} "
                     f"| {r['peak_tree_rss_gib']:.2f} | `{r['command']}` |")
    lines += ["", "| ratio | all epochs | last epoch | guide claims |", "|---|---|---|---|"]
    lines += [f"| {x['what']} | {_times(x['value'])} | {_times(x['last_epoch'])} | {x['claimed'] or '-'} |"
              for x in result["ratios"]]
    for name, why in result["skipped"].items():
        lines.append(f"\nSkipped {name}: {why}.")
    for r in result["rows"]:
        if r["failure"]:
            lines += ["", f"{r['variant']} failed:", "```", r["failure"], "```"]
    lines.append(f"\nCPU flags relevant to reduced precision: {', '.join(result['cpu_flags']) or 'none'}.")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------ scripts/bench_train


def steady_rate(metrics: dict) -> float | None:
    """The median of a run's per-epoch samples/s after the first (warm-up) epoch; None for a failed run."""
    rates = metrics.get("epoch_samples_per_second")
    if not rates:
        return None
    return statistics.median(rates[1:] if len(rates) > 1 else rates)


def print_table(rates: dict[str, list[float]]) -> None:
    """Best and median samples/s per configuration, and keras/torch ratios paired within each round."""
    keras = rates[KERAS]
    print(f"{'configuration':<42} {'best':>8} {'median':>8}  {'keras/this (median of rounds)':>29}")
    for name, values in rates.items():
        paired = statistics.median(k / v for k, v in zip(keras, values))
        print(f"{name:<42} {max(values):>8,.0f} {statistics.median(values):>8,.0f}  {paired:>28.2f}x")
    ratio = statistics.median(k / t for k, t in zip(keras, rates[TORCH_DEFAULT]))
    print(f"keras / torch default: {ratio:.2f}x median of paired rounds, {max(keras) / max(rates[TORCH_DEFAULT]):.2f}x "
          f"best vs best (target <= 1.5x: {'met' if ratio <= 1.5 else 'NOT met'})")


def main(argv: list[str] | None = None) -> int:
    """``scripts/bench_train``: training throughput of torch's loaders and Keras side by side (module docstring)."""
    p = argparse.ArgumentParser(prog="bench_train", description="Training throughput, side by side: torch (default "
                                "loader), torch (--loader torchvision), keras.")
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--extra", action="store_true",
                   help="also torchvision+2 workers, 1 thread, contiguous NCHW, active OMP wait")
    args = p.parse_args(argv)
    labels = {**BENCH_TRAIN, **(BENCH_TRAIN_EXTRA if args.extra else {})}
    cfg = TrainingBenchConfig(epochs=args.epochs, rounds=args.rounds, eval_data="embedded", variants=tuple(labels))

    def line(k: int, name: str, res: ProcResult, metrics: dict) -> str:
        rate = steady_rate(metrics)
        return f"round {k + 1}: {labels[name]:<42} " + (f"{rate:>8,.0f} samples/s" if rate is not None else
                                                           f"FAILED (exit {res.returncode})")

    result = run(cfg, log=lambda m: print(m, file=sys.stderr, flush=True), progress=line)
    if result["error"]:
        print(f"bench_train: error: {result['error']}", file=sys.stderr)
        return 2
    rates = {labels[name]: [steady_rate(i["metrics"]) for i in result["runs"].get(name, [])] for name in labels}
    failed = {r["variant"]: r["failure"] for r in result["rows"] if r["failure"]}
    failed.update({n: result["skipped"].get(n, "not run") for n in labels if n not in result["runs"]})
    if failed or any(None in v for v in rates.values()):
        for name, why in failed.items():
            print(f"bench_train: {labels[name]} failed:\n{why}", file=sys.stderr)
        return 1
    print_table(rates)
    return 0


if __name__ == "__main__":
    sys.exit(main())
