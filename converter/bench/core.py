"""Inference benchmark of a converted directory: every runtime side by side, one child process each.

Each runtime lives in its own long-lived child (:mod:`converter.bench.child`) so threads, allocators and
caches never interfere; the children are built first (``setup_parallel`` at a time; set-up is never
timed), then timed *interleaved*: ``rounds`` rounds, each
visiting every child in a rotated order for ``lat_n`` batch-1 calls and ``thr_n`` batch-64 calls. A
noisy neighbour therefore hits all runtimes alike, and the ratios between rows are what to trust.

Latency = batch 1, median and p90 of all timed calls; throughput = 64 / median batch-64 call time.
Accuracy is top-1 on the labelled digits (the 10k MNIST test set for ``mnist_cnn``).

The peers our TFLite fp32 file is judged against, both made before any child starts (never timed) and run by the same
interpreter: raw onnx2tf's file of the same ONNX graph, and litert-torch's file of the same PyTorch source
(:mod:`converter.bench.litert`, in its own venv); a peer that cannot be made leaves its row FAILED with the reason.
"""

from __future__ import annotations

import json
import os
import platform
import select
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from converter._proc import children as child_procs
from converter.bench import litert as bench_litert
from converter.bench import roofline as bench_roofline
from converter.bench.proc import rotated
from converter.bench.runtimes import RUNTIMES
from converter.bench.serving_report import TARGET_TFLITE_VS_LITERT

TARGET_VS_RAW = 1.0  # our TFLite fp32 latency / raw onnx2tf TFLite fp32 latency
TARGET_INT8_SPEEDUP = 0.6  # dynamic-range int8 latency / fp32 latency
TARGET_INT8_ACC_PP = 0.3  # accuracy points dynamic-range int8 may lose against fp32


@dataclass
class BenchConfig:
    out_dir: Path
    runtimes: tuple[str, ...] = RUNTIMES
    threads: tuple[int, ...] = (1,)
    rounds: int = 5
    lat_n: int = 200
    thr_n: int = 10
    data: str | None = None
    accuracy_samples: int = 10_000
    ready_timeout_s: float = 900.0
    setup_parallel: int = 2
    workdir: Path | None = None
    log: object = field(default=print, repr=False)


class Child:
    """One runtime in its own process, driven by JSON lines (see :mod:`converter.bench.child`).

    ``args``: the child's arguments beyond ``--runtime`` and ``--threads`` (what to load, where its inputs are)."""

    def __init__(self, runtime: str, args: list[str], threads: int, log_dir: Path) -> None:
        threads_env = {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
                       "OPENBLAS_NUM_THREADS": str(threads), "TF_NUM_INTRAOP_THREADS": str(threads),
                       "TF_NUM_INTEROP_THREADS": "1", "TF_CPP_MIN_LOG_LEVEL": "3"}
        # the one child-process rule (converter._proc.children): environment, dies with this process; JSON lines
        # on stdout, so the pipes are set up here
        argv, env = child_procs.python_child("converter.bench.child", "--runtime", runtime, "--threads", str(threads),
                                             *args, extra_env=threads_env)
        self.runtime, self.threads = runtime, threads
        self.stderr = open(log_dir / f"{runtime}-t{threads}.log", "w")
        self.proc = subprocess.Popen(argv, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self.stderr, text=True, bufsize=1, cwd=log_dir)

    def read(self, timeout_s: float) -> dict:
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout_s)
        line = self.proc.stdout.readline() if ready else ""
        if not line:
            if self.proc.poll() is not None:
                self.stderr.flush()
                last = Path(self.stderr.name).read_text(errors="replace").strip().splitlines()[-1:] or [""]
                return {"ready": False, "error": f"child exited with {self.proc.returncode}: {last[0][:300]}"}
            return {"ready": False, "error": f"no answer in time (see {self.stderr.name})"}
        return json.loads(line)

    def time(self, batch: int, n: int) -> list[float]:
        self.proc.stdin.write(json.dumps({"cmd": "time", "batch": batch, "n": n, "warmup": 5}) + "\n")
        return self.read(600.0).get("times_s", [])

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write('{"cmd": "quit"}\n')
                self.proc.stdin.flush()
                self.proc.wait(timeout=30)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
        self.stderr.close()


