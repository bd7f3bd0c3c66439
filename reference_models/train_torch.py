"""The guide's five PyTorch steps: data, model, loss + optimiser, the explicit training loop, evaluation.

Plus what a real run needs: seeding and deterministic algorithms, a progress bar, ``torch.compile`` and
autocast (bfloat16 on CPU, float16 on CUDA) as options, DistributedDataParallel under ``torchrun``, and
export of ``model.pt`` (state_dict) and ``model.torchscript.pt`` (traced). Rank 0 alone writes.

Speed (2-core CPU): see ``torch_data`` for why the default loader is ``tensor``; besides that, the intra-op
thread count is pinned to the cores this process may use (divided among local DDP ranks), because
OpenMP threads that outnumber free cores spin at every barrier and throughput collapses.
"""

from __future__ import annotations

import contextlib
import os
import random
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from reference_models import torch_dist
from reference_models.config import TrainConfig, lr_factor
from reference_models.data import MnistArrays
from reference_models.metrics import EpochLog, RunMetrics, accuracy, weights_checksum
from reference_models.mnist_cnn import IMAGE_SHAPE_NCHW, MnistCNN
from reference_models.torch_data import eval_tensors, train_batches

MODEL_FILE = "model.pt"
TORCHSCRIPT_FILE = "model.torchscript.pt"


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch, and ask torch for deterministic kernels (cheap for this net)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # required by deterministic cuBLAS
    torch.use_deterministic_algorithms(True, warn_only=True)


