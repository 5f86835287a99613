"""Exact merging of identical channels (the C-SGD trim step).

When all members of a cluster compute the same activation, a consumer's output only depends on the
sum of its input slices over the cluster. So the first member survives, every consumer's input
slice of the survivor becomes that sum, and the other members are removed: the network computes
the same function with fewer channels.

Example:
    >>> merge_(model, group, [[0, 3], [1, 2]])  # 4 channels -> 2  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch import nn

from prunus.structure.groups import ChannelGroup, StructureError, check_channels
from prunus.structure.removal import _same_model, cut_
from prunus.structure.roles import Role

__all__ = ["merge_"]


def _clusters(group: ChannelGroup, clusters: Iterable[Sequence[int]]) -> list[list[int]]:
    out = [[int(i) for i in c] for c in clusters]
    if any(not c for c in out):
        raise StructureError(f"group {group.key!r}: clusters must not be empty")
    flat = [i for c in out for i in c]
    if len(set(flat)) != len(flat):
        raise StructureError(f"group {group.key!r}: a channel belongs to more than one cluster")
    if any(not 0 <= i < group.num_channels for i in flat):
        raise StructureError(f"group {group.key!r}: cluster indices must lie in [0, {group.num_channels})")
    return out


def merge_(model: nn.Module, group: ChannelGroup, clusters: Iterable[Sequence[int]]) -> nn.Module:
    """Merge each cluster of channels into its first member; returns `model`.

    For every consumer input slice the other members' slices are added into the survivor's (for a
    Linear after flatten, block by block); then the other members are removed as by `remove_` and
    the history records a "merge" entry. Channels in no cluster are kept as they are. Exact when
    the members are identical (writer rows, biases, BN entries and running stats, depthwise rows);
    otherwise the survivor stands in for its cluster, which is what C-SGD's convergence ensures.

    Args:
        model: The model `group` was built on.
        group: A prunable group.
        clusters: Disjoint lists of channel indices; singletons are allowed.

    Raises:
        StructureError: the group is not prunable, feeds a grouped conv, or the clusters are
            invalid (empty, overlapping or out of range).

    Example:
        >>> merge_(model, group, [[0, 2], [1, 3]])  # doctest: +SKIP
    """
    _same_model(model, group)
    cl = _clusters(group, clusters)
    removed = check_channels(group, [i for c in cl for i in c[1:]], removing=True)
    if not removed:
        return model
    if any(s.role is Role.IN_GROUPED for s in group.slices):
        raise StructureError(f"group {group.key!r} feeds a grouped conv; merging it is not supported")
    with torch.no_grad():
        for s in group.slices:
            if s.role is not Role.IN:
                continue
            w = s.get(model)
            for c in cl:
                keep = torch.tensor(s.positions([c[0]]), dtype=torch.long, device=w.device)
                for other in c[1:]:
                    pos = torch.tensor(s.positions([other]), dtype=torch.long, device=w.device)
                    if pos.numel() != keep.numel():
                        raise StructureError(
                            f"group {group.key!r}: channels {c[0]} and {other} reach {s.module!r} unequally"
                        )
                    # positions come in index order, so block k of `other` adds into block k of the survivor
                    w.index_add_(s.dim, keep, w.index_select(s.dim, pos))
    cut_(model, group, removed, {"op": "merge", "clusters": [list(c) for c in cl]})
    return model
