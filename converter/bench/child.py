"""One benchmark child: builds one runtime, then times it on request from the parent (``converter.bench.core``).

Run as ``python -m converter.bench.child --runtime NAME --dir OUT_DIR --threads T``. It prints one JSON
line when ready (setup time, batch-64 mode, accuracy, RSS), then answers JSON commands read from stdin:

- ``{"cmd": "time", "batch": 1 | 64, "n": N, "warmup": W}`` -> ``{"times_s": [...]}`` (W untimed calls
  first: the process sat idle while other children ran, so its caches are cold);
- ``{"cmd": "quit"}``.

Serving mode (``--inputs FILE.npz``, the zoo benchmark :mod:`converter.bench.zoo_serving`): the model's own inputs
(every input, by name, PyTorch layout) instead of digits, the batch sizes of ``--batches``, no accuracy; the
ready line carries each batch's mode and, with ``--outputs``, the batch-1 outputs (PyTorch layout) are saved so the
parent can check every runtime computes the same function.

The protocol uses a private duplicate of stdout; fd 1 is pointed at stderr so that whatever TF, XNNPACK
or inductor print can never corrupt it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from converter._convert.batches import chunks

BATCH = 64


def main(argv: list[str] | None = None) -> int:
    from converter._proc.children import die_with_parent

    die_with_parent()
    p = argparse.ArgumentParser(prog="bench_child")
    p.add_argument("--runtime", required=True)
    p.add_argument("--dir", required=True, type=Path)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--raw-tflite", type=Path)
    p.add_argument("--data", help="IDX directory of labelled digits for the accuracy column")
    p.add_argument("--accuracy-samples", type=int, default=10_000)
    p.add_argument("--inputs", type=Path, help="serving mode: the model's inputs (.npz by input name, PyTorch layout)")
    p.add_argument("--batches", default="1,32", help="serving mode: batch sizes to prepare")
    p.add_argument("--zoo", help="serving mode, pytorch: the zoo entry to build")
    p.add_argument("--tflite", type=Path, help="tflite_litert: litert-torch's .tflite")
    p.add_argument("--outputs", type=Path, help="serving mode: save the batch-1 outputs here (.npz)")
    args = p.parse_args(argv)
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    try:
        info, benches, sample = _setup_serving(args) if args.inputs else _setup(args)
    except Exception as exc:  # report, don't hang the parent
        proto.write(json.dumps({"ready": False, "error": f"{type(exc).__name__}: {exc}"[:500]}) + "\n")
        return 1
    proto.write(json.dumps(info) + "\n")
    for line in sys.stdin:
        cmd = json.loads(line)
        if cmd["cmd"] == "quit":
            break
        bench = benches.get(cmd["batch"])
        if bench is None:  # a batch this runtime cannot take (info says why): no times
            proto.write(json.dumps({"times_s": []}) + "\n")
            continue
        x = bench.prepare(_first(sample, cmd["batch"]))
        for _ in range(cmd.get("warmup", 5)):
            bench.call(x)
        proto.write(json.dumps({"times_s": _time_calls(bench.call, x, cmd["n"])}) + "\n")
    return 0


def _time_calls(call, x, n: int) -> list[float]:
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        call(x)
        times.append(time.perf_counter() - t0)
    return times


def _setup(args):
    import psutil

    from converter.bench import runtimes as br

    manifest = json.loads((args.dir / "manifest.json").read_text())
    images, labels = _data(args, manifest)
    t0 = time.perf_counter()
    bench1 = br.build(args.runtime, args.dir, manifest, args.threads, args.raw_tflite, args.tflite)
    bench64 = br.with_batch64(bench1, images[:BATCH], _resizable(br, bench1, args, manifest))
    build_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    x1, x64 = bench1.prepare(images[:1]), bench64.prepare(images[:BATCH])
    for _ in range(20):
        bench1.call(x1)
    for _ in range(3):
        bench64.call(x64)
    warmup_s = time.perf_counter() - t0
    accuracy = _accuracy(bench64, images, labels, args.accuracy_samples) if labels is not None else None
    info = {"ready": True, "runtime": args.runtime, "precision": bench1.precision, "artifact": bench1.artifact,
            "threads": args.threads, "batch64_mode": bench64.batch64_mode, "build_s": build_s,
            "warmup_s": warmup_s, "accuracy": accuracy,
            "accuracy_samples": None if labels is None else min(len(labels), args.accuracy_samples),
            "rss_bytes": psutil.Process().memory_info().rss}
    return info, {1: bench1, BATCH: bench64}, images[:BATCH]


def _first(sample: np.ndarray | list[np.ndarray], n: int) -> np.ndarray | list[np.ndarray]:
    """The first ``n`` samples of one array (MNIST mode) or of every input (serving mode)."""
    return sample[:n] if isinstance(sample, np.ndarray) else [x[:n] for x in sample]


def _setup_serving(args):
    """Serving mode: one bench per batch of ``--batches`` (a batch the runtime cannot take is left out, with why)."""
    import psutil

    from converter.bench import runtimes as br

    manifest = json.loads((args.dir / "manifest.json").read_text())
    with np.load(args.inputs) as npz:
        sample = [npz[i["name"]] for i in manifest["inputs"]]
    t0 = time.perf_counter()
    bench1 = br.serving(args.runtime, args.dir, manifest, args.threads, zoo=args.zoo, tflite=args.tflite)
    benches, modes = {1: bench1}, {"1": bench1.batch64_mode}
    for batch in (int(b) for b in args.batches.split(",") if int(b) != 1):
        try:
            benches[batch] = br.at_batch(bench1, batch, _first(sample, batch))
            modes[str(batch)] = benches[batch].batch64_mode
        except (RuntimeError, ValueError) as exc:
            modes[str(batch)] = f"unavailable: {' '.join(str(exc).split())[:200]}"
    build_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for batch, bench in benches.items():
        x = bench.prepare(_first(sample, batch))
        for _ in range(20 if batch == 1 else 3):
            bench.call(x)
    warmup_s = time.perf_counter() - t0
    if args.outputs is not None:
        outputs = bench1.to_pytorch(bench1.call(bench1.prepare(_first(sample, 1))))
        np.savez(args.outputs, *outputs)
    info = {"ready": True, "runtime": args.runtime, "precision": bench1.precision, "artifact": bench1.artifact,
            "threads": args.threads, "modes": modes, "build_s": build_s, "warmup_s": warmup_s,
            "rss_bytes": psutil.Process().memory_info().rss, "op_histogram": bench1.op_histogram}
    if bench1.profile is not None:  # last: its traced copy is not in the RSS above, nor in any timed call
        try:
            info["op_times"] = bench1.profile(bench1.prepare(_first(sample, 1)))
        except Exception as exc:  # a profile is an explanation, not a measurement: the row stands without it
            info["op_times_error"] = f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}"
    return info, benches, sample


def _resizable(br, bench1, args, manifest):
    """The candidate batch-64 runner: the same object where the runtime takes any batch."""
    if bench1.runtime.startswith("tflite"):
        path, _, perm = br.tflite_file(bench1.runtime, args.dir, manifest, args.raw_tflite, args.tflite)
        try:
            return br.tflite_at(path, bench1.precision, args.threads, bench1.runtime, perm, batch=BATCH)
        except RuntimeError:  # e.g. XNNPACK cannot reshape a graph whose Reshape bakes in batch 1: loop
            return None
    return bench1


def _data(args, manifest) -> tuple[np.ndarray, np.ndarray | None]:
    """NCHW float32 digits + labels when labelled data fits the model; else seeded random inputs."""
    shape = tuple(manifest["inputs"][0]["pytorch_shape"][1:])
    if args.data and shape == (1, 28, 28):
        from reference_models.data import normalize_nchw, read_idx_dir

        arrays = read_idx_dir(args.data)
        return normalize_nchw(arrays.images), np.asarray(arrays.labels)
    rng = np.random.default_rng(0)
    return rng.standard_normal((BATCH, *shape), dtype=np.float32), None


def _accuracy(bench, images: np.ndarray, labels: np.ndarray, limit: int) -> float:
    """Top-1 on the first ``limit`` digits, fed in batches of 64 (the last one padded, padding dropped)."""
    n = min(limit, len(labels))
    correct = done = 0
    for real, (part,) in chunks([images[:n]], BATCH):
        logits = bench.call(bench.prepare(part))[:real]
        correct += int((np.argmax(logits, axis=1) == labels[done:done + real]).sum())
        done += real
    return correct / n


if __name__ == "__main__":
    sys.exit(main())