class RawBaseline:
    """``onnx2tf -i model.onnx -o DIR`` in a temporary cwd, started in the background at construction
    (it takes as long as several children's set-up); :meth:`path` waits for its float32 .tflite."""

    def __init__(self, onnx_file: Path, work: Path) -> None:
        self.cwd = work / "onnx2tf_raw"
        self.cwd.mkdir()
        self.log = open(self.cwd / "onnx2tf.log", "w")
        exe = Path(sys.executable).with_name("onnx2tf")
        self.proc = subprocess.Popen([str(exe), "-i", str(onnx_file), "-o", "out"], cwd=self.cwd,
                                     stdout=self.log, stderr=subprocess.STDOUT)

    def ok(self) -> bool:
        self.proc.wait()
        return self.proc.returncode == 0 and (self.cwd / "out" / "model_float32.tflite").is_file()

    def path(self) -> Path:
        self.proc.wait()
        self.log.close() if not self.log.closed else None
        tflite = self.cwd / "out" / "model_float32.tflite"
        if self.proc.returncode != 0 or not tflite.is_file():
            tail = (self.cwd / "onnx2tf.log").read_text(errors="replace")[-500:]
            raise RuntimeError(f"raw onnx2tf failed (exit {self.proc.returncode}): {tail}")
        return tflite


def run(cfg: BenchConfig) -> dict:
    """Benchmark every runtime at every thread count; return the JSON-ready result."""
    manifest = json.loads((cfg.out_dir / "manifest.json").read_text())
    work_count = _work(manifest)  # first: a source that no longer loads stops the run before any child starts
    work = Path(tempfile.mkdtemp(prefix="bench-", dir=cfg.workdir))
    try:
        runtimes = [r for r in cfg.runtimes if _available(r, cfg.out_dir, manifest)]
        raw = RawBaseline(cfg.out_dir / "model.onnx", work) if "tflite_onnx2tf_raw" in runtimes else None
        # the raw baseline's child starts last, so its onnx2tf run overlaps the other children's set-up
        runtimes = [r for r in runtimes if r != "tflite_onnx2tf_raw"] + (["tflite_onnx2tf_raw"] if raw else [])
        litert = _litert_export(cfg, manifest, work) if "tflite_litert" in runtimes else None
        rows: list[dict] = []
        for threads in cfg.threads:
            rows += _run_threads(cfg, runtimes, threads, raw, litert, work, manifest)
        for row in rows:
            if row["runtime"] == "tflite_onnx2tf_raw" and raw is not None and raw.ok():
                row["size_bytes"] = raw.path().stat().st_size
            if row["runtime"] == "tflite_litert" and isinstance(litert, Path):
                row["size_bytes"] = litert.stat().st_size
        machine = {t: bench_roofline.measure_machine(t) for t in sorted({1, *cfg.threads, os.cpu_count() or 1})}
    finally:
        shutil.rmtree(work, ignore_errors=True)
    _add_floors(rows, work_count, machine)
    return {"benchmark": "inference", "out_dir": str(cfg.out_dir), "model": manifest["source"],
            "config": {"rounds": cfg.rounds, "lat_calls_per_round": cfg.lat_n, "thr_calls_per_round": cfg.thr_n,
                       "threads": list(cfg.threads), "batch_throughput": 64, "data": cfg.data,
                       "accuracy_samples": cfg.accuracy_samples},
            "rows": rows, "checks": _checks(rows), "work": work_count,
            "machine": {str(k): v for k, v in machine.items()}, "environment": environment()}


def _available(runtime: str, out_dir: Path, manifest: dict) -> bool:
    if runtime == "tflite_litert":  # litert-torch converts the PyTorch source
        return manifest["source"]["kind"] != "onnx"
    if runtime.startswith("tflite_") and runtime != "tflite_onnx2tf_raw":
        return (out_dir / f"model_{runtime.removeprefix('tflite_').removesuffix('_aa')}.tflite").is_file()
    if runtime.startswith("saved_model"):
        return (out_dir / "saved_model").is_dir()
    if runtime in ("pytorch", "torchscript", "torch_compile"):
        return manifest["source"]["kind"] != "onnx"
    return True


def _litert_export(cfg: BenchConfig, manifest: dict, work: Path) -> Path | str:
    """litert-torch's .tflite of the directory's PyTorch source (its spec, weights and input shape), or why not."""
    source = manifest["source"]
    cfg.log("  litert-torch: exporting the PyTorch source (untimed)")
    got = bench_litert.export(source["spec"], work / "litert_torch.tflite", timeout_s=cfg.ready_timeout_s,
                              input_shape=tuple(manifest["inputs"][0]["pytorch_shape"]),
                              weights=source.get("weights"), log=cfg.log)
    cfg.log("  litert-torch: " + ("exported" if isinstance(got, Path) else got))
    return got


