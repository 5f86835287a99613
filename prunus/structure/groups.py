"""Coupled channel groups: which tensor slices must be kept or removed together.

A `ChannelGroup` is one set of channels that only exist together: a conv's output rows, its bias,
the BN entries after it, every depthwise conv the channels pass through, and the input slices of
every consumer (a Linear after flatten owns a block of inputs per channel). All writers of a
residual stream share one group. Each physical coupling appears in exactly one group.

Groups are live views: their slices are re-derived after every structural edit, so a group stays
valid after `remove_` of itself or of another group.

Example:
    >>> import torch
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 4, 3))
    >>> groups = build_groups(net, torch.randn(1, 3, 8, 8), ignored_layers=["0"])
    >>> [(g.key, g.num_channels, g.prunable) for g in groups]
    [('0', 8, False), ('3', 4, False)]
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from prunus.structure._graph import FilterFn, Graph, Position, StructureError, build_graph, channel_dim
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


def _is_depthwise(m: nn.Module) -> bool:
    return isinstance(m, nn.modules.conv._ConvNd) and m.groups > 1 and m.groups == m.in_channels == m.out_channels


def _slices_of(pos: Position) -> tuple[list[Slice], str | None, int]:
    """Slices of one group item, a reason the group cannot be cut (or None), and its block count."""
    m, name = pos.module, pos.name
    if pos.kind == "output":
        return [], "its channels are a model output", 1
    if pos.kind == "parameter":
        owner, _, attr = name.rpartition(".")
        dim = channel_dim(m) if name else None
        if dim is None:
            return [], f"it reaches parameter {name!r}, which the engine cannot prune", 1
        return [Slice(owner, attr, Role.PARAM, dim, pos.index, pos.channel)], None, 1
    if pos.kind == "other":
        return [], None, 1

    def mk(tensor: str, role: Role, dim: int) -> Slice:
        return Slice(name, tensor, role, dim, pos.index, pos.channel)

    if isinstance(m, nn.modules.conv._ConvNd):
        if m.transposed:
            return [], f"transposed conv {name!r} is not supported", 1
        if _is_depthwise(m):
            out = [mk("weight", Role.DW, 0)] + ([mk("bias", Role.DW_BIAS, 0)] if m.bias is not None else [])
            return out, None, 1
        if m.groups > 1:
            # Torch-Pruning cuts a grouped conv's inputs correctly only when every conv group loses
            # the same offsets; and one channel per group couples inputs to outputs, which it ignores.
            if m.in_channels == m.groups or m.out_channels == m.groups:
                return [], f"grouped conv {name!r} has one channel per group", 1
            width = m.out_channels if pos.is_out else m.in_channels
            if pos.index != tuple(range(width)) or pos.channel != pos.index:
                return [], f"grouped conv {name!r} spans several groups", 1
            if pos.is_out:
                out = [mk("weight", Role.OUT, 0)] + ([mk("bias", Role.BIAS, 0)] if m.bias is not None else [])
                return out, None, m.groups
            return [mk("weight", Role.IN_GROUPED, 1)], None, m.groups
        if pos.is_out:
            return [mk("weight", Role.OUT, 0)] + ([mk("bias", Role.BIAS, 0)] if m.bias is not None else []), None, 1
        return [mk("weight", Role.IN, 1)], None, 1
    if isinstance(m, nn.Linear):
        if pos.is_out:
            return [mk("weight", Role.OUT, 0)] + ([mk("bias", Role.BIAS, 0)] if m.bias is not None else []), None, 1
        return [mk("weight", Role.IN, 1)], None, 1
    if isinstance(m, nn.modules.batchnorm._BatchNorm):
        out = []
        if m.affine:
            out += [mk("weight", Role.BN_WEIGHT, 0), mk("bias", Role.BN_BIAS, 0)]
        if m.track_running_stats and m.running_mean is not None:
            out += [mk("running_mean", Role.BN_MEAN, 0), mk("running_var", Role.BN_VAR, 0)]
        return out, None, 1
    if isinstance(m, nn.PReLU):
        return ([mk("weight", Role.PRELU, 0)] if m.num_parameters > 1 else []), None, 1
    return [], f"{type(m).__name__} {name!r} is not supported", 1


def _analyse(graph: Graph, root: nn.Module) -> tuple[list[Slice], str | None, int, list[nn.Module]]:
    """Slices, the first reason the group can't be cut, its block count and its writer modules."""
    slices, reasons, blocks, writers = [], [], 1, []
    for pos in graph.positions(root):
        new, reason, b = _slices_of(pos)
        slices += new
        if reason:
            reasons.append(reason)
        blocks = math.lcm(blocks, b)
        if pos.kind != "module" or not (pos.is_out and isinstance(pos.module, (nn.modules.conv._ConvNd, nn.Linear))):
            continue
        writers.append(pos.module)
        if pos.name in graph.ignored:
            reasons.append(f"it is written by ignored layer {pos.name!r}")
        elif any(pos.name == o or pos.name.startswith(o + ".") for o in graph.opaque):
            reasons.append(f"it is written inside ignored module {pos.name!r}")
        elif pos.is_sink:
            reasons.append(f"it is the output of {pos.name!r}, a model output")
    return slices, (reasons[0] if reasons else None), blocks, writers


