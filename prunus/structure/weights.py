"""Per-channel views of a group's tensors, read and write.

Read: `group_weights` (what criteria score and what C-SGD clusters) and `channel_values` (every
slice of the group). Write: `assign_`, the twin of `channel_values`, puts per-channel values back
into every tensor of a group, which is how reactivation (Weight Evolution) and filter grafting
change chosen channels in place.

Example:
    >>> import torch
    >>> from torch import nn
    >>> from prunus.structure import build_groups
    >>> net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 4, 3), nn.Conv2d(4, 2, 1))
    >>> donor = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 4, 3), nn.Conv2d(4, 2, 1))
    >>> g = next(g for g in build_groups(net, torch.zeros(1, 1, 8, 8), ignored_layers=["4"]) if g.key == "0")
    >>> _ = assign_(net, g, channel_values(donor, g), channels=[2])  # graft channel 2 from the donor
    >>> torch.equal(net[0].weight[2], donor[0].weight[2]), torch.equal(net[3].weight[:, 2], donor[3].weight[:, 2])
    (True, True)
    >>> torch.equal(net[0].weight[1], donor[0].weight[1])
    False
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from prunus.structure.groups import ChannelGroup, Slice, StructureError
from prunus.structure.roles import Role

__all__ = ["ChannelTensors", "assign_", "channel_values", "group_weights", "per_channel"]


@dataclass(frozen=True)
class ChannelTensors:
    """Detached per-channel tensors of one group; row j of every tensor belongs to channel j.

    Attributes:
        key: The group's key.
        num_channels: C.
        writers: One (C, D) matrix per writer tensor: conv/linear output rows and the rows of
            depthwise convs the channels pass through, each row flattened.
        norms: One (C,) vector of BatchNorm gammas per BN in the group.
        consumers: One (C, D) matrix per consumer input slice (empty unless requested); for a
            Linear after flatten a channel's row holds its whole block of inputs.
        group: The group itself, for data-driven criteria that need its module names.
    """

    key: str
    num_channels: int
    writers: tuple[torch.Tensor, ...]
    norms: tuple[torch.Tensor, ...]
    consumers: tuple[torch.Tensor, ...] = ()
    group: ChannelGroup | None = field(default=None, repr=False, compare=False)


def per_channel(model: nn.Module, s: Slice, num_channels: int) -> torch.Tensor:
    """The positions of slice `s` in `model`, as a (C, D) matrix with channel j in row j.

    A channel owning several positions (a flatten block) gets them concatenated in index order;
    channels a slice does not reach (e.g. a writer that covers only one side of a concat) are zero.
    """
    t = s.get(model).detach()
    t = t.movedim(s.dim, 0).reshape(t.shape[s.dim], -1)
    n = len(s.index)
    # The common case (a conv's own rows, a BN vector): position j is channel j for every j. The
    # positions are unique and ascending, so equal tuples running 0..C-1 over C entries are the identity.
    if n == num_channels == t.shape[0] and s.index == s.channel and s.index[0] == 0 and s.index[-1] == n - 1:
        return t.clone()  # a new tensor, as the general path returns: callers may write into it
    channel, index = np.asarray(s.channel, dtype=np.int64), np.asarray(s.index, dtype=np.int64)
    counts = np.bincount(channel)
    present = np.flatnonzero(counts)
    per = int(counts[present].max())
    if (counts[present] != per).any():
        raise ValueError(f"slice {s.module}.{s.tensor}: channels own unequal numbers of positions")
    order = np.lexsort((index, channel))  # by channel, then by position
    rows = t[torch.from_numpy(index[order]).to(t.device)]
    out = t.new_zeros(num_channels, per * t.shape[1])
    out[torch.from_numpy(present).to(t.device)] = rows.reshape(len(present), -1)
    return out


def group_weights(model: nn.Module, group: ChannelGroup, *, consumers: bool = False) -> ChannelTensors:
    """Collect the per-channel tensors of `group` from `model` (detached; the model is untouched).

    Args:
        model: The model the group was built on, or a copy with the same shapes.
        group: A group from `build_groups`.
        consumers: Also return consumer input slices (grouped-conv inputs are left out).

    Example:
        >>> t = group_weights(model, group)  # doctest: +SKIP
        >>> scores = t.writers[0].norm(dim=1)  # doctest: +SKIP
    """
    n = group.num_channels
    writers, norms, cons = [], [], []
    for s in group.slices:
        if s.role.is_writer:
            writers.append(per_channel(model, s, n))
        elif s.role is Role.BN_WEIGHT:
            norms.append(per_channel(model, s, n)[:, 0])
        elif consumers and s.role is Role.IN:
            cons.append(per_channel(model, s, n))
    return ChannelTensors(group.key, n, tuple(writers), tuple(norms), tuple(cons), group)


def _slice_order(s: Slice, channels: list[int] | None) -> tuple[list[int], list[int]]:
    """(channels present in `s`, their positions along `s.dim` in per_channel's row order)."""
    wanted = None if channels is None else set(channels)
    order = sorted((c, i) for i, c in zip(s.index, s.channel, strict=True) if wanted is None or c in wanted)
    present = sorted({c for c, _ in order})
    return present, [i for _, i in order]


def channel_values(
    model: nn.Module, group: ChannelGroup, *, roles: Iterable[Role | str] | None = None
) -> dict[Slice, torch.Tensor]:
    """Every slice of `group` in `model` as a detached (C, D) copy, channel j in row j.

    The full-group read that `assign_` writes back: writers, biases, BN affine parameters and
    running statistics, depthwise rows and consumer inputs (grouped-conv inputs are left out: their
    columns are shared by several channels). `model` may be another network with the same group
    shapes (a peer in grafting): slices are looked up by name.

    Args:
        model: The model to read.
        group: A group from `build_groups` (on `model` or a model of the same architecture).
        roles: Only slices with these roles (default: all but `Role.IN_GROUPED`).
    """
    wanted = _roles(roles)
    n = group.num_channels
    return {s: per_channel(model, s, n).clone() for s in group.slices if s.role in wanted}


def _roles(roles: Iterable[Role | str] | None) -> frozenset[Role]:
    if roles is None:
        return frozenset(r for r in Role if r is not Role.IN_GROUPED)
    out = frozenset(Role(r) for r in roles)
    if Role.IN_GROUPED in out:
        raise StructureError("grouped-conv inputs are shared by several channels and cannot be assigned per channel")
    return out


@torch.no_grad()
def assign_(
    model: nn.Module,
    group: ChannelGroup,
    values: Mapping[Slice, torch.Tensor],
    *,
    channels: Iterable[int] | None = None,
) -> nn.Module:
    """Write per-channel `values` into the tensors of `group` in `model`; returns `model`.

    The twin of `channel_values`: row j of each (C, D) value goes to channel j's positions of its
    slice (a Linear after flatten gets the row back as its block of inputs). Slices missing from
    `values` are left as they are, so `roles=` on the read side chooses what is written.

    Args:
        model: The model `group` was built on, or one with the same group shapes.
        group: A group from `build_groups`.
        values: Slice -> (C, D) tensor, as returned by `channel_values` (or computed from it).
        channels: Only these channels are written (default: all).

    Raises:
        StructureError: a value has the wrong shape or belongs to a slice not in `group`, or a
            channel index is out of range.

    Example:
        >>> vals = channel_values(model, group)  # doctest: +SKIP
        >>> vals = {s: v * 0.5 for s, v in vals.items()}  # doctest: +SKIP
        >>> assign_(model, group, vals, channels=[0, 3])  # doctest: +SKIP
    """
    n = group.num_channels
    chans = None if channels is None else sorted({int(c) for c in channels})
    if chans and (chans[0] < 0 or chans[-1] >= n):
        raise StructureError(f"group {group.key!r}: channel indices must lie in [0, {n}), got {chans}")
    current = set(group.slices)
    for s, value in values.items():
        if s not in current:
            raise StructureError(f"group {group.key!r} has no slice {s.module}.{s.tensor} ({s.role}); read values anew")
        if s.role is Role.IN_GROUPED:
            raise StructureError(
                "grouped-conv inputs are shared by several channels and cannot be assigned per channel"
            )
        t = s.get(model)
        moved = t.detach().movedim(s.dim, 0)  # a view: writing into it writes the parameter
        rest = moved.shape[1:]
        present, positions = _slice_order(s, chans)
        if not positions:
            continue
        per = len(positions) // len(present)
        expected = (n, per * rest.numel())
        if tuple(value.shape) != expected:
            shape = tuple(value.shape)
            raise StructureError(
                f"group {group.key!r}: value for {s.module}.{s.tensor} has shape {shape}, expected {expected}"
            )
        rows = value.detach()[torch.tensor(present, dtype=torch.long, device=value.device)]
        rows = rows.reshape(len(positions), *rest).to(device=t.device, dtype=t.dtype)
        moved[torch.tensor(positions, dtype=torch.long, device=t.device)] = rows
    return model
