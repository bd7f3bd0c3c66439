"""Conversion cost on the model zoo: ``convert`` beside litert-torch and raw onnx2tf, every model, one run.

Four candidates per zoo model, each a separate process measured by :func:`converter.bench.proc.run_measured`
(wall, CPU, peak RSS of its process tree), interleaved, the order rotated by round and by model so none always
runs first on cold caches:

- ``ours_no_parity``: the ``convert`` command on the zoo module (``convert converter.zoo.factories:NAME`` with the
  entry's input shapes, names, dtypes and ranges, written by ``zoo_child --argv``), fp32 + fp16, ``--no-parity``;
- ``ours_parity100``: the same with parity on ``parity_samples`` (100) of the zoo's realistic samples (an ``.npz``);
- ``onnx2tf_raw``: ``onnx2tf -i model.onnx -o DIR`` in a temporary cwd, on the ONNX file our conversion wrote
  (an untimed seed conversion per model, which also builds and caches the zoo weights before any timing). For
  RGB image inputs onnx2tf downloads 20 sample images from GitHub unless its cwd holds the file: the cwd gets it,
  untimed (the seeded stand-in our own conversion feeds onnx2tf), so the peer runs offline on the same data;
- ``litert_torch``: ``litert_torch.convert(module, sample_args).export(path)`` in its own venv
  (:mod:`converter.bench.litert`).

Ours and litert-torch both start a Python, build the module from cached weights and convert it; raw onnx2tf
starts from the ONNX file. Ratios are medians of per-round pairs (both sides measured in the same round), which a
drifting shared machine moves together. A candidate that fails keeps its one-line reason; its cells say so.
"""

from __future__ import annotations

import re
import shutil
import statistics
import sys
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from converter.bench.litert import DEFAULT_VENV, LitertUnavailable, ensure_venv, litert_command
from converter.bench.proc import GIB, ProcResult, rotated, run_measured

OURS, PARITY, RAW, LITERT = CANDIDATES = ("ours_no_parity", "ours_parity100", "onnx2tf_raw", "litert_torch")
PEERS = (RAW, LITERT)

#: Targets (issue 15): ours no slower than litert-torch and under two minutes; parity on 100 samples costs at
#: most half again; peak memory at most 1.5x the hungrier peer's and under 2.5 GiB.
TARGET_VS_LITERT = 1.0
TARGET_ABS_S = 120.0
TARGET_PARITY_OVERHEAD = 0.5
TARGET_RSS_VS_PEERS = 1.5
TARGET_RSS_GIB = 2.5
#: What onnx2tf reads from its cwd instead of downloading it (onnx2tf.utils.common_functions.download_test_image_data).
ONNX2TF_SAMPLE = "calibration_image_sample_data_20x128x128x3_float32.npy"
#: Each verdict's name and limit (at most), in the order of the table's verdict cell.
TARGETS = {"ours_vs_litert": TARGET_VS_LITERT, "ours_abs_s": TARGET_ABS_S, "parity_overhead": TARGET_PARITY_OVERHEAD,
           "rss_vs_peers": TARGET_RSS_VS_PEERS, "rss_gib": TARGET_RSS_GIB}


@dataclass
class ZooBenchConfig:
    models: tuple[str, ...]
    rounds: int = 1
    parity_samples: int = 100
    workdir: Path | None = None
    litert_venv: Path = DEFAULT_VENV
    timeout_s: float = 1800.0
    bin_dir: Path = field(default_factory=lambda: Path(sys.executable).parent)


@dataclass
class Measurement:
    """One candidate's run on one model; ``returncode=None``: not run, ``error`` says why (e.g. no peer venv)."""

    model: str
    round: int
    candidate: str
    returncode: int | None
    wall_s: float = 0.0
    cpu_s: float = 0.0
    peak_tree_rss: int = 0
    max_rss: int = 0
    error: str = ""
    detail: dict = field(default_factory=dict)  # ours: the manifest's stage timings, whether parity passed

    @property
    def ok(self) -> bool:
        return self.returncode == 0


