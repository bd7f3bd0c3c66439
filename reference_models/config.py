"""The options of one training run, shared by both trainers; the CLI builds it, the trainers read it."""

from __future__ import annotations

import math
from dataclasses import dataclass

FRAMEWORKS = ("torch", "keras")
LR_SCHEDULES = ("none", "cosine", "step")
STRATEGIES = ("none", "mirrored", "multi-worker")
DEVICES = ("auto", "cpu", "cuda")


@dataclass(frozen=True)
class TrainConfig:
    """Defaults follow the guide: 10 epochs, batch 64, Adam at 1e-3.

    ``batch_size`` is the *global* batch: under DDP / multi-worker each of N processes takes
    ``batch_size // N`` per step, so the optimisation matches a single-process run.
    """

    framework: str
    epochs: int = 10
    batch_size: int = 64
    lr: float = 1e-3
    train_data: str = "auto"
    eval_data: str = "auto"
    seed: int = 0
    verbose: bool = False
    lr_schedule: str = "none"
    stop_below_loss: float | None = None  # the guide's early stop; off by default
    # torch only
    device: str = "auto"
    loader: str = "tensor"
    workers: int = 0
    threads: int | None = None  # None: one per usable core, shared among local DDP processes
    compile: bool = False
    amp: bool = False
    channels_last: bool = True  # NHWC: max-pool ~10x faster on CPU
    # keras only
    jit_compile: bool = False
    mixed_precision: bool = False
    eager_debug: bool = False
    strategy: str = "none"


def lr_factor(schedule: str, epoch: int, epochs: int) -> float:
    """Multiplier on the base learning rate for 0-based ``epoch`` of ``epochs``, per ``schedule``.

    ``cosine`` decays from 1 towards 0 over the run; ``step`` halves every third of the run (at least
    every epoch); ``none`` keeps 1. The same function drives both frameworks.
    """
    if schedule == "none":
        return 1.0
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * epoch / max(epochs, 1)))
    if schedule == "step":
        return 0.5 ** (epoch // max(1, epochs // 3))
    raise ValueError(f"unknown lr schedule {schedule!r}; use one of {', '.join(LR_SCHEDULES)}")
