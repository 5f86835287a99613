"""Peer exchange between N independently trained networks (what grafting needs).

Two implementations of one small interface (`Peers`):

- `Lockstep` runs N callables (one Trainer.fit each) on N threads in ONE process, strictly one
  at a time: a thread runs until it reaches a collective, then hands the turn to the next
  network; the last arrival combines everyone's contribution and network 0 resumes. Training is
  therefore "N models trained in turn", deterministic, and every network sees the others'
  tensors exactly as they were when they reached the collective (PRE-graft weights).
- `DistributedPeers`: one network per torch.distributed rank, tensors exchanged with gloo
  collectives on a dedicated group whose timeout turns a dead or hung rank into a `PeerError`
  instead of a silent hang. No files on disk.

A method written against `Peers` (rank, size, `ring_exchange`, `all_gather_scalars`) works in
both, and for the same seeds both give the same weights.

Example:
    >>> group = Lockstep(2)
    >>> def work(peers):
    ...     (theirs,) = peers.ring_exchange([torch.tensor([float(peers.rank)])])
    ...     return theirs.item(), peers.all_gather_scalars([peers.rank * 10.0])
    >>> group.run([work, work])
    [(1.0, [[0.0], [10.0]]), (0.0, [[0.0], [10.0]])]
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any, Protocol, TypeVar, runtime_checkable

import torch
import torch.distributed as dist

from prunus.errors import PeerError

__all__ = ["DEFAULT_TIMEOUT_S", "DistributedPeers", "Lockstep", "Peers", "peer_timeout"]

T = TypeVar("T")

#: seconds a collective waits for the other networks before raising PeerError
DEFAULT_TIMEOUT_S = 600.0


def peer_timeout() -> float:
    """The exchange timeout: $PRUNUS_PEER_TIMEOUT seconds, else `DEFAULT_TIMEOUT_S`."""
    return float(os.environ.get("PRUNUS_PEER_TIMEOUT", DEFAULT_TIMEOUT_S))


@runtime_checkable
class Peers(Protocol):
    """This network's view of the population."""

    rank: int  # this network's index, 0..size-1
    size: int  # number of networks

    def ring_exchange(self, tensors: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """Send `tensors` to network rank+1, return network rank-1's (ring; same shapes everywhere)."""
        ...

    def all_gather_scalars(self, values: Sequence[float]) -> list[list[float]]:
        """Every network's `values` (same length everywhere), indexed by network."""
        ...


# ---------------------------------------------------------------------------------- in-process
class _LockstepPeers:
    def __init__(self, group: Lockstep, rank: int) -> None:
        self._group, self.rank, self.size = group, rank, group.size

    def ring_exchange(self, tensors: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        mine = [t.detach().clone() for t in tensors]
        everyone = self._group.collective(self.rank, mine)
        return everyone[(self.rank - 1) % self.size]

    def all_gather_scalars(self, values: Sequence[float]) -> list[list[float]]:
        return [list(v) for v in self._group.collective(self.rank, [float(v) for v in values])]


class Lockstep:
    """N networks in one process, run in turn on N threads; see the module docstring.

    Args:
        size: number of networks.
        timeout: seconds a thread waits for its turn, while the network holding the turn is
            itself blocked, before raising `PeerError` (a network that skipped a collective would
            otherwise deadlock the others). Waiting on a network that is still computing is not
            limited: without exchanges, each network's whole run is one turn.
    """

    def __init__(self, size: int, timeout: float | None = None) -> None:
        if size < 1:
            raise PeerError(f"a population needs at least one network, got {size}")
        self.size = size
        self.timeout = peer_timeout() if timeout is None else timeout
        self._cond = threading.Condition()
        self._turn = 0
        self._done = [False] * size
        self._waiting: set[int] = set()  # networks blocked in _wait; the others are computing
        self._inbox: list[Any] = [None] * size
        self._arrived = 0
        self._generation = 0
        self._results: Any = None
        self._failed: tuple[int, BaseException] | None = None

    def peers(self, rank: int) -> Peers:
        """The `Peers` handle of network `rank`."""
        return _LockstepPeers(self, rank)

    def run(self, fns: Sequence[Callable[[Peers], T]]) -> list[T]:
        """Call fns[k](peers(k)) for every k in lockstep; returns their results in order.

        The first exception raised by any network is re-raised here (the others stop at their
        next collective with a PeerError naming it).
        """
        if len(fns) != self.size:
            raise PeerError(f"Lockstep({self.size}) got {len(fns)} callables")
        results: list[Any] = [None] * self.size
        threads = [
            threading.Thread(target=self._worker, args=(k, fns[k], results), name=f"prunus-net{k}", daemon=True)
            for k in range(self.size)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if self._failed is not None:
            raise self._failed[1]
        return results

    # --------------------------------------------------------------------------- internals
    def _worker(self, k: int, fn: Callable[[Peers], Any], results: list[Any]) -> None:
        try:
            self._wait_turn(k)
            results[k] = fn(self.peers(k))
        except BaseException as exc:  # noqa: BLE001 - handed to run(), which re-raises it
            with self._cond:
                if self._failed is None:
                    self._failed = (k, exc)
                self._cond.notify_all()
        finally:
            with self._cond:
                self._done[k] = True
                self._pass_turn(k)

    def _wait_turn(self, k: int) -> None:
        with self._cond:
            self._wait(lambda: self._turn == k, k)

    def _wait(self, predicate: Callable[[], bool], k: int) -> None:
        self._waiting.add(k)
        try:
            while True:
                ok = self._cond.wait_for(lambda: predicate() or self._failed is not None, timeout=self.timeout)
                if self._failed is not None and self._failed[0] != k:
                    raise PeerError(f"network {k}: network {self._failed[0]} failed ({type(self._failed[1]).__name__})")
                if ok:
                    return
                holder = self._turn
                if holder not in self._waiting and not self._done[holder]:
                    # the network holding the turn is computing (a population without exchanges
                    # trains one network's whole run per turn): a long turn is not a hang
                    continue
                raise PeerError(f"network {k}: no turn within {self.timeout:g}s (a network skipped a collective)")
        finally:
            self._waiting.discard(k)

    def _pass_turn(self, k: int) -> None:
        for step in range(1, self.size + 1):
            nxt = (k + step) % self.size
            if not self._done[nxt]:
                self._turn = nxt
                break
        self._cond.notify_all()

    def collective(self, k: int, value: Any) -> list[Any]:
        """Contribute `value`, wait until every network has, return all contributions."""
        with self._cond:
            if any(self._done):
                raise PeerError(f"network {k} called a collective after another network finished")
            self._inbox[k] = value
            self._arrived += 1
            generation = self._generation
            if self._arrived == self.size:
                self._results, self._inbox = self._inbox, [None] * self.size
                self._arrived = 0
                self._generation += 1
                self._turn = 0
                self._cond.notify_all()
            else:
                self._pass_turn(k)
            self._wait(lambda: self._generation > generation and self._turn == k, k)
            return self._results


# -------------------------------------------------------------------------------- distributed
class DistributedPeers:
    """One network per torch.distributed rank; collectives on a gloo group with a timeout.

    Must be created on every rank (it creates a process group collectively). Tensors travel as
    float64 on the CPU, so float32 weights arrive bit-exact whatever the main backend is.
    """

    def __init__(self, timeout: float | None = None) -> None:
        if not dist.is_initialized():
            raise PeerError("DistributedPeers needs an initialised torch.distributed process group (use torchrun)")
        self.rank, self.size = dist.get_rank(), dist.get_world_size()
        self.timeout = peer_timeout() if timeout is None else timeout
        self._group = dist.new_group(backend="gloo", timeout=timedelta(seconds=self.timeout))

    def _all_gather(self, flat: torch.Tensor) -> list[torch.Tensor]:
        out = [torch.empty_like(flat) for _ in range(self.size)]
        try:
            dist.all_gather(out, flat, group=self._group)
        except RuntimeError as exc:  # gloo: timeout or a closed connection from a dead rank
            first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
            raise PeerError(
                f"rank {self.rank}: peer exchange failed within {self.timeout:g}s "
                f"(another rank died or hung; set PRUNUS_PEER_TIMEOUT to change the limit): {first}"
            ) from None
        return out

    def ring_exchange(self, tensors: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        flat = torch.cat([t.detach().reshape(-1).to("cpu", torch.float64) for t in tensors])
        theirs = self._all_gather(flat)[(self.rank - 1) % self.size]
        out, offset = [], 0
        for t in tensors:
            out.append(theirs[offset : offset + t.numel()].view(t.shape).to(t.device, t.dtype))
            offset += t.numel()
        return out

    def all_gather_scalars(self, values: Sequence[float]) -> list[list[float]]:
        gathered = self._all_gather(torch.tensor([float(v) for v in values], dtype=torch.float64))
        return [g.tolist() for g in gathered]