def run(cfg: ZooBenchConfig, log: Callable[[str], None] = print) -> dict:
    """Seed every model (untimed), then every round; the JSON-ready result (:func:`summarise`)."""
    work = Path(tempfile.mkdtemp(prefix="bench-zoo-", dir=cfg.workdir))
    try:
        try:
            litert: Path | str = ensure_venv(cfg.litert_venv, log)
        except LitertUnavailable as exc:
            litert = f"litert-torch unavailable: {exc}"
            log(f"bench_convert --zoo: {litert}")
        seeds = {name: _seed(cfg, name, work, log) for name in cfg.models}
        _write_onnx2tf_sample(work / ONNX2TF_SAMPLE)
        measured: list[Measurement] = []
        for k in range(cfg.rounds):
            for i, name in enumerate(cfg.models):
                for candidate in rotated(CANDIDATES, k + i):
                    m = _measure(cfg, candidate, name, k, work, seeds[name], litert)
                    log(f"  round {k + 1}/{cfg.rounds} {name:24s} {candidate:15s} "
                        + (f"wall={m.wall_s:6.1f}s cpu={m.cpu_s:6.1f}s peak={m.peak_tree_rss / GIB:.2f}GiB"
                           if m.ok else f"FAILED: {m.error[:100]}"))
                    measured.append(m)
        return summarise(measured, cfg.models, rounds=cfg.rounds, parity_samples=cfg.parity_samples,
                         seeds={n: {"onnx": bool(s[0]), "error": s[1], "wall_s": round(s[2], 2)}
                                for n, s in seeds.items()})
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _seed(cfg: ZooBenchConfig, name: str, work: Path, log) -> tuple[Path | None, str, float]:
    """Our fp32 conversion of ``name`` (untimed): builds and caches the weights; its ``model.onnx`` feeds raw
    onnx2tf. ``(onnx file or None, error, seconds)``."""
    argv, env = _ours_argv(name, work / "seed" / name, ["--precisions", "fp32", "--no-parity"])
    res = run_measured(f"seed {name}", argv, cwd=work, env=env, timeout_s=cfg.timeout_s)
    onnx = work / "seed" / name / "model.onnx"
    error = "" if res.returncode == 0 and onnx.is_file() else _reason(res, cfg.timeout_s)
    log(f"  seed {name}: {f'{res.wall_s:.1f}s' if not error else 'FAILED: ' + error[:100]}")
    for candidate, flags in ((OURS, ["--no-parity"]), (PARITY, ["--parity-samples", str(cfg.parity_samples)])):
        argv, env = _ours_argv(name, Path(OUT_PLACEHOLDER), ["--precisions", "fp32,fp16", *flags,
                                                             "--argv", str(_argv_file(work, name, candidate))])
        run_measured(f"argv {name}", argv, cwd=work, env=env, timeout_s=cfg.timeout_s)
    return (None if error else onnx), error, res.wall_s


#: Stands for each run's own output directory in the ``convert`` command lines written before the runs.
OUT_PLACEHOLDER = "@OUT@"


def _argv_file(work: Path, name: str, candidate: str) -> Path:
    (work / "argv").mkdir(exist_ok=True)
    return work / "argv" / f"{name}-{candidate}.json"


def _write_onnx2tf_sample(path: Path) -> None:
    import numpy as np

    # the seeded stand-in for onnx2tf's download that our conversion patches in: both run on identical images
    from converter._convert.rewrites.offline import _calibration_stand_in

    np.save(path, _calibration_stand_in())


def _ours_argv(name: str, out: Path, flags: list[str]) -> tuple[list[str], dict[str, str]]:
    from converter._proc.children import python_child

    return python_child("converter.bench.zoo_child", name, str(out), *flags)