@dataclass(eq=False)
class ChannelGroup:
    """One coupled set of channels (see module docstring); build with `build_groups`.

    Attributes:
        key: Dotted name of the root module whose output channels define the group; stable across
            edits, used in the pruning history.
        prunable: Whether channels of this group may be masked, removed or merged.
        reason: Why not, when `prunable` is False.
        blocks: Channels form this many equal consecutive blocks that must lose the same offsets
            (1 unless a grouped conv takes part); see `lowest_channels`.
    """

    key: str
    prunable: bool
    reason: str | None
    blocks: int
    _graph: Graph = field(repr=False)
    _cache: tuple[int, int, tuple[Slice, ...]] | None = field(default=None, repr=False)

    @property
    def root(self) -> nn.Module:
        return self._graph.model.get_submodule(self.key)

    def _refresh(self) -> tuple[int, tuple[Slice, ...]]:
        version = history_length(self._graph.model)
        if self._cache is None or self._cache[0] != version:
            slices, _, _, _ = _analyse(self._graph, self.root)
            self._cache = (version, self._graph.out_channels(self.root), tuple(slices))
        return self._cache[1], self._cache[2]

    @property
    def num_channels(self) -> int:
        """Current number of channels (read off the root; no re-analysis of the slices)."""
        # Cutting one group re-derives every other group's slices lazily; the width alone is
        # asked far more often (every check and cut) and needs no re-trace of the coupling.
        return self._graph.out_channels(self.root)

    @property
    def slices(self) -> tuple[Slice, ...]:
        """Current member slices (recomputed after each structural edit of the model)."""
        return self._refresh()[1]

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
) -> list[ChannelGroup]:
    """Trace `model` and return its coupled channel groups, in module order.

    Args:
        model: The network; its train/eval mode is left as it was.
        example_inputs: A batch (or tuple of positional inputs) the model accepts; batch size 1 is enough.
        ignored_layers: Module names (or modules) whose output channels are never cut: shorthand
            for a `filter_fn` rejecting exactly those names. Their input slices still follow the
            group that feeds them.
        filter_fn: `filter_fn(module, name) -> bool`, asked for every module owning parameters;
            False keeps the module's output channels. Combined with `ignored_layers` when both are
            given. Default (neither given): `default_filter(model)`, i.e. everything but the stem
            and classifier declared in the model's `ModelInfo` (else the first Conv2d and the last
            Linear).

    Returns:
        One `ChannelGroup` per coupling rooted at a conv or linear module; groups touching an ignored
        writer, the model output or an unsupported op are included with `prunable=False`.

    Raises:
        StructureError: a module has parameters of a type the engine cannot prune and is not in
            `ignored_layers`, or an ignored layer name does not exist.

    Example:
        >>> groups = build_groups(model, torch.randn(1, 3, 32, 32))  # doctest: +SKIP
        >>> [g.key for g in groups if g.prunable][:2]  # doctest: +SKIP
        ['layer1.0.conv1', 'layer1.1.conv1']
    """
    graph = build_graph(model, example_inputs, ignored_layers, filter_fn=filter_fn)
    groups, visited = [], set()
    for name, module in model.named_modules():
        if not isinstance(module, (nn.modules.conv._ConvNd, nn.Linear)) or not graph.has(module):
            continue
        if module in visited:
            continue
        slices, reason, blocks, writers = _analyse(graph, module)
        visited.update(writers)
        width = graph.out_channels(module)
        if not reason and width % blocks:
            reason = f"its {width} channels do not split into {blocks} equal blocks"
        group = ChannelGroup(name, reason is None, reason, blocks, graph)
        group._cache = (history_length(model), width, tuple(slices))
        groups.append(group)
    _check_coverage(model, groups)
    return groups