def _run_threads(cfg: BenchConfig, runtimes: list[str], threads: int, raw: RawBaseline | None,
                 litert: Path | str | None, work: Path, manifest: dict) -> list[dict]:
    def make(name: str) -> Child:
        try:
            raw_path = raw.path() if raw is not None and name == "tflite_onnx2tf_raw" else None
        except RuntimeError as exc:  # e.g. raw onnx2tf downloading calibration images for RGB inputs, offline
            last = [ln for ln in str(exc).splitlines() if ln.strip()][-1:] or ["?"]
            raise RuntimeError(f"raw onnx2tf failed: {last[0][:160]}") from None
        if name == "tflite_litert" and not isinstance(litert, Path):
            raise RuntimeError(litert or "litert-torch's file was not made")
        return Child(name, _mnist_args(cfg, raw_path, litert if name == "tflite_litert" else None), threads, work)

    children, info = start_children(
        runtimes, make, parallel=cfg.setup_parallel, timeout_s=cfg.ready_timeout_s,
        on_ready=lambda name, got: cfg.log(f"  ready t={threads} {name:20s} {_ready_text(got)}"))
    try:
        times = time_rounds(children, cfg.rounds, [(1, cfg.lat_n), (64, cfg.thr_n)],
                            lambda k: cfg.log(f"  round {k + 1}/{cfg.rounds} t={threads} done"))
    finally:
        for child in children.values():
            child.close()
    return [_row(name, threads, info[name], times.get(name, {}).get(1, []), times.get(name, {}).get(64, []),
                 manifest, cfg.out_dir) for name in runtimes]


def _mnist_args(cfg: BenchConfig, raw: Path | None, litert: Path | None = None) -> list[str]:
    args = ["--dir", str(cfg.out_dir), "--accuracy-samples", str(cfg.accuracy_samples)]
    if raw is not None:
        args += ["--raw-tflite", str(raw)]
    if litert is not None:
        args += ["--tflite", str(litert)]
    if cfg.data:
        args += ["--data", cfg.data]
    return args


def start_children(names: list[str], make: Callable[[str], Child], *, parallel: int, timeout_s: float,
                   on_ready: Callable[[str, dict], None]) -> tuple[dict[str, Child], dict[str, dict]]:
    """Build the children, ``parallel`` at a time (set-up only: nothing is timed until all are ready).

    Returns the ready children and every name's ready line (``{"ready": False, "error": ...}`` for one that failed,
    timed out, or whose ``make`` raised RuntimeError); ``on_ready(name, info)`` is called as each one settles."""
    queue, starting = list(names), {}
    children: dict[str, Child] = {}
    info: dict[str, dict] = {}
    while queue or starting:
        while queue and len(starting) < parallel:
            name = queue.pop(0)
            try:
                starting[name] = (make(name), time.monotonic() + timeout_s)
            except RuntimeError as exc:
                info[name] = {"ready": False, "error": str(exc)[:300]}
                on_ready(name, info[name])
        if not starting:
            continue
        streams = {c.proc.stdout: n for n, (c, _) in starting.items()}
        ready, _, _ = select.select(list(streams), [], [], 1.0)
        done = [streams[s] for s in ready]
        done += [n for n, (_, deadline) in starting.items() if time.monotonic() > deadline and n not in done]
        for name in done:
            child, _ = starting.pop(name)
            info[name] = child.read(0.0)
            on_ready(name, info[name])
            if info[name].get("ready"):
                children[name] = child
            else:
                child.close()
    return children, info


def time_rounds(children: dict[str, Child], rounds: int, plan: list[tuple[int, int]],
                on_round: Callable[[int], None]) -> dict[str, dict[int, list[float]]]:
    """``rounds`` interleaved rounds: each visits every child in a rotated order and times ``n`` calls at each
    ``(batch, n)`` of ``plan``. Returns every call's seconds, by child and batch."""
    times: dict[str, dict[int, list[float]]] = {n: {batch: [] for batch, _ in plan} for n in children}
    for k in range(rounds if children else 0):
        for name in rotated(list(children), k):
            for batch, n in plan:
                times[name][batch] += children[name].time(batch, n)
        on_round(k)
    return times


def _ready_text(info: dict) -> str:
    if not info.get("ready"):
        return "FAILED: " + info.get("error", "?")
    acc = "" if info["accuracy"] is None else f" acc={100 * info['accuracy']:.2f}%"
    return f"build={info['build_s']:.1f}s warmup={info['warmup_s']:.1f}s{acc} b64={info['batch64_mode']}"


def _row(name: str, threads: int, info: dict, lat: list[float], thr: list[float], manifest: dict,
         out_dir: Path) -> dict:
    row = {"runtime": name, "threads": threads, "ok": bool(info.get("ready")) and bool(lat) and bool(thr),
           "error": info.get("error")}
    for key in ("precision", "artifact", "batch64_mode", "build_s", "warmup_s", "accuracy", "accuracy_samples",
                "rss_bytes"):
        row[key] = info.get(key)
    row["size_bytes"] = _size(name, row.get("artifact"), manifest, out_dir)
    if row["ok"]:
        row.update(latency_median_s=statistics.median(lat), latency_p90_s=float(np.percentile(lat, 90)),
                   latency_min_s=min(lat), latency_calls=len(lat),
                   throughput_sps=64 / statistics.median(thr), batch64_median_s=statistics.median(thr),
                   batch64_calls=len(thr))
    return row