def _measure(cfg: ZooBenchConfig, candidate: str, name: str, k: int, work: Path,
             seed: tuple[Path | None, str, float], litert: Path | str) -> Measurement:
    from converter._proc.children import child_env

    out = work / f"{candidate}-{name}-{k}"
    if candidate in (OURS, PARITY):
        import json

        template = _argv_file(work, name, candidate)
        if not template.is_file():
            return Measurement(name, k, candidate, None, error="the zoo entry's convert command could not be built")
        argv = [str(cfg.bin_dir / "convert"), *(str(out) if a == OUT_PLACEHOLDER else a
                                                for a in json.loads(template.read_text()))]
        env, cwd = child_env(), work
    elif candidate == RAW:
        if seed[0] is None:
            return Measurement(name, k, candidate, None, error=f"no ONNX: our seed conversion failed ({seed[1]})")
        out.mkdir()
        shutil.copy(work / ONNX2TF_SAMPLE, out / ONNX2TF_SAMPLE)
        argv, env, cwd = [str(cfg.bin_dir / "onnx2tf"), "-i", str(seed[0]), "-o", str(out / "out")], child_env(), out
    else:
        if isinstance(litert, str):
            return Measurement(name, k, candidate, None, error=litert)
        argv, env, cwd = litert_command(litert, name, out.with_suffix(".tflite")), child_env(), work
    res = run_measured(candidate, argv, cwd=cwd, env=env, timeout_s=cfg.timeout_s)
    if candidate == PARITY and res.returncode == 1 and (out / "manifest.json").is_file():
        res.returncode = 0  # convert's exit 1: every artifact written, a parity row failed (detail says so)
    detail = _ours_detail(out) if candidate in (OURS, PARITY) and res.returncode == 0 else {}
    shutil.rmtree(out, ignore_errors=True)
    out.with_suffix(".tflite").unlink(missing_ok=True)
    return Measurement(name, k, candidate, res.returncode, res.wall_s, res.cpu_s, res.peak_tree_rss, res.max_rss,
                       "" if res.returncode == 0 else _reason(res, cfg.timeout_s), detail)


def _ours_detail(out: Path) -> dict:
    import json

    manifest, parity = out / "manifest.json", out / "parity.json"
    detail = {"timings_s": json.loads(manifest.read_text()).get("timings_s", {}) if manifest.is_file() else {}}
    if parity.is_file():
        detail["parity_passed"] = json.loads(parity.read_text()).get("passed")
    return detail


def _reason(res: ProcResult, timeout_s: float) -> str:
    """A failed run in one line: our children's and onnx2tf's last output line, or how the process ended."""
    if res.returncode == 0:
        return "finished, but wrote no model.onnx"
    if res.wall_s >= timeout_s:
        return f"timed out after {timeout_s:g} s"
    plain = re.sub(r"\x1b\[[0-9;]*m", "", res.tail)  # onnx2tf colours its messages
    lines = [ln.strip() for ln in plain.splitlines() if ln.strip()]
    # a Python exception's own line says more than what follows it (onnx2tf prints the offending tensor after)
    errors = [ln for ln in lines if re.match(r"^\w+(Error|Exception): ", ln)]
    last = errors[-1] if errors else lines[-1] if lines else ""
    return (last or f"exit {res.returncode}")[:300] if res.returncode > 0 else f"killed by signal {-res.returncode}"


# --------------------------------------------------------------------------------------- ratios and verdicts


def summarise(measured: list[Measurement], models: tuple[str, ...] | list[str], **about) -> dict:
    """Per model: each candidate's medians and peak, the paired ratios, and one verdict per target; the totals.

    ``about``: what the run was (rounds, samples, seeds), copied into the result."""
    rows = {name: _model_row([m for m in measured if m.model == name]) for name in models}
    totals = {}
    for target in TARGETS:
        verdicts = {name: next(v for v in row["verdicts"] if v["target"] == target) for name, row in rows.items()}
        totals[target] = {"met": sum(v["met"] is True for v in verdicts.values()),
                          "missed": [n for n, v in verdicts.items() if v["met"] is False],
                          "unmeasured": [n for n, v in verdicts.items() if v["met"] is None]}
    return {"benchmark": "convert --zoo", **about, "targets": TARGETS, "models": rows, "totals": totals, "measurements": [asdict(m) for m in measured]}


