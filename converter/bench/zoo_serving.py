"""Serving speed of zoo models: ``scripts/benchmark --zoo NAME[,NAME...]``.

Per model, two exports of the same module (cached honest weights), each in a child process:

- ours (:mod:`converter.bench.zoo_prepare`, this venv): ``converter.api.convert`` fp32 with a symbolic batch ->
  ONNX, SavedModel, TFLite; plus the inputs every runtime is timed on (``entry.make_inputs``: token ids stay int64);
- litert-torch's ``.tflite`` (:mod:`converter.bench.litert`, its own venv).

Then every runtime of :data:`~converter.bench.runtimes.SERVING_RUNTIMES` in its own long-lived child
(:mod:`converter.bench.child`, serving mode), all at the same thread count, timed interleaved exactly as the
reference-net benchmark is (:func:`converter.bench.core.time_rounds`) at batch 1 and batch ``batch`` (32). Each
child also saves its batch-1 outputs, and every row carries its relative error against PyTorch eager: a runtime fed
in the wrong input order would otherwise be timed on nonsense. :mod:`converter.bench.serving_report` turns the
rows into ratios, verdicts and the op difference between the two TFLite files.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from converter._proc import children as child_procs
from converter.bench import keras_twin, serving_report as report
from converter.bench.core import Child, environment, start_children, time_rounds
from converter.bench.litert import export as litert_export
from converter.bench.runtimes import SERVING_RUNTIMES

#: One model's conversion or litert-torch export (the slowest zoo conversion took ~14 min with every precision).
EXPORT_TIMEOUT_S = 1800


@dataclass
class ZooServingConfig:
    """``models``: zoo names; ``work``: keep every model's artifacts and child logs there (default: a temporary
    directory, removed); ``reuse``: take artifacts a previous run left in ``work`` instead of exporting again."""

    models: tuple[str, ...]
    threads: tuple[int, ...] = (2,)
    rounds: int = 5
    batch1_calls: int = 200
    batch_n_calls: int = 10
    batch: int = 32
    runtimes: tuple[str, ...] = SERVING_RUNTIMES
    work: Path | None = None
    reuse: bool = False
    setup_parallel: int = 2
    ready_timeout_s: float = 900.0
    log: Callable[[str], None] = field(default=print, repr=False)


def run(cfg: ZooServingConfig) -> dict:
    """Benchmark every model of ``cfg.models``; the JSON-ready result (:func:`serving_report.to_markdown` reads it)."""
    root = cfg.work or Path(tempfile.mkdtemp(prefix="zoo-serving-"))
    try:
        models = [_model(cfg, name, root / name) for name in cfg.models]
    finally:
        if cfg.work is None:
            shutil.rmtree(root, ignore_errors=True)
    return {"benchmark": "zoo_serving",
            "config": {"models": list(cfg.models), "threads": list(cfg.threads), "rounds": cfg.rounds,
                       "batch": cfg.batch, "batch1_calls_per_round": cfg.batch1_calls,
                       "batchN_calls_per_round": cfg.batch_n_calls, "runtimes": list(cfg.runtimes)},
            "targets": {"saved_model_vs_onnxruntime": report.TARGET_SAVED_MODEL_VS_ORT,
                        "tflite_fp32_vs_litert": report.TARGET_TFLITE_VS_LITERT},
            "models": models, "environment": environment()}


def _model(cfg: ZooServingConfig, name: str, work: Path) -> dict:
    work.mkdir(parents=True, exist_ok=True)
    meta, litert = _exports(cfg, name, work)
    if isinstance(meta, str):
        return {"model": name, "error": meta, "rows": [], "ratios": [], "op_diff": None}
    manifest = json.loads((work / "converted" / "manifest.json").read_text())
    rows, ops, op_times = [], {}, {}
    for threads in cfg.threads:
        got, info = _time(cfg, name, work, threads, litert, manifest)
        rows += got
        for runtime, ready in info.items():  # the same file at every thread count: the first answer will do
            if ready.get("op_histogram") and runtime not in ops:
                ops[runtime] = ready["op_histogram"]
            if ready.get("op_times") and runtime not in op_times:  # where its time goes, at these threads
                op_times[runtime] = {"threads": threads, "ops": ready["op_times"]}
    # every subgraph of both files, counted alike (runtimes.tflite_histogram); the manifest's main-subgraph count
    # when our child failed
    ours_ops = ops.get("tflite_fp32") or manifest["artifacts"].get("tflite_fp32", {}).get("op_histogram")
    litert_ops = ops.get("tflite_litert")
    return {"model": name, "error": "", "image_classifier": meta["image_classifier"], "parameters": meta["parameters"],
            "inputs": meta["inputs"], "convert_s": meta["convert_s"],
            "litert_error": litert if isinstance(litert, str) else "",
            "rows": rows, "ratios": report.ratios(rows, meta["image_classifier"]),
            "op_histograms": {**ops, "tflite_fp32": ours_ops}, "op_times": op_times,
            "op_diff": report.op_diff(ours_ops, litert_ops) if ours_ops is not None and litert_ops else None,
            "dynamic_batch_route": _route(manifest)}


def _exports(cfg: ZooServingConfig, name: str, work: Path) -> tuple[dict | str, Path | str]:
    """(our conversion's ``prepare.json``, litert-torch's .tflite), each replaced by a one-line reason on failure.

    One after the other, ours first: a trained entry whose weights are not cached yet is trained by the first
    build and read from the cache by the second, so both files hold the same weights (two builds at once would
    each train; on 2 cores running them together saved little anyway)."""
    meta_file, litert_file = work / "prepare.json", work / "litert.tflite"
    if cfg.reuse and meta_file.is_file() and litert_file.is_file():
        cfg.log(f"{name}: reusing the artifacts in {work}")
        return json.loads(meta_file.read_text()), litert_file
    meta_file.unlink(missing_ok=True)
    litert_file.unlink(missing_ok=True)
    cfg.log(f"{name}: converting (ours: fp32, symbolic batch)")
    code, last = child_procs.run("converter.bench.zoo_prepare", name, str(work), "--batch", str(cfg.batch),
                                 timeout=EXPORT_TIMEOUT_S)
    meta = json.loads(meta_file.read_text()) if code == 0 and meta_file.is_file() else \
        f"our conversion failed ({child_procs.exit_reason(code, EXPORT_TIMEOUT_S)}): {last[:300]}"
    if isinstance(meta, str):  # nothing of ours to compare litert-torch's file with
        return meta, "not exported (our conversion failed)"
    cfg.log(f"{name}: ours in {meta['convert_s']} s; exporting with litert-torch")
    litert = litert_export(name, litert_file, timeout_s=EXPORT_TIMEOUT_S, log=cfg.log)
    cfg.log(f"{name}: litert-torch: " + ("done" if isinstance(litert, Path) else litert))
    return meta, litert


def _time(cfg: ZooServingConfig, name: str, work: Path, threads: int, litert: Path | str,
          manifest: dict) -> tuple[list[dict], dict[str, dict]]:
    """Every runtime's rows at ``threads``, and each child's ready line."""
    converted = work / "converted"

    def make(runtime: str) -> Child:
        args = ["--dir", str(converted), "--inputs", str(work / "inputs.npz"), "--batches", f"1,{cfg.batch}",
                "--outputs", str(_outputs_file(work, runtime, threads))]
        if runtime in ("pytorch", "keras_twin"):
            args += ["--zoo", name]
        if runtime == "tflite_litert":
            if isinstance(litert, str):
                raise RuntimeError(litert)
            args += ["--tflite", str(litert)]
        return Child(runtime, args, threads, work)

    runtimes = [r for r in cfg.runtimes if r != "keras_twin" or keras_twin.has_twin(name)]
    for runtime in runtimes:
        _outputs_file(work, runtime, threads).unlink(missing_ok=True)
    children, info = start_children(runtimes, make, parallel=cfg.setup_parallel, timeout_s=cfg.ready_timeout_s,
                                    on_ready=lambda r, got: cfg.log(f"  {name} t={threads} {r:14s} {_ready_text(got)}"))
    try:
        times = time_rounds(children, cfg.rounds, [(1, cfg.batch1_calls), (cfg.batch, cfg.batch_n_calls)],
                            lambda k: cfg.log(f"  {name} t={threads} round {k + 1}/{cfg.rounds} done"))
    finally:
        for child in children.values():
            child.close()
    errors = _errors_vs_eager(work, runtimes, threads)
    sizes = _sizes(manifest, litert)
    return [report.row(r, threads, batch, info[r], times.get(r, {}).get(batch, []), size_bytes=sizes.get(r),
                       rel_err=errors.get(r)) for r in runtimes for batch in (1, cfg.batch)], info


def _outputs_file(work: Path, runtime: str, threads: int) -> Path:
    return work / f"outputs-{runtime}-t{threads}.npz"


def _errors_vs_eager(work: Path, runtimes: list[str], threads: int) -> dict[str, float | None]:
    """Each runtime's batch-1 outputs against PyTorch eager's (:func:`serving_report.max_rel_err`)."""
    def load(runtime: str) -> list[np.ndarray] | None:
        path = _outputs_file(work, runtime, threads)
        if not path.is_file():
            return None
        with np.load(path) as npz:
            return [npz[f"arr_{k}"] for k in range(len(npz.files))]

    want = load("pytorch")
    if want is None:
        return {}
    return {r: report.max_rel_err(got, want) for r in runtimes
            if r not in report.OWN_WEIGHTS and (got := load(r)) is not None}


def _sizes(manifest: dict, litert: Path | str) -> dict[str, int | None]:
    arts = manifest["artifacts"]
    return {"onnxruntime": arts.get("onnx", {}).get("bytes"), "saved_model": arts.get("saved_model", {}).get("bytes"),
            "tflite_fp32": arts.get("tflite_fp32", {}).get("bytes"),
            "tflite_litert": litert.stat().st_size if isinstance(litert, Path) else None}


def _route(manifest: dict) -> str:
    """How the symbolic batch was built, when not directly (e.g. the batch-1 graph mapped over the batch)."""
    route = manifest.get("dynamic_batch_route") or {}
    if not route.get("batch_map"):
        return ""
    why = " ".join(str(route.get("why")).split())[:200]
    return f"batch-1 graph mapped over the batch (the symbolic-batch graph: {why})"


def _ready_text(info: dict) -> str:
    if not info.get("ready"):
        return "FAILED: " + str(info.get("error", "?"))[:200]
    modes = ", ".join(f"b{b}={m[:60]}" for b, m in info["modes"].items())
    return f"build={info['build_s']:.1f}s warmup={info['warmup_s']:.1f}s {modes}"
