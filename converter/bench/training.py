"""Training benchmark of the reference trainers through the ``train-reference`` CLI.

Variants (each a separate process, order rotated each round): torch eager / ``--compile`` / ``--amp``
and Keras default / ``--jit-compile`` / ``--mixed-precision``, all on the same data, batch size and
epochs. Each run's ``metrics.json`` gives samples/s and test accuracy; the process gives wall time and
peak memory. Ratios are against each framework's default, and Keras default against torch eager.

The guide claims 2-5x from XLA / ``torch.compile`` and gains from mixed precision. Those claims come
from GPUs; on a CPU the result depends on the instruction set (bf16 needs ``avx512_bf16`` or AMX, fp16
needs ``avx512_fp16``/AMX-FP16 and kernels that use them), so the CPU flags are recorded next to them.
"""

from __future__ import annotations

import json
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from converter.bench.proc import GIB, rotated, run_measured

VARIANTS: dict[str, tuple[str, list[str]]] = {
    "torch_eager": ("torch", []),
    "torch_compile": ("torch", ["--compile"]),
    "torch_amp": ("torch", ["--amp"]),
    "keras_default": ("keras", []),
    "keras_jit_compile": ("keras", ["--jit-compile"]),
    "keras_mixed_precision": ("keras", ["--mixed-precision"]),
}
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
    variants: tuple[str, ...] = tuple(VARIANTS)


def _exe() -> Path:
    return Path(sys.executable).with_name("train-reference")


def supported_flags() -> set[str]:
    """The long options ``train-reference --help`` lists (optional flags are passed only if supported)."""
    run = subprocess.run([str(_exe()), "--help"], capture_output=True, text=True)
    return set(re.findall(r"--[a-z][a-z0-9-]*", run.stdout)) if run.returncode == 0 else set()


def argv_for(name: str, cfg: TrainingBenchConfig, out: Path, flags: set[str]) -> list[str] | None:
    """The command of one variant, or None when the trainer lacks the variant's flag."""
    framework, extra = VARIANTS[name]
    if any(f not in flags for f in extra):
        return None
    argv = [str(_exe()), "--framework", framework, "--out", str(out), "--epochs", str(cfg.epochs)] + extra
    optional = {"--batch-size": str(cfg.batch_size), "--train-data": cfg.train_data, "--eval-data": cfg.eval_data}
    for flag, value in optional.items():
        if value is not None and flag in flags:
            argv += [flag, value]
    return argv


def run(cfg: TrainingBenchConfig, log=print) -> dict:
    """Run every variant ``cfg.rounds`` times, interleaved; return the JSON-ready result."""
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
                res = run_measured(name, argv, cwd=work)
                metrics = _metrics(out)
                log(f"  round {k + 1}/{cfg.rounds} {name:22s} rc={res.returncode} wall={res.wall_s:6.1f}s "
                    f"sps={metrics.get('samples_per_second', '-')} acc={metrics.get('test_accuracy', '-')}")
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