def _model_row(ms: list[Measurement]) -> dict:
    cands = {c: _candidate([m for m in ms if m.candidate == c]) for c in CANDIDATES}
    vs_litert = _paired_median(ms, OURS, LITERT)
    parity = _paired_median(ms, PARITY, OURS)
    ours_rss = _max_or_none(cands[c]["peak_rss_gib"] for c in (OURS, PARITY))
    peers_rss = _max_or_none(cands[c]["peak_rss_gib"] for c in PEERS)
    ours_s = cands[OURS]["wall_s_median"]
    failed = {c: f"{c}: {cands[c]['error']}" for c in CANDIDATES if cands[c]["wall_s_median"] is None}
    verdicts = [
        _verdict("ours_vs_litert", vs_litert, TARGET_VS_LITERT, "x", failed.get(OURS) or failed.get(LITERT)),
        _verdict("ours_abs_s", ours_s, TARGET_ABS_S, " s", failed.get(OURS)),
        _verdict("parity_overhead", None if parity is None else parity - 1, TARGET_PARITY_OVERHEAD, "",
                 failed.get(PARITY) or failed.get(OURS)),
        _rss_vs_peers(ours_rss, peers_rss, [failed[c] for c in PEERS if c in failed]),
        _verdict("rss_gib", ours_rss, TARGET_RSS_GIB, " GiB", "no run of ours succeeded"),
    ]
    return {"candidates": cands, "ours_vs_litert": vs_litert,
            "parity_overhead": None if parity is None else parity - 1,
            "rss_ours_gib": ours_rss, "rss_peers_gib": peers_rss, "verdicts": verdicts}


def _rss_vs_peers(ours: float | None, peers: float | None, peers_failed: list[str]) -> dict:
    """Ours against the larger peer peak. With one peer failed the larger is unknown, but at least the other's:
    a ratio within the limit against that one is met; above it, it is not measured (the failure named)."""
    if ours is None or peers is None:
        return _verdict("rss_vs_peers", None, TARGET_RSS_VS_PEERS, "x",
                        "no run of ours succeeded" if ours is None else "; ".join(peers_failed))
    verdict = _verdict("rss_vs_peers", ours / peers, TARGET_RSS_VS_PEERS, "x", None)
    if peers_failed and not verdict["met"]:
        why = f"{'; '.join(peers_failed)} (against the other peer alone: {ours / peers:.2f}x)"
        return {**verdict, "met": None, "why": why}
    return verdict


def _candidate(ms: list[Measurement]) -> dict:
    """Median wall/CPU and peak RSS of the successful runs (None when none succeeded), the first failure's reason."""
    ok = [m for m in ms if m.ok]
    return {"runs": len(ms), "failures": len(ms) - len(ok),
            "wall_s_median": statistics.median(m.wall_s for m in ok) if ok else None,
            "cpu_s_median": statistics.median(m.cpu_s for m in ok) if ok else None,
            "peak_rss_gib": max(m.peak_tree_rss for m in ok) / GIB if ok else None,
            "error": next((m.error for m in ms if not m.ok), "")}


def _paired_median(ms: list[Measurement], a: str, b: str) -> float | None:
    """Median over the rounds where both ran successfully of ``a``'s wall time over ``b``'s."""
    walls = {(m.candidate, m.round): m.wall_s for m in ms if m.ok}
    ratios = [walls[a, k] / walls[b, k] for (c, k) in walls if c == a and (b, k) in walls]
    return statistics.median(ratios) if ratios else None


def _max_or_none(values) -> float | None:
    known = [v for v in values if v is not None]
    return max(known) if known else None


def _verdict(target: str, value: float | None, limit: float, unit: str, unmeasured_why: str | None) -> dict:
    """``met``: True / False against ``limit`` (at most), None when a run it needs failed (``why`` says which)."""
    if value is None:
        return {"target": target, "value": None, "limit": limit, "met": None,
                "why": unmeasured_why or "not measured"}
    met = value <= limit
    return {"target": target, "value": round(value, 3), "limit": limit, "met": met,
            "why": "" if met else f"{value:.2f}{unit} > {limit:g}{unit}"}


# ----------------------------------------------------------------------------------------------- reading


#: Each target's label and how its limit reads.
_LABELS = {"ours_vs_litert": ("ours/litert", "{:g}x"), "ours_abs_s": ("ours time", "{:g} s"),
           "parity_overhead": ("parity overhead", "{:+.0%}"), "rss_vs_peers": ("RSS/peers", "{:g}x"),
           "rss_gib": ("RSS", "{:g} GiB")}