def resolve_device(name: str, ctx: torch_dist.DistContext) -> torch.device:
    """``auto`` picks CUDA when present; each local rank gets its own GPU."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            from reference_models.errors import UsageError

            raise UsageError("--device cuda but no CUDA device is visible; use --device cpu or auto")
        return torch.device("cuda", ctx.local_rank % max(torch.cuda.device_count(), 1))
    return torch.device("cpu")


def configure_threads(threads: int | None, ctx: torch_dist.DistContext) -> int:
    """Set torch's intra-op threads: ``threads`` or the usable cores shared among local ranks."""
    if threads is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        threads = max(1, cores // max(ctx.local_world_size, 1))
    torch.set_num_threads(threads)
    return threads


def train(config: TrainConfig, train_data: MnistArrays, eval_data: MnistArrays, out_dir: Path | None,
          *, ctx: torch_dist.DistContext | None = None) -> RunMetrics:
    """Train, evaluate on ``eval_data`` and (on rank 0, if ``out_dir``) write the artifacts and metrics."""
    ctx = ctx or torch_dist.context_from_env()
    saved = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    try:
        return _train(config, train_data, eval_data, out_dir, ctx)
    finally:  # leave the process as we found it (tests train in-process)
        torch.set_num_threads(saved[0])
        torch.use_deterministic_algorithms(saved[1])


def _train(config: TrainConfig, train_data: MnistArrays, eval_data: MnistArrays, out_dir: Path | None,
           ctx: torch_dist.DistContext) -> RunMetrics:
    device = resolve_device(config.device, ctx)
    threads = configure_threads(config.threads, ctx) if device.type == "cpu" else torch.get_num_threads()
    seed_everything(config.seed)
    torch_dist.init(ctx, device)
    try:
        layout = torch.channels_last if config.channels_last else torch.contiguous_format
        raw = MnistCNN().to(device, memory_format=layout)  # same seed on every rank -> same initial weights (DDP also broadcasts)
        model = _wrap(raw, config, ctx, device)
        log, seconds = _fit(model, raw, config, train_data, ctx, device)
        checksums = torch_dist.all_gather_str(weights_checksum(_weights(raw)))
        metrics = _metrics(config, raw, train_data, eval_data, log, seconds, device, threads, ctx, checksums)
        if ctx.is_main and out_dir is not None:
            export(raw, out_dir)
            metrics.write(out_dir)
        torch_dist.barrier()
        return metrics
    finally:
        torch_dist.shutdown()


def _wrap(raw: MnistCNN, config: TrainConfig, ctx: torch_dist.DistContext, device: torch.device) -> nn.Module:
    model: nn.Module = raw
    if ctx.distributed:
        from torch.nn.parallel import DistributedDataParallel

        model = DistributedDataParallel(raw, device_ids=[device.index] if device.type == "cuda" else None)
    if config.compile:
        model = torch.compile(model)
    return model


def _fit(model: nn.Module, raw: MnistCNN, config: TrainConfig, data: MnistArrays,
         ctx: torch_dist.DistContext, device: torch.device) -> tuple[EpochLog, float]:
    batches = train_batches(data, loader=config.loader, batch_size=config.batch_size // ctx.world_size,
                            seed=config.seed, rank=ctx.rank, world_size=ctx.world_size, workers=config.workers)
    criterion = nn.CrossEntropyLoss()
    # fused Adam: one kernel for all parameters instead of ~6 per tensor (measured 1.3x the step rate on 2 cores)
    optimizer = torch.optim.Adam(raw.parameters(), lr=config.lr, fused=device.type in ("cpu", "cuda"))
    log, total = EpochLog(), 0.0
    for epoch in range(config.epochs):
        for group in optimizer.param_groups:
            group["lr"] = config.lr * lr_factor(config.lr_schedule, epoch, config.epochs)
        batches.set_epoch(epoch)
        start = time.perf_counter()
        loss_sum, seen = _one_epoch(model, batches, criterion, optimizer, config, ctx, device, epoch)
        seconds = time.perf_counter() - start
        loss_sum, seen, seconds = torch_dist.all_sum([loss_sum, seen, seconds], device)
        seconds /= ctx.world_size
        total += seconds
        log.add(epoch, config.epochs, loss_sum / seen, int(seen), seconds, echo=ctx.is_main)
        if config.stop_below_loss is not None and log.losses[-1] < config.stop_below_loss:
            break  # the guide's early stop, same rule as the Keras callback; same decision on every rank
    return log, total


def _one_epoch(model, batches, criterion, optimizer, config: TrainConfig, ctx: torch_dist.DistContext,
               device: torch.device, epoch: int) -> tuple[float, int]:
    """The explicit loop: zero_grad -> forward -> loss -> backward -> step; returns (loss sum, samples)."""
    model.train()
    amp_dtype = torch.bfloat16 if device.type == "cpu" else torch.float16
    autocast = torch.autocast(device.type, dtype=amp_dtype) if config.amp else contextlib.nullcontext()
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    seen = 0
    for images, labels in _progress(batches, ctx, epoch, config.epochs):
        images = images.to(device, non_blocking=True)
        if config.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        labels = labels.to(device, non_blocking=True)
        optimizer.zero_grad(set_to_none=True)
        with autocast:
            loss = criterion(model(images), labels)
        loss.backward()
        optimizer.step()
        loss_sum += loss.detach().double() * len(labels)  # no .item(): no sync per step on CUDA
        seen += len(labels)
    return float(loss_sum), seen


def _progress(batches, ctx: torch_dist.DistContext, epoch: int, epochs: int):
    """A tqdm bar on stderr for rank 0 at a terminal; the bare iterable otherwise."""
    if not ctx.is_main or not sys.stderr.isatty():
        return batches
    from tqdm import tqdm

    return tqdm(batches, desc=f"epoch {epoch + 1}/{epochs}", unit="batch", leave=False, file=sys.stderr)


@torch.no_grad()
def predict_logits(model: nn.Module, images: torch.Tensor, batch_size: int = 1000) -> np.ndarray:
    """Float32 logits for ``[N, 1, 28, 28]`` images, in eval mode, batch by batch."""
    model.eval()
    device = next(model.parameters()).device
    outs = [model(images[i:i + batch_size].to(device)).float().cpu() for i in range(0, len(images), batch_size)]
    return torch.cat(outs).numpy()


def _weights(raw: MnistCNN) -> list[np.ndarray]:
    return [t.detach().float().cpu().numpy() for t in raw.state_dict().values()]


def _metrics(config, raw, train_data, eval_data, log, seconds, device, threads, ctx, checksums) -> RunMetrics:
    acc = float("nan")
    if ctx.is_main:
        images, labels = eval_tensors(eval_data)
        acc = accuracy(predict_logits(raw, images), labels.numpy())
    samples = sum(log.samples)
    return RunMetrics(
        framework="torch", epochs=len(log.losses), batch_size=config.batch_size, lr=config.lr, seed=config.seed,
        train_samples=len(train_data), eval_samples=len(eval_data), train_source=train_data.source,
        eval_source=eval_data.source, test_accuracy=acc, final_loss=log.losses[-1], train_seconds=seconds,
        samples_per_second=samples / seconds if seconds else float("nan"), epoch_losses=log.losses,
        epoch_samples_per_second=log.samples_per_second,
        extra={"device": str(device), "loader": config.loader, "threads": threads, "world_size": ctx.world_size,
               "compile": config.compile, "amp": config.amp, "channels_last": config.channels_last,
               "lr_schedule": config.lr_schedule,
               "weights_sha256": checksums[0], "rank_weights_sha256": checksums, "torch": torch.__version__},
    )


def export(raw: MnistCNN, out_dir: Path) -> None:
    """Write ``model.pt`` (state_dict, CPU tensors) and ``model.torchscript.pt`` (traced on CPU, eval mode)."""
    model = raw.to("cpu", memory_format=torch.contiguous_format).eval()  # artifacts are plain NCHW
    torch.save({k: v.detach().clone() for k, v in model.state_dict().items()}, Path(out_dir) / MODEL_FILE)
    example = torch.zeros(1, *IMAGE_SHAPE_NCHW)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated in favour of torch.export
        traced = torch.jit.trace(model, example)
        traced.save(str(Path(out_dir) / TORCHSCRIPT_FILE))


def load_state_dict_model(path: Path) -> MnistCNN:
    """Rebuild the net from a ``model.pt`` written by :func:`export`."""
    model = MnistCNN()
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return model.eval()


def load_torchscript(path: Path) -> torch.jit.ScriptModule:
    """Load a ``model.torchscript.pt`` written by :func:`export` (quietly: torch.jit is deprecated)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return torch.jit.load(str(path), map_location="cpu").eval()
