"""How a Trainer runs alongside other processes or networks: the object it delegates to.

- `DataParallel` (the default, today's behaviour): one model replicated over the
  torch.distributed ranks (a single process is a world of one): DDP wrapping, BN statistics
  averaged at every epoch end, metrics summed over ranks, rank 0 alone writes files.
- `Independent`: this Trainer trains its OWN network (full data, its own seed) next to others,
  either on other threads of this process (`peers.Lockstep`) or on other ranks
  (`peers.DistributedPeers`); every network writes its own checkpoint and metrics and reaches
  the others only through `peers` (grafting). Each network keeps its last two checkpoints, and
  a resumed population restarts every network from the latest epoch ALL of them saved, so a run
  killed between two networks' checkpoints still resumes exactly.

Example:
    >>> strategy = DataParallel.from_env(torch.device("cpu"))
    >>> strategy.world_size, strategy.is_main, strategy.peers is None
    (1, True, True)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from prunus.data._seed import mix_seed
from prunus.engine.checkpoint import load_checkpoint, save_checkpoint
from prunus.engine.distributed import DistInfo, all_reduce_sum, barrier, init_from_env, sync_buffers
from prunus.engine.peers import Lockstep, Peers
from prunus.errors import PeerError
from prunus.formats.run_dir import RunDir

__all__ = ["DataParallel", "Independent", "Parallel", "fit_population", "network_seed"]


class Parallel:
    """The strategy interface (and the single-process behaviour)."""

    rank: int = 0
    world_size: int = 1
    peers: Peers | None = None

    @property
    def is_main(self) -> bool:
        """Whether this process writes the run's files and shows progress."""
        return True

    def wrap(self, model: nn.Module) -> nn.Module:
        """The module the training forward pass goes through."""
        return model

    def end_epoch(self, model: nn.Module) -> None:
        """After the last batch of an epoch, before the methods' on_epoch_end."""

    def reduce_sum(self, values: torch.Tensor) -> torch.Tensor:
        """Sum per-epoch statistics over the processes that share this model."""
        return values

    def barrier(self) -> None:
        """Wait for the processes that share this model."""

    def save_checkpoint(self, run_dir: RunDir, state: dict[str, Any]) -> None:
        """Write the checkpoint if this process is a writer."""
        save_checkpoint(run_dir.checkpoint, state)

    def load_checkpoint(self, run_dir: RunDir, device: torch.device) -> dict[str, Any] | None:
        """The checkpoint to resume from, or None for a fresh start."""
        path = run_dir.checkpoint
        return load_checkpoint(path, map_location=device) if path.exists() else None


class DataParallel(Parallel):
    """One model over all torch.distributed ranks (DDP), rank 0 writes."""

    def __init__(self, info: DistInfo, device: torch.device) -> None:
        self.info, self.device = info, device
        self.rank, self.world_size = info.rank, info.world_size

    @classmethod
    def from_env(cls, device: torch.device) -> DataParallel:
        """Join torchrun's process group when there is one (a plain process is a world of one)."""
        return cls(init_from_env(device), device)

    @property
    def is_main(self) -> bool:
        return self.info.is_main

    def wrap(self, model: nn.Module) -> nn.Module:
        if self.world_size <= 1:
            return model
        ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=ids)

    def end_epoch(self, model: nn.Module) -> None:
        sync_buffers(model)  # replicas leave every epoch identical, BN statistics included

    def reduce_sum(self, values: torch.Tensor) -> torch.Tensor:
        return all_reduce_sum(values)

    def barrier(self) -> None:
        barrier()

    def save_checkpoint(self, run_dir: RunDir, state: dict[str, Any]) -> None:
        if self.is_main:
            save_checkpoint(run_dir.checkpoint, state)
        barrier()  # no rank runs ahead of a checkpoint it might need to resume from


class Independent(Parallel):
    """This Trainer's own network among `peers.size`; it writes its own files.

    Args:
        peers: the exchange handle (`Lockstep.peers(k)` or `DistributedPeers()`).
    """

    def __init__(self, peers: Peers) -> None:
        self.peers = peers
        self.rank, self.world_size = peers.rank, peers.size

    def save_checkpoint(self, run_dir: RunDir, state: dict[str, Any]) -> None:
        path = run_dir.checkpoint
        if path.exists():
            path.replace(run_dir.previous_checkpoint)  # a crash now leaves the previous epoch, not nothing
        save_checkpoint(path, state)

    def load_checkpoint(self, run_dir: RunDir, device: torch.device) -> dict[str, Any] | None:
        states = {}
        for path in (run_dir.checkpoint, run_dir.previous_checkpoint):
            if path.exists():
                state = load_checkpoint(path, map_location=device)
                states[int(state["epoch"])] = state
        mine = max(states, default=0)
        assert self.peers is not None
        common = int(min(v[0] for v in self.peers.all_gather_scalars([float(mine)])))
        if common == 0:
            return None
        if common not in states:
            raise PeerError(
                f"network {self.rank} in {run_dir} has checkpoints for epochs {sorted(states)}, "
                f"but the population can only resume together from epoch {common}"
            )
        return states[common]


def network_seed(seed: int, network: int) -> int:
    """Network k's seed: network 0 keeps `seed` (so it pairs with a baseline of the same seed),
    the others get unrelated streams (not seed + k, which would collide with other runs' seeds).

    Example:
        >>> network_seed(7, 0), network_seed(7, 1) == network_seed(7, 1) != network_seed(8, 1)
        (7, True)
    """
    return seed if network == 0 else mix_seed(seed, "network", network) % 2**31


def fit_population(make: Callable[[Independent], Any], size: int, timeout: float | None = None) -> list[Any]:
    """Train `size` networks in this process, in lockstep: `make(strategy)` builds network
    `strategy.rank`'s Trainer (called on that network's thread, in turn); returns
    [(trainer, trainer.fit()), ...] in network order.

    Example:
        >>> fit_population(lambda s: ..., 2)  # doctest: +SKIP
    """

    def run(peers: Peers) -> Any:
        trainer = make(Independent(peers))
        return trainer, trainer.fit()

    return Lockstep(size, timeout).run([run] * size)
