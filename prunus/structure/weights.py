"""Per-channel views of a group's tensors: what criteria score and what C-SGD clusters.

Example:
    >>> t = group_weights(model, group)  # doctest: +SKIP
    >>> [w.shape for w in t.writers]  # one (C, D) matrix per writer  # doctest: +SKIP
    [torch.Size([16, 144])]
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from prunus.structure.groups import ChannelGroup, Slice

__all__ = ["ChannelTensors", "group_weights", "per_channel"]

WRITER_ROLES = ("out", "dw")


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
    counts: dict[int, int] = {}
    for c in s.channel:
        counts[c] = counts.get(c, 0) + 1
    per = max(counts.values())
    if any(v != per for v in counts.values()):
        raise ValueError(f"slice {s.module}.{s.tensor}: channels own unequal numbers of positions")
    order = sorted(range(len(s.index)), key=lambda k: (s.channel[k], s.index[k]))
    rows = t[torch.tensor([s.index[k] for k in order], dtype=torch.long, device=t.device)]
    present = sorted(counts)
    out = t.new_zeros(num_channels, per * t.shape[1])
    out[torch.tensor(present, dtype=torch.long, device=t.device)] = rows.reshape(len(present), -1)
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
        if s.role in WRITER_ROLES:
            writers.append(per_channel(model, s, n))
        elif s.role == "bn_weight":
            norms.append(per_channel(model, s, n)[:, 0])
        elif consumers and s.role == "in":
            cons.append(per_channel(model, s, n))
    return ChannelTensors(group.key, n, tuple(writers), tuple(norms), tuple(cons), group)
