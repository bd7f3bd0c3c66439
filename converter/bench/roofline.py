"""The latency floor: how much work one inference is, and how fast this machine can possibly do it.

Convention: **FLOPs = 2 x MACs** of Conv / Linear layers. A K-term dot product plus its bias is K
multiplies and K adds (K-1 accumulations + the bias), so the bias is *included* and the count is exact.
ReLU and max-pool are comparisons, not FLOPs, and are left out (they are <2 % of the work here).

Weight bytes are the parameters one inference must read (every weight is used once per batch). The floor
for a batch is ``max(FLOPs / FLOP rate, weight bytes / memory bandwidth)``, both rates measured here with
NumPy (``measure_machine``): the copy rate of a 256 MiB array (DRAM) and of a 4 MiB one (cache, where a
2.8 MB weight set lives between back-to-back calls), in a child process per thread count because BLAS reads its thread count at
import. It is optimistic: small GEMMs never reach the large-matmul rate; a 2.8 MB weight set can stay in
the L2/L3 cache, beating DRAM bandwidth.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import numpy as np

CACHE_PROBE_BYTES = 4 * 1024 * 1024


def count_flops(module, input_shape: tuple[int, ...]) -> dict:
    """FLOPs and MACs per *sample* of ``module`` (hooks on Conv/Linear), and its parameter bytes."""
    import torch
    from torch import nn

    layers: list[dict] = []

    def hook(mod, inputs, output):
        batch = output.shape[0]
        if isinstance(mod, nn.Conv2d):
            k = (mod.in_channels // mod.groups) * mod.kernel_size[0] * mod.kernel_size[1]
            macs = output[0].numel() * k
        else:
            macs = mod.in_features * mod.out_features * (output.numel() // (batch * mod.out_features))
        layers.append({"type": type(mod).__name__, "macs": macs, "flops": 2 * macs,
                       "output_shape": list(output.shape[1:])})

    handles = [m.register_forward_hook(hook) for m in module.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    try:
        with torch.inference_mode():
            module(torch.zeros(input_shape))
    finally:
        for h in handles:
            h.remove()
    params = sum(p.numel() for p in module.parameters())
    return {"convention": "FLOPs = 2 x MACs of Conv/Linear; bias included; ReLU/max-pool excluded",
            "flops_per_sample": sum(layer["flops"] for layer in layers),
            "macs_per_sample": sum(layer["macs"] for layer in layers),
            "parameters": params, "weight_bytes_fp32": 4 * params, "layers": layers}


def _machine_probe(threads: int) -> dict:
    """Best-of-N copy bandwidth (read + write bytes) and float32 matmul FLOP rate, in this process."""
    a = np.ones(64 * 1024 * 1024 // 4 * 4, dtype=np.float32)  # 256 MiB: far past any cache
    b = np.empty_like(a)
    best = min(_timed(lambda: np.copyto(b, a)) for _ in range(5))
    bandwidth = 2 * a.nbytes / best
    small = np.ones(CACHE_PROBE_BYTES // 4, dtype=np.float32)  # about the reference net's weight set
    small_out = np.empty_like(small)
    best_small = min(_timed(lambda: np.copyto(small_out, small)) for _ in range(200))
    n = 1024
    m1 = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32)
    m2 = m1.copy()
    best_mm = min(_timed(lambda: m1 @ m2) for _ in range(5))
    return {"threads": threads, "copy_bandwidth_bytes_s": bandwidth, "matmul_flops_s": 2 * n ** 3 / best_mm,
            "cache_bandwidth_bytes_s": 2 * small.nbytes / best_small, "cache_probe_bytes": small.nbytes,
            "matmul_n": n, "copy_bytes": a.nbytes}


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def measure_machine(threads: int) -> dict:
    """Run :func:`_machine_probe` in a child whose BLAS/OpenMP thread count is ``threads``."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), OPENBLAS_NUM_THREADS=str(threads),
               MKL_NUM_THREADS=str(threads))
    code = f"import json; from converter.bench.roofline import _machine_probe; print(json.dumps(_machine_probe({threads})))"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


#: Bytes per weight a runtime actually reads: XNNPACK unpacks fp16 weights to fp32 when it loads the model.
BYTES_PER_WEIGHT = {"fp32": 4, "fp16": 4, "dynamic_int8": 1, "int8": 1}


def floor_s(work: dict, machine: dict, batch: int, precision: str, *, cached: bool = True) -> float:
    """The optimistic lower bound on the time of one batch (see the module docstring).

    ``cached``: weights stream from cache (steady state of back-to-back calls: the cache-sized copy rate);
    otherwise from DRAM (a cold call: the 256 MiB copy rate).
    """
    compute = batch * work["flops_per_sample"] / machine["matmul_flops_s"]
    rate = machine["cache_bandwidth_bytes_s" if cached else "copy_bandwidth_bytes_s"]
    memory = work["parameters"] * BYTES_PER_WEIGHT.get(precision, 4) / rate
    return max(compute, memory)
