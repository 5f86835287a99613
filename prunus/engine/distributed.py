"""torch.distributed plumbing: initialise from torchrun's environment, reduce, barrier.

A run started with `torchrun --nproc_per_node=N -m prunus train ...` sees WORLD_SIZE/RANK in its
environment; `init_from_env` then creates the process group (gloo on CPU, NCCL on CUDA). Without
those variables everything degrades to a single process and every helper is a no-op.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

__all__ = ["DistInfo", "all_reduce_sum", "barrier", "init_from_env", "is_main", "sync_buffers"]


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits in the job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_from_env(device: torch.device | None = None) -> DistInfo:
    """Join the process group described by torchrun's variables (idempotent).

    Example:
        >>> init_from_env().world_size  # a plain process is a world of one
        1
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistInfo()
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    if not dist.is_initialized():
        backend = "nccl" if device is not None and device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend)
    return DistInfo(rank=rank, world_size=world_size, local_rank=local_rank)


def is_main() -> bool:
    """True on rank 0 and in non-distributed runs."""
    return not dist.is_initialized() or dist.get_rank() == 0


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def all_reduce_sum(values: torch.Tensor) -> torch.Tensor:
    """Sum a tensor over ranks (returns the input unchanged in single-process runs)."""
    if dist.is_initialized():
        values = values.clone()
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values


@torch.no_grad()
def sync_buffers(model: torch.nn.Module) -> None:
    """Make every rank's buffers identical: average float buffers (BN running stats), copy the rest from rank 0.

    DDP broadcasts rank 0's buffers before each forward, but the update made by the last forward
    stays local, so without this replicas would end an epoch with different BN statistics.
    """
    if not dist.is_initialized():
        return
    world = dist.get_world_size()
    for buf in model.buffers():
        if buf.is_floating_point():
            dist.all_reduce(buf, op=dist.ReduceOp.SUM)
            buf.div_(world)
        else:
            dist.broadcast(buf, src=0)