def _check_coverage(model: nn.Module, groups: list[ChannelGroup]) -> None:
    """Freeze groups whose slices do not tile their tensors exactly once.

    Every cut dimension must be covered by the groups exactly once. When Torch-Pruning passes a
    coupling through an op it cannot map (a zero-padding shortcut that adds channels, an opaque
    reshuffle), some positions end up in no group or in two; cutting there would break shapes or
    change the function, so the groups involved are marked not prunable instead.
    """
    seen: dict[tuple[str, str, int], list[int]] = {}
    for g in groups:
        for s in g.slices:
            seen.setdefault((s.module, s.tensor, s.dim), []).extend(s.index)
    bad = {}
    for (module, tensor, dim), pos in seen.items():
        m = model.get_submodule(module)
        grouped_in = isinstance(m, nn.modules.conv._ConvNd) and m.groups > 1 and dim == 1
        size = m.in_channels if grouped_in else getattr(m, tensor).shape[dim]
        if sorted(pos) != list(range(size)):
            bad[(module, tensor, dim)] = module
    for g in groups:
        hit = next((bad[k] for k in ((s.module, s.tensor, s.dim) for s in g.slices) if k in bad), None)
        if hit is not None and g.prunable:
            g.prunable = False
            g.reason = f"the channel mapping into {hit!r} could not be traced exactly (e.g. a channel-padding shortcut)"


def check_channels(group: ChannelGroup, idxs: Iterable[int], *, removing: bool) -> list[int]:
    """Validate channel indices for a mask (`removing=False`) or a cut; returns them sorted.

    Raises:
        StructureError: the group is not prunable, an index is out of range or repeated, the
            indices break a grouped conv's block symmetry, or (`removing`) they are all channels.
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
    if group.blocks > 1 and out:
        size = n // group.blocks
        offsets = [{i - b * size for i in out if b * size <= i < (b + 1) * size} for b in range(group.blocks)]
        if any(o != offsets[0] for o in offsets):
            raise StructureError(
                f"group {group.key!r} feeds a grouped conv: each of its {group.blocks} blocks of {size} channels "
                "must lose the same offsets (use lowest_channels)"
            )
    return out


def lowest_channels(group: ChannelGroup, scores: torch.Tensor, count: int) -> list[int]:
    """The `count` lowest-scored channels of `group`, as a valid set for masking or removal.

    With grouped convs in the group (`blocks > 1`) the scores are averaged over blocks and whole
    offsets are chosen, so `count` is rounded down to a multiple of `blocks`. Ties go to the lower
    index, so the choice is deterministic.

    Example:
        >>> lowest_channels(group, torch.tensor([3.0, 1.0, 2.0, 0.5]), 2)  # doctest: +SKIP
        [1, 3]
    """
    n = group.num_channels
    if scores.shape != (n,):
        raise StructureError(f"group {group.key!r}: expected {n} scores, got shape {tuple(scores.shape)}")
    if count <= 0:
        return []
    per_block = scores.detach().float().cpu().reshape(group.blocks, n // group.blocks).mean(0)
    k = count // group.blocks
    order = sorted(range(per_block.numel()), key=lambda i: (float(per_block[i]), i))[:k]
    size = n // group.blocks
    return sorted(b * size + o for b in range(group.blocks) for o in order)