def _size(runtime: str, artifact: str | None, manifest: dict, out_dir: Path) -> int | None:
    if artifact is None:  # torch rows: the state_dict the model came from
        weights = manifest["source"].get("weights")
        return Path(weights).stat().st_size if weights and Path(weights).is_file() else None
    for art in manifest["artifacts"].values():
        if art.get("path") == artifact:
            return art.get("bytes")
    path = out_dir / artifact
    return path.stat().st_size if path.is_file() else None


def _work(manifest: dict) -> dict | None:
    """FLOPs/weights of the PyTorch source, when there is one."""
    source = manifest["source"]
    if source["kind"] == "onnx":
        return None
    from converter._convert.sources import load_model

    module = load_model(source["spec"], source.get("weights")).module
    return bench_roofline.count_flops(module, tuple(manifest["inputs"][0]["pytorch_shape"]))


def _add_floors(rows: list[dict], work: dict | None, machine: dict) -> None:
    if work is None:
        return
    for row in rows:
        if not row["ok"]:
            continue
        m = machine[row["threads"]]
        precision = row.get("precision") or "fp32"
        row["floor_b1_s"] = bench_roofline.floor_s(work, m, 1, precision)
        row["floor_b1_cold_s"] = bench_roofline.floor_s(work, m, 1, precision, cached=False)
        row["floor_b64_s"] = bench_roofline.floor_s(work, m, 64, precision)
        row["latency_vs_floor"] = row["latency_median_s"] / row["floor_b1_s"]
        row["b64_vs_floor"] = row["batch64_median_s"] / row["floor_b64_s"]


def _checks(rows: list[dict]) -> list[dict]:
    from converter.bench.convert import _check

    checks = []
    for threads in sorted({r["threads"] for r in rows}):
        by = {r["runtime"]: r for r in rows if r["threads"] == threads and r["ok"]}
        for peer, label, target in (("tflite_onnx2tf_raw", "raw onnx2tf", TARGET_VS_RAW),
                                    ("tflite_litert", "litert-torch", TARGET_TFLITE_VS_LITERT)):
            if "tflite_fp32" not in by or peer not in by:
                continue
            ratio = by["tflite_fp32"]["latency_median_s"] / by[peer]["latency_median_s"]
            check = _check(f"t={threads} tflite_fp32 / {label} tflite latency", ratio, target, "x")
            if "tflite_fp32_aa" in by:  # same file, second process: how far apart two identical rows land
                aa = by["tflite_fp32_aa"]["latency_median_s"] / by["tflite_fp32"]["latency_median_s"]
                check["aa_control"] = round(aa, 3)
                check["what"] += f" (A/A control, same file twice: {aa:.3f})"
            checks.append(check)
        if "tflite_fp32" in by and "tflite_dynamic_int8" in by:
            fp32, q = by["tflite_fp32"], by["tflite_dynamic_int8"]
            checks.append(_check(f"t={threads} dynamic_int8 / fp32 latency",
                                 q["latency_median_s"] / fp32["latency_median_s"], TARGET_INT8_SPEEDUP, "x"))
            if fp32["accuracy"] is not None and q["accuracy"] is not None:
                loss = 100 * (fp32["accuracy"] - q["accuracy"])
                checks.append(_check(f"t={threads} dynamic_int8 accuracy loss vs fp32 (pp)", loss,
                                     TARGET_INT8_ACC_PP, "pp"))
    return checks


def environment() -> dict:
    """Versions, CPU model and flags that matter for speed, thread counts."""
    import importlib.metadata as md

    versions = {}
    for pkg in ("torch", "tensorflow-cpu", "onnx", "onnxruntime", "onnx2tf", "ai-edge-litert", "numpy", "tf-keras"):
        try:
            versions[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            versions[pkg] = None
    cpu, flags = platform.processor(), []
    try:
        text = Path("/proc/cpuinfo").read_text()
        cpu = next((line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("model name")), cpu)
        all_flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
        flags = [f for f in ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_bf16",
                             "amx_int8", "amx_tile") if f in all_flags]
    except OSError:
        pass
    return {"python": platform.python_version(), "platform": platform.platform(), "cpu": cpu, "cpu_flags": flags,
            "cpu_count": os.cpu_count(), "versions": versions, "when_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())}
