"""Training throughput, side by side: torch (default loader), torch (``--loader torchvision``), keras.

Each configuration runs as a real ``train-reference`` subprocess on the embedded digits; the figure per
run is the median of its per-epoch samples/s after the first (warm-up) epoch. Runs are interleaved over
``--rounds`` so that load from other processes on a shared machine hits every configuration alike, and
each configuration reports its best and median round; the keras/torch ratio is taken within each round
(same load) and the median of those is reported. Used by ``scripts/bench_train``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

TORCH_DEFAULT = "torch (default: tensor loader)"
KERAS = "keras (fit, tf.data)"
CONFIGS: dict[str, list[str]] = {
    "torch (default: tensor loader)": ["--framework", "torch"],
    "torch --loader torchvision": ["--framework", "torch", "--loader", "torchvision"],
    "keras (fit, tf.data)": ["--framework", "keras"],
}
EXTRA_CONFIGS: dict[str, list[str]] = {
    "torch --loader torchvision --workers 2": ["--framework", "torch", "--loader", "torchvision", "--workers", "2"],
    "torch --threads 1": ["--framework", "torch", "--threads", "1"],
    "torch --no-channels-last": ["--framework", "torch", "--no-channels-last"],
    "torch OMP_WAIT_POLICY=ACTIVE": ["--framework", "torch"],
}
_ENV = {"torch OMP_WAIT_POLICY=ACTIVE": {"OMP_WAIT_POLICY": "ACTIVE"}}


def run_once(name: str, args: list[str], epochs: int, workdir: Path) -> float:
    """One training run; returns the median samples/s of its epochs after the first."""
    out = workdir / f"{len(list(workdir.iterdir()))}"
    cmd = [sys.executable, "-m", "reference_models.cli", *args, "--out", str(out), "--epochs", str(epochs),
           "--train-data", "embedded", "--eval-data", "embedded"]
    env = {**os.environ, **_ENV.get(name, {})}
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    rates = json.loads((out / "metrics.json").read_text())["epoch_samples_per_second"]
    return statistics.median(rates[1:] if len(rates) > 1 else rates)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench_train", description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--extra", action="store_true", help="also torchvision+2 workers, 1 thread, contiguous NCHW, active OMP wait")
    args = p.parse_args(argv)
    configs = {**CONFIGS, **(EXTRA_CONFIGS if args.extra else {})}
    rates: dict[str, list[float]] = {name: [] for name in configs}
    with tempfile.TemporaryDirectory(prefix="bench_train-") as tmp:
        for round_ in range(args.rounds):
            for name, cfg in configs.items():
                rates[name].append(run_once(name, cfg, args.epochs, Path(tmp)))
                print(f"round {round_ + 1}: {name:<42} {rates[name][-1]:>8,.0f} samples/s", file=sys.stderr,
                      flush=True)
    print_table(rates)
    return 0


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


if __name__ == "__main__":
    sys.exit(main())