def to_markdown(result: dict) -> str:
    """One row per model (times, ratios, memory, verdicts), then how many models meet each target."""
    lines = [f"Median wall time of {result.get('rounds', '?')} interleaved round(s) per candidate; ours: fp32 + fp16, "
             f"parity off, and with parity on {result.get('parity_samples', '?')} samples; RSS: peak of the process "
             "tree (ours is judged by the larger of its two runs); ratios: medians of same-round pairs.", "",
             "| model | ours s | ours+parity s | onnx2tf s | litert s | ours/litert | parity overhead "
             "| RSS ours / +parity GiB | RSS onnx2tf / litert GiB | verdicts |", "|---" * 10 + "|"]
    for name, row in result["models"].items():
        c = row["candidates"]
        verdicts = ", ".join(f"{_LABELS[v['target']][0]} {_met(v['met'])}" for v in row["verdicts"])
        lines.append(f"| {name} | {_time(c[OURS])} | {_time(c[PARITY])} | {_time(c[RAW])} | {_time(c[LITERT])} "
                     f"| {_num(row['ours_vs_litert'], '{:.2f}x')} | {_num(row['parity_overhead'], '{:+.0%}')} "
                     f"| {_num(c[OURS]['peak_rss_gib'], '{:.2f}')} / {_num(c[PARITY]['peak_rss_gib'], '{:.2f}')} "
                     f"| {_num(c[RAW]['peak_rss_gib'], '{:.2f}')} / "
                     f"{_num(c[LITERT]['peak_rss_gib'], '{:.2f}')} | {verdicts} |")
    lines += ["", "| target | met | missed | not measured |", "|---|---|---|---|"]
    for target, t in result["totals"].items():
        label, limit = _LABELS[target]
        lines.append(f"| {label} <= {limit.format(result['targets'][target])} | {t['met']}/{len(result['models'])} "
                     f"| {', '.join(t['missed']) or '-'} | {', '.join(t['unmeasured']) or '-'} |")
    return "\n".join(lines)


def _met(met: bool | None) -> str:
    return "n/a" if met is None else "ok" if met else "MISS"


def _num(value: float | None, fmt: str) -> str:
    return "-" if value is None else fmt.format(value)


def _time(cand: dict) -> str:
    """The median, with the failed rounds beside it; a failure's reason alone when no round succeeded."""
    if cand["wall_s_median"] is None:
        return ("failed: " + cand["error"][:90]).replace("|", "/") if cand["runs"] else "-"
    failed = f" ({cand['failures']} failed)" if cand["failures"] else ""
    return f"{cand['wall_s_median']:.1f}{failed}"


def plot(result: dict, path: Path) -> None:
    """Horizontal bars: each candidate's median conversion time per model, labelled in seconds; failures marked."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    models = list(result["models"])
    fig = Figure(figsize=(9, 1.2 + 0.6 * len(models)))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    height = 0.8 / len(CANDIDATES)
    for j, candidate in enumerate(CANDIDATES):
        walls = [result["models"][m]["candidates"][candidate]["wall_s_median"] for m in models]
        ys = [i + (j - 1.5) * height for i in range(len(models))]
        ok = [(y, w) for y, w in zip(ys, walls) if w is not None]
        bars = ax.barh([y for y, _ in ok], [w for _, w in ok], height=height, color=f"C{j}", label=candidate)
        ax.bar_label(bars, fmt="%.1f", fontsize=6, padding=2)
        for y in (y for y, w in zip(ys, walls) if w is None):
            ax.text(0, y, f" {candidate}: failed", va="center", fontsize=6, color=f"C{j}")
    ax.axvline(TARGET_ABS_S, color="grey", linestyle="--", linewidth=1, label=f"{TARGET_ABS_S:g} s target")
    ax.set_yticks(range(len(models)), models)
    ax.invert_yaxis()
    ax.set_xlabel("conversion wall time, median (s)")
    ax.set_title(f"Conversion time per zoo model ({result.get('rounds', '?')} round(s), interleaved)")
    ax.legend(loc="lower right", fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
