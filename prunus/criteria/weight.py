"""Criteria computed from the weights alone: norms, distances, BN scale, entropy and random.

Example:
    >>> import torch
    >>> from prunus.structure import ChannelTensors
    >>> w = torch.tensor([[0.0, 0.0], [1.0, 0.0], [3.0, 0.0]])
    >>> DistanceCriterion()(ChannelTensors("g", 3, writers=(w,), norms=()))  # 0 is nearest the others
    tensor([4., 3., 5.])
"""

from __future__ import annotations

import zlib

import torch

from prunus.criteria.base import Criterion, DataBatch, WeightCriterion, register_criterion
from prunus.errors import ConfigError
from prunus.structure import ChannelTensors

__all__ = [
    "BNScaleCriterion",
    "DistanceCriterion",
    "EntropyCriterion",
    "L1Criterion",
    "L1DistanceCriterion",
    "L2Criterion",
    "RandomCriterion",
]


@register_criterion("l1")
class L1Criterion(WeightCriterion):
    """Sum of absolute weights of each filter."""

    def score_matrix(self, w: torch.Tensor) -> torch.Tensor:
        return torch.linalg.vector_norm(w, 1, dim=1)  # = w.abs().sum(1), without a copy of w


@register_criterion("l2")
class L2Criterion(WeightCriterion):
    """L2 norm of each flattened filter (SFP's default)."""

    def score_matrix(self, w: torch.Tensor) -> torch.Tensor:
        return w.norm(dim=1)


@register_criterion("dist-l2")
@register_criterion("fpgm")
class DistanceCriterion(WeightCriterion):
    """Sum of L2 distances to the other filters (FPGM: filters near the geometric median score low)."""

    p: float = 2.0

    def score_matrix(self, w: torch.Tensor) -> torch.Tensor:
        # The distance to itself is 0, so summing the whole row is the sum over the others.
        return torch.cdist(w.unsqueeze(0), w.unsqueeze(0), p=self.p)[0].sum(1)


@register_criterion("dist-l1")
class L1DistanceCriterion(DistanceCriterion):
    """Sum of L1 distances to the other filters."""

    p = 1.0


@register_criterion("entropy")
class EntropyCriterion(WeightCriterion):
    """Entropy (natural log) of a 10-bin equal-width histogram of each filter's weights.

    The bins span the filter's own [min, max]; a constant filter puts everything in one bin and
    scores 0. Filter grafting uses it as a layer's information content.
    """

    bins: int = 10

    def score_matrix(self, w: torch.Tensor) -> torch.Tensor:
        lo = w.min(1, keepdim=True).values
        span = w.max(1, keepdim=True).values - lo
        # Position in [0, bins]; the maximum falls into the last bin, as with torch.histc.
        pos = torch.where(span > 0, (w - lo) / span.clamp_min(torch.finfo(w.dtype).tiny), torch.zeros_like(w))
        idx = (pos * self.bins).long().clamp_(0, self.bins - 1)
        counts = torch.zeros(w.shape[0], self.bins, dtype=w.dtype, device=w.device)
        counts.scatter_add_(1, idx, torch.ones_like(w))
        p = counts / w.shape[1]
        return -torch.special.xlogy(p, p).sum(1)


@register_criterion("bn-scale")
class BNScaleCriterion(Criterion):
    """Absolute BatchNorm gamma of each channel (network slimming's scale factor)."""

    def per_tensor(self, tensors: ChannelTensors, batch: DataBatch | None) -> list[torch.Tensor]:
        if not tensors.norms:
            raise ConfigError(f"criterion 'bn-scale' needs a BatchNorm in group {tensors.key!r}; it has none")
        return [g.abs() for g in tensors.norms]


@register_criterion("random")
class RandomCriterion(Criterion):
    """Uniform random scores (the control arm), reproducible from `seed` and the group key.

    Args:
        seed: Same seed, same group key, same width -> same scores; no hidden generator state.
        reduce: Accepted for a uniform interface; there is one tensor of scores per group.
    """

    def __init__(self, seed: int = 0, reduce: str = "mean") -> None:
        super().__init__(reduce)
        self.seed = int(seed)

    def per_tensor(self, tensors: ChannelTensors, batch: DataBatch | None) -> list[torch.Tensor]:
        # Mixing in the key decorrelates groups of equal width, which would otherwise share one ranking.
        gen = torch.Generator().manual_seed((self.seed * 1_000_003 + zlib.crc32(tensors.key.encode())) % 2**63)
        device = tensors.writers[0].device if tensors.writers else None
        return [torch.rand(tensors.num_channels, generator=gen).to(device)]

    def __repr__(self) -> str:
        return f"RandomCriterion(seed={self.seed})"
