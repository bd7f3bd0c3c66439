"""The process group for ``torchrun`` launches: who am I, how many are we, and collective helpers.

Under ``torchrun --nproc_per_node N`` (or ``--nnodes``) the environment carries ``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``LOCAL_WORLD_SIZE``, ``MASTER_ADDR`` and ``MASTER_PORT``; without them this is a
single-process run and every helper is a no-op.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistContext:
    """This process's place in the job; ``rank == 0`` is the only one that writes artifacts."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def context_from_env() -> DistContext:
    """Read the torchrun variables (all default to a single process)."""
    env = os.environ
    return DistContext(
        rank=int(env.get("RANK", 0)),
        world_size=int(env.get("WORLD_SIZE", 1)),
        local_rank=int(env.get("LOCAL_RANK", 0)),
        local_world_size=int(env.get("LOCAL_WORLD_SIZE", env.get("WORLD_SIZE", 1))),
    )


def init(ctx: DistContext, device: torch.device) -> None:
    """Join the process group: NCCL on CUDA, Gloo on CPU. No-op for a single process."""
    if ctx.distributed and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, rank=ctx.rank, world_size=ctx.world_size,
                                timeout=timedelta(minutes=5))


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def all_sum(values: list[float], device: torch.device) -> list[float]:
    """Element-wise sum of ``values`` over all ranks (float64); identity for a single process."""
    if not dist.is_initialized():
        return list(values)
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor.tolist()


def all_gather_str(value: str) -> list[str]:
    """Every rank's ``value``, in rank order; ``[value]`` for a single process."""
    if not dist.is_initialized():
        return [value]
    gathered: list[str] = [""] * dist.get_world_size()
    dist.all_gather_object(gathered, value)
    return gathered


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()
