"""Coupled channel groups: which tensor slices must be kept or removed together.

A `ChannelGroup` is one set of channels that only exist together: a conv's output rows, its bias,
the BN entries after it, every depthwise conv the channels pass through, and the input slices of
every consumer (a Linear after flatten owns a block of inputs per channel). All writers of a
residual stream share one group, and so do the writers of a dual-path stream's slices or of the
branches a selective-kernel block sums. Each physical coupling appears in exactly one group.
Where channels go in units (a grouped conv, a GroupNorm, an equal split), `blocks` > 1; where a
split or slice hands pieces to different branches, each piece keeps a channel.

Groups are live views: their slices follow every structural edit, so a group stays valid after
`remove_` of itself or of another group.

Example:
    >>> import torch
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 4, 3))
    >>> groups = build_groups(net, torch.randn(1, 3, 8, 8), ignored_layers=["0"])
    >>> [(g.key, g.num_channels, g.prunable) for g in groups]
    [('0', 8, False), ('3', 4, False)]
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from prunus.errors import StructureWarning
from prunus.measure.counting import Counts, counts_from
from prunus.structure._gc import paused_gc
from prunus.structure._graph import FilterFn, Graph, StructureError, build_graph
from prunus.structure._verify import verify_groups
from prunus.structure.history import history_length
from prunus.structure.roles import ROLES, Role

__all__ = [
    "ROLES",
    "ChannelGroup",
    "Role",
    "Slice",
    "StructureError",
    "build_groups",
    "check_channels",
    "lowest_channels",
    "removal_order",
    "traced_counts",
]


@dataclass(frozen=True)
class Slice:
    """The positions of one tensor that belong to a group.

    Attributes:
        module: Dotted name of the module owning the tensor.
        tensor: Attribute name: "weight", "bias", "running_mean" or "running_var".
        role: A `Role` (a str enum: compares equal to its value, e.g. "bn_weight").
        dim: The tensor dimension the positions index.
        index: Positions along `dim`, ascending.
        channel: The group channel each position belongs to (same length as `index`).
    """

    module: str
    tensor: str
    role: Role
    dim: int
    index: tuple[int, ...]
    channel: tuple[int, ...]

    def positions(self, channels: Iterable[int]) -> list[int]:
        """Positions along `dim` that belong to any of `channels`, in ascending order."""
        wanted = set(channels)
        return [i for i, c in zip(self.index, self.channel, strict=True) if c in wanted]

    def get(self, model: nn.Module) -> torch.Tensor:
        """The tensor this slice lives in, looked up by name in `model` (which may be a copy)."""
        return getattr(model.get_submodule(self.module), self.tensor)


@dataclass(eq=False)
class ChannelGroup:
    """One coupled set of channels (see module docstring); build with `build_groups`.

    Attributes:
        key: Dotted name of the group's first writer (conv or linear) in module order; stable
            across edits, used in the pruning history.
        prunable: Whether channels of this group may be masked, removed or merged.
        reason: Why not, when `prunable` is False.
        blocks: Channels go in units of this many (1 unless a grouped conv, a GroupNorm or an
            equal split takes part): a grouped conv's blocks lose the same offsets, a GroupNorm
            group goes whole; see `units` and `lowest_channels`.
    """

    key: str
    prunable: bool
    reason: str | None
    blocks: int
    _graph: Graph = field(repr=False)
    _cache: tuple[int, tuple[Slice, ...] | None, tuple[tuple[int, ...], ...], tuple[tuple[int, ...], ...]] | None = (
        field(default=None, repr=False)
    )

    @property
    def root(self) -> nn.Module:
        return self._graph.model.get_submodule(self.key)

    def _refresh(self) -> tuple[tuple[Slice, ...], tuple[tuple[int, ...], ...], tuple[tuple[int, ...], ...]]:
        graph = self._graph
        if history_length(graph.model) != graph.version:
            raise StructureError(
                f"group {self.key!r}: the model was edited outside the groups built on it; call build_groups again"
            )
        if self._cache is None or self._cache[0] != graph.version:
            units = tuple(tuple(u) for u in graph.units(self.key))
            segments = tuple(tuple(s) for s in graph.segments(self.key))
            self._cache = (graph.version, None, units, segments)
        if self._cache[1] is None:  # slices are asked less often than units: built on demand
            slices = tuple(Slice(*s) for s in graph.slices(self.key))
            self._cache = (self._cache[0], slices, self._cache[2], self._cache[3])
        return self._cache[1], self._cache[2], self._cache[3]

    @property
    def num_channels(self) -> int:
        """Current number of channels."""
        return self._graph.num_channels(self.key)

    @property
    def slices(self) -> tuple[Slice, ...]:
        """Current member slices (kept up to date by every structural edit of the model)."""
        return self._refresh()[0]

    @property
    def units(self) -> tuple[tuple[int, ...], ...]:
        """Channels that go together, each a tuple of `blocks` channel indices, ordered by their first."""
        return self._units()[0]

    @property
    def segments(self) -> tuple[tuple[int, ...], ...]:
        """Indices into `units` of each piece of a split or slice; every piece keeps at least one unit."""
        return self._units()[1]

    def _units(self) -> tuple[tuple[tuple[int, ...], ...], tuple[tuple[int, ...], ...]]:
        graph = self._graph
        if self._cache is None or self._cache[0] != graph.version:
            self._cache = (
                graph.version,
                None,
                tuple(tuple(u) for u in graph.units(self.key)),
                tuple(tuple(s) for s in graph.segments(self.key)),
            )
        return self._cache[2], self._cache[3]

    @property
    def residual(self) -> bool:
        """Whether an element-wise add sums these channels with another same-shaped tensor: a residual stream.

        A stream's width is shared by every block that adds into it (ResNet's stage outputs,
        MobileNetV2's narrow bottlenecks); a broadcast bias or an SE gate does not make one.
        """
        return self._graph.groups[self.key].residual

    @property
    def min_channels(self) -> int:
        """The fewest channels any cut may leave: one unit, or one per split piece (never zero)."""
        return min(self.num_channels, self.blocks * max(1, len(self.segments)))

    def __repr__(self) -> str:
        state = "prunable" if self.prunable else f"fixed: {self.reason}"
        return f"ChannelGroup({self.key!r}, {self.num_channels} channels, {state})"

    def modules(self, *roles: Role | str) -> list[str]:
        """Names of member modules having any of `roles` (all roles if none given), in order."""
        seen: dict[str, None] = {}
        for s in self.slices:
            if not roles or s.role in roles:
                seen.setdefault(s.module, None)
        return list(seen)


def build_groups(
    model: nn.Module,
    example_inputs: Any,
    ignored_layers: Iterable[str | nn.Module] | None = None,
    *,
    filter_fn: FilterFn | None = None,
    verify: bool = True,
) -> list[ChannelGroup]:
    """Trace `model` and return its coupled channel groups, in module order.

    Args:
        model: The network; its train/eval mode is left as it was.
        example_inputs: What the model is called with (batch size 1 is enough): a tensor of any
            rank (Conv1d/2d/3d), a tuple of tensors (several inputs) or a dict of keyword tensors.
        ignored_layers: Module names (or modules) whose output channels are never cut: shorthand
            for a `filter_fn` rejecting exactly those names. Their input slices still follow the
            group that feeds them. An ignored user module with parameters keeps every channel it touches.
        filter_fn: `filter_fn(module, name) -> bool`, asked for every module owning parameters;
            False keeps the module's output channels. Combined with `ignored_layers` when both are
            given. Default (neither given): `default_filter(model)`, i.e. everything but the stem
            and classifier declared in the model's `ModelInfo` (else the first conv and the last
            Linear).
        verify: Cut a few channels of every prunable group that passes an op addressing channels
            by size or position (or a user layer) and check that the model computes what it computes
            with those channels masked (`prunus.structure._verify`; the model is restored); a group
            that fails is left whole. On by default.

    Returns:
        One `ChannelGroup` per set of coupled writers (convs, linears); groups touching an ignored
        writer or a model output, or that cannot be cut exactly, are included with
        `prunable=False`. Each group left whole for a structural reason (not an ignored layer or a
        model output) is announced by one `prunus.errors.StructureWarning` naming the module and why.

    Raises:
        StructureError: the model does not run on `example_inputs`, or an ignored layer name does not exist.

    Example:
        >>> groups = build_groups(model, torch.randn(1, 3, 32, 32))  # doctest: +SKIP
        >>> [g.key for g in groups if g.prunable][:2]  # doctest: +SKIP
        ['layer1.0.conv1', 'layer1.1.conv1']
    """
    with paused_gc():
        graph = build_graph(model, example_inputs, ignored_layers, filter_fn=filter_fn)
        graph.version = graph.built_version = history_length(model)
        groups = []
        for key, state in graph.groups.items():
            groups.append(ChannelGroup(key, state.reason is None, state.reason, state.blocks, graph))
            if state.warn:
                _warn(key, state.reason)
        if verify:
            for group, why in verify_groups(graph, [g for g in groups if g.prunable and graph.groups[g.key].risky]):
                group.prunable, group.reason = False, why
                graph.groups[group.key].reason = why
                _warn(group.key, why)
    return groups


def traced_counts(model: nn.Module, groups: Iterable[ChannelGroup]) -> Counts | None:
    """`prunus.count(model, example_inputs=...)` as the trace behind `groups` measured it, or None.

    The trace runs the model once on the example inputs, as `count` does; where those held one
    sample and the model is still as traced (no cut since), the MACs it recorded are `count`'s, so a
    prune skips a second forward pass. None: no group, a batch of several samples, a cut model, or a
    layer that returned no tensor; call `count` then.

    Example:
        >>> groups = build_groups(model, torch.randn(1, 3, 32, 32))  # doctest: +SKIP
        >>> traced_counts(model, groups) == prunus.count(model, (3, 32, 32))  # doctest: +SKIP
        True
    """
    graph = next((g._graph for g in groups), None)
    if graph is None or graph.model is not model or graph.traced_macs is None:
        return None
    if graph.version != graph.built_version or history_length(model) != graph.version:
        return None
    return counts_from(model, graph.traced_macs)


def _warn(key: str, reason: str | None) -> None:
    warnings.warn(StructureWarning(f"group {key!r} is left unpruned: {reason}"), stacklevel=3)


def _check_units(group: ChannelGroup, chosen: set[int]) -> None:
    for unit in group.units:
        inside = sum(1 for c in unit if c in chosen)
        if 0 < inside < len(unit):
            raise StructureError(
                f"group {group.key!r} goes in whole units of {group.blocks} channels (a grouped conv's blocks lose "
                f"the same offsets, a GroupNorm group, an equal split piece or the channels a pixel_shuffle moves "
                f"into one go whole); {sorted(chosen)} splits "
                f"unit {list(unit)} (use lowest_channels)"
            )


def check_channels(group: ChannelGroup, idxs: Iterable[int], *, removing: bool) -> list[int]:
    """Validate channel indices for a mask (`removing=False`) or a cut; returns them sorted.

    Raises:
        StructureError: the group is not prunable, an index is out of range or repeated, the
            indices split a unit (a grouped conv's offsets, a GroupNorm group), or (`removing`)
            they are all channels or all of one piece of a split the model needs.
    """
    if not group.prunable:
        raise StructureError(f"group {group.key!r} cannot be pruned: {group.reason}")
    out = sorted(int(i) for i in idxs)
    n = group.num_channels
    if len(set(out)) != len(out):
        raise StructureError(f"group {group.key!r}: channel indices repeat: {out}")
    if out and (out[0] < 0 or out[-1] >= n):
        raise StructureError(f"group {group.key!r}: channel indices must lie in [0, {n}), got {out}")
    if removing and len(out) >= n:
        raise StructureError(
            f"group {group.key!r}: cannot remove all {n} channels; a group must keep at least one channel"
        )
    if out and group.blocks > 1:
        _check_units(group, set(out))
    if removing and out and group.segments:
        chosen = set(out)
        for seg in group.segments:
            if all(all(c in chosen for c in group.units[u]) for u in seg):
                kept = sorted(c for u in seg for c in group.units[u])
                raise StructureError(
                    f"group {group.key!r}: removing channels {kept} would empty a piece of a split or slice the "
                    "model needs; a piece keeps at least one channel"
                )
    return out


def removal_order(group: ChannelGroup, scores: torch.Tensor) -> list[int]:
    """Every channel of `group`, in the order a pruner takes them: lowest-scored unit first.

    A unit is scored by the mean of its channels' scores (ties: the lower first channel). The
    best-ranked unit of each split piece goes last, so any prefix of at most
    `num_channels - min_channels` channels is a valid cut. `lowest_channels(group, scores, k)` is
    the first k (rounded down to whole units) of this order.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.GroupNorm(2, 4), nn.Conv2d(4, 2, 1))
        >>> g = build_groups(net, torch.zeros(1, 3, 6, 6), ignored_layers=["2"])[0]
        >>> g.units, removal_order(g, torch.tensor([5.0, 4.0, 1.0, 2.0]))  # GroupNorm groups go whole
        (((0, 1), (2, 3)), [2, 3, 0, 1])
    """
    n = group.num_channels
    if scores.shape != (n,):
        raise StructureError(f"group {group.key!r}: expected {n} scores, got shape {tuple(scores.shape)}")
    values = scores.detach().double().cpu()
    units = group.units
    if len({len(u) for u in units}) == 1:  # equal units (always, for a prunable group): one gather, not one per unit
        per = values[torch.tensor(units, dtype=torch.long)].mean(1).numpy()
    else:
        per = np.asarray([float(values[list(u)].mean()) for u in units])
    # by score, ties to the lower first channel (lexsort: the last key is the primary one)
    order = np.lexsort((np.fromiter((u[0] for u in units), dtype=np.int64, count=len(units)), per)).tolist()
    if group.segments:
        rank = {u: r for r, u in enumerate(order)}
        keepers = {max(seg, key=rank.__getitem__) for seg in group.segments}
        order = [u for u in order if u not in keepers] + [u for u in order if u in keepers]
    return [c for u in order for c in units[u]]


def lowest_channels(group: ChannelGroup, scores: torch.Tensor, count: int) -> list[int]:
    """The `count` lowest-scored channels of `group`, as a valid set for masking or removal.

    Channels go in whole units (`group.units`: a grouped conv's offsets, scored by their mean over
    the blocks; GroupNorm groups), so `count` is rounded down to a multiple of `group.blocks`, and
    at most `num_channels - min_channels` are returned. Ties go to the lower index, so the choice
    is deterministic.

    Example:
        >>> lowest_channels(group, torch.tensor([3.0, 1.0, 2.0, 0.5]), 2)  # doctest: +SKIP
        [1, 3]
    """
    order = removal_order(group, scores)
    if count <= 0:
        return []
    k = min(count, group.num_channels - group.min_channels) // group.blocks * group.blocks
    return sorted(order[:k])
