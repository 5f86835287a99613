"""One-shot structured pruning: score every coupled group once, cut to a channel or MACs target.

Two ways to state the target, exactly one per call:

- `ratio`: the fraction of channels REMOVED from every prunable group (uniform), floor(N * ratio)
  per group; with `global_pruning` the fraction of all prunable channels removed, ranked across
  groups by normalised scores.
- `macs_ratio`: the fraction of the dense MACs KEPT (0.5 = half the MACs, a 2x MACs reduction).
  Uniform: the smallest per-group rate whose pruned model keeps at most that fraction, found by
  bisection over the rates where some group's channel count changes. Global: the fewest
  lowest-ranked channels, across groups, whose removal reaches it. Achieved <= requested.

Scores are taken once on the dense model; MACs during the search come from an exact per-layer
model of the cut (checked against a real count afterwards). A group never loses all channels.

Example:
    >>> import torch, prunus
    >>> model = prunus.create_model("resnet20", in_channels=1)
    >>> model, report = prune(model, torch.randn(1, 1, 28, 28), macs_ratio=0.5, criterion="l1")
    >>> report.achieved_macs_ratio <= 0.5
    True
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from prunus.config import check_range
from prunus.criteria import Criterion, DataBatch, create_criterion, list_criteria, score
from prunus.errors import ConfigError
from prunus.measure import Counts, count
from prunus.structure import ChannelGroup, FilterFn, build_groups, lowest_channels, remove_

__all__ = ["PruneReport", "num_to_prune", "prune"]

# floor(N * rate) with a little slack, so 0.3 * 10 (= 2.9999999999999996) counts as 3
_EPS = 1e-9


def num_to_prune(num_channels: int, rate: float) -> int:
    """floor(N * rate), never all N channels (shared with the SFP-family methods).

    Example:
        >>> num_to_prune(10, 0.4), num_to_prune(10, 0.3), num_to_prune(1, 0.9)
        (4, 3, 0)
    """
    return min(math.floor(num_channels * rate + _EPS), num_channels - 1)


@dataclass(frozen=True)
class PruneReport:
    """What `prune` asked for and what it achieved.

    Attributes:
        criterion: Criterion name.
        global_pruning: Channels ranked across groups (True) or a uniform rate per group.
        requested_ratio: Requested fraction of channels removed, or None.
        requested_macs_ratio: Requested fraction of MACs kept, or None.
        rate: The uniform per-group rate used (None with global pruning).
        achieved_ratio: Fraction of the prunable groups' channels removed.
        achieved_macs_ratio: pruned MACs / dense MACs (kept fraction).
        achieved_params_ratio: pruned params / dense params (kept fraction).
        dense_macs, pruned_macs, dense_params, pruned_params: As `prunus.count` counts them.
        widths: Group key -> [channels before, channels after], for every prunable group.
    """

    criterion: str
    global_pruning: bool
    requested_ratio: float | None
    requested_macs_ratio: float | None
    rate: float | None
    achieved_ratio: float
    achieved_macs_ratio: float
    achieved_params_ratio: float
    dense_macs: int
    pruned_macs: int
    dense_params: int
    pruned_params: int
    widths: dict[str, list[int]]

    @property
    def macs_speedup(self) -> float:
        """dense MACs / pruned MACs."""
        return self.dense_macs / max(self.pruned_macs, 1)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict of every field."""
        return asdict(self)


class _MacsModel:
    """Exact MACs of the model after removing given channels, without cutting anything.

    prunus.count charges a Conv2d out_elements * (in_channels / groups) * k * k and a Linear
    out * in; removing channels only rescales out_channels and in_channels (spatial sizes stay),
    so each layer's MACs scale by (out kept / out) * (in kept / in). A depthwise conv's
    in_channels / groups stays 1: it scales with its out channels only.
    """

    def __init__(self, model: nn.Module, groups: Sequence[ChannelGroup], dense: Counts) -> None:
        self.dense = dense
        self.shapes: dict[str, tuple[int, int, bool]] = {}
        for name in dense.layers:
            m = model.get_submodule(name)
            if isinstance(m, nn.Conv2d):
                depthwise = m.groups > 1 and m.groups == m.in_channels
                self.shapes[name] = (m.out_channels, m.in_channels, depthwise)
            elif isinstance(m, nn.Linear):
                self.shapes[name] = (m.out_features, m.in_features, False)
        # (module, "out" | "in", slice) for every weight slice that changes a counted layer's shape
        self.slices = {
            g.key: [
                (s.module, "out" if s.role.is_writer else "in", s)
                for s in g.slices
                if s.tensor == "weight" and s.module in self.shapes and (s.role.is_writer or s.role.is_consumer)
            ]
            for g in groups
        }

    def macs(self, plan: dict[str, list[int]]) -> int:
        removed: dict[tuple[str, str], int] = {}
        for key, idxs in plan.items():
            if idxs:
                for module, side, s in self.slices[key]:
                    removed[(module, side)] = removed.get((module, side), 0) + len(s.positions(idxs))
        total = 0.0
        for name, layer in self.dense.layers.items():
            if name not in self.shapes:
                total += layer.macs
                continue
            out, inp, depthwise = self.shapes[name]
            factor = (out - removed.get((name, "out"), 0)) / out
            if not depthwise:
                factor *= (inp - removed.get((name, "in"), 0)) / inp
            total += layer.macs * factor
        return round(total)


def _uniform_plan(groups: Sequence[ChannelGroup], scores: dict[str, torch.Tensor], rate: float) -> dict[str, list[int]]:
    plan = {}
    for g in groups:
        k = min(num_to_prune(g.num_channels, rate), g.num_channels - g.blocks)
        plan[g.key] = lowest_channels(g, scores[g.key], k)
    return plan


def _uniform_for_macs(
    groups: Sequence[ChannelGroup], scores: dict[str, torch.Tensor], target: int, macs: _MacsModel
) -> tuple[float, dict[str, list[int]] | None]:
    """Smallest uniform rate whose plan keeps <= `target` MACs (bisection over the breakpoints); None: unreachable."""
    # A group's count floor(N * r) only changes at r = k / N, so these are all the distinct plans.
    rates = sorted({0.0} | {k / g.num_channels for g in groups for k in range(g.num_channels)})
    lo, hi = 0, len(rates) - 1
    if macs.macs(_uniform_plan(groups, scores, rates[hi])) > target:
        return rates[hi], None
    while lo < hi:  # MACs shrink monotonically with the rate: the plans are nested prefixes
        mid = (lo + hi) // 2
        if macs.macs(_uniform_plan(groups, scores, rates[mid])) <= target:
            hi = mid
        else:
            lo = mid + 1
    return rates[lo], _uniform_plan(groups, scores, rates[lo])


def _global_order(groups: Sequence[ChannelGroup], scores: dict[str, torch.Tensor]) -> list[tuple[int, int]]:
    """(group index, offset) units in global removal order; each group keeps at least one offset.

    Scores are divided by their group's mean so groups of different scale compete fairly; with a
    grouped conv in a group, an offset (one channel per block) is the unit, scored by its block mean.
    """
    ranked = []
    for gi, g in enumerate(groups):
        per_offset = scores[g.key].detach().double().cpu().reshape(g.blocks, -1).mean(0)
        mean = float(per_offset.mean())
        norm = per_offset / mean if mean > 0 else per_offset
        ranked += [(float(v), gi, o) for o, v in enumerate(norm)]
    ranked.sort()
    taken = [0] * len(groups)
    order = []
    for _, gi, o in ranked:
        if taken[gi] < groups[gi].num_channels // groups[gi].blocks - 1:
            taken[gi] += 1
            order.append((gi, o))
    return order


def _global_plan(groups: Sequence[ChannelGroup], order: list[tuple[int, int]], m: int) -> dict[str, list[int]]:
    offsets: list[list[int]] = [[] for _ in groups]
    for gi, o in order[:m]:
        offsets[gi].append(o)
    plan = {}
    for g, offs in zip(groups, offsets, strict=True):
        size = g.num_channels // g.blocks
        plan[g.key] = sorted(b * size + o for b in range(g.blocks) for o in offs)
    return plan


def _global_for_macs(
    groups: Sequence[ChannelGroup], order: list[tuple[int, int]], target: int, macs: _MacsModel
) -> dict[str, list[int]] | None:
    lo, hi = 0, len(order)
    if macs.macs(_global_plan(groups, order, hi)) > target:
        return None
    while lo < hi:
        mid = (lo + hi) // 2
        if macs.macs(_global_plan(groups, order, mid)) <= target:
            hi = mid
        else:
            lo = mid + 1
    return _global_plan(groups, order, lo)


def _check_target(ratio: float | None, macs_ratio: float | None) -> None:
    if (ratio is None) == (macs_ratio is None):
        raise ConfigError(
            "give exactly one of ratio (fraction of channels removed) or macs_ratio (fraction of MACs kept)"
        )
    if ratio is not None:
        check_range("ratio", ratio, low=0.0, high=1.0, high_inclusive=False)
    if macs_ratio is not None:
        check_range("macs_ratio", macs_ratio, low=0.0, high=1.0, low_inclusive=False)


def _data_batch(model: nn.Module, crit: Criterion, batch: Any) -> DataBatch | None:
    if batch is None:
        if crit.needs_data:
            raise ConfigError(f"criterion {crit.name!r} needs data: pass batch=(inputs, targets)")
        return None
    if isinstance(batch, DataBatch):
        return batch
    inputs, targets = batch
    return DataBatch(model, inputs, targets)


def prune(
    model: nn.Module,
    example_inputs: torch.Tensor,
    *,
    ratio: float | None = None,
    macs_ratio: float | None = None,
    criterion: str | Criterion = "l1",
    ignored_layers: Sequence[str] | None = None,
    filter_fn: FilterFn | None = None,
    global_pruning: bool = False,
    batch: DataBatch | tuple[torch.Tensor, torch.Tensor] | None = None,
) -> tuple[nn.Module, PruneReport]:
    """Prune `model` in place to a channel or MACs target; returns it and a `PruneReport`.

    Args:
        model: The network (its pruning history records the cuts, so `prunus.save` keeps them).
        example_inputs: A batch the model accepts (batch size 1 is enough); its shape without the
            batch dimension is the input shape MACs are counted for.
        ratio: Fraction of channels REMOVED per prunable group, in [0, 1) (global: of all
            prunable channels).
        macs_ratio: Fraction of the dense MACs KEPT, in (0, 1]; 0.5 halves the MACs. The result
            keeps at most this fraction (as close as the channel granularity allows).
        criterion: A registered criterion name (`prunus.criteria.list_criteria()`) or instance.
        ignored_layers: Module names whose output channels are kept (shorthand for a filter_fn).
        filter_fn: `filter_fn(module, name) -> bool`, False keeps the module's output channels.
            Default (neither given): all but the model's stem and classifier
            (`prunus.structure.default_filter`).
        global_pruning: Rank channels across groups by scores divided by their group's mean,
            instead of one rate for every group.
        batch: (inputs, targets) or a `DataBatch`, for data-driven criteria such as taylor.

    Returns:
        (model, report); the model is the same object, now smaller.

    Raises:
        ConfigError: not exactly one target, a target out of range, an unknown criterion, no
            batch for a data-driven criterion, or a MACs target that cannot be reached without
            emptying a group.

    Example:
        >>> model, report = prune(model, torch.randn(1, 1, 28, 28), ratio=0.4, criterion="fpgm")  # doctest: +SKIP
        >>> report.widths["layer1.0.conv1"]  # doctest: +SKIP
        [16, 10]
    """
    _check_target(ratio, macs_ratio)
    if isinstance(criterion, str):
        if criterion not in list_criteria():
            raise ConfigError(f"criterion={criterion!r} is not valid; choose one of: {', '.join(list_criteria())}")
        crit, crit_name = create_criterion(criterion), criterion
    else:
        crit, crit_name = criterion, criterion.name
    shape = tuple(example_inputs.shape[1:])
    groups = [g for g in build_groups(model, example_inputs, ignored_layers, filter_fn=filter_fn) if g.prunable]
    dense = count(model, shape)
    data = _data_batch(model, crit, batch)
    scores = {g.key: score(model, g, crit, data) for g in groups}
    macs = _MacsModel(model, groups, dense)
    rate: float | None = None
    plan: dict[str, list[int]] | None
    if global_pruning:
        order = _global_order(groups, scores)
        if ratio is not None:
            total_units = sum(g.num_channels // g.blocks for g in groups)
            plan = _global_plan(groups, order, min(math.floor(total_units * ratio + _EPS), len(order)))
        else:
            plan = _global_for_macs(groups, order, math.floor(macs_ratio * dense.macs), macs)
    elif ratio is not None:
        rate = float(ratio)
        plan = _uniform_plan(groups, scores, rate)
    else:
        rate, plan = _uniform_for_macs(groups, scores, math.floor(macs_ratio * dense.macs), macs)
    if plan is None:
        fewest = macs.macs(_uniform_plan(groups, scores, 1 - 1e-12)) if groups else dense.macs
        raise ConfigError(
            f"macs_ratio={macs_ratio} cannot be reached: keeping one channel per prunable group still leaves "
            f"{fewest / dense.macs:.3f} of the MACs (the ignored layers are never cut)"
        )
    widths = {g.key: [g.num_channels, g.num_channels - len(plan.get(g.key, []))] for g in groups}
    for g in groups:
        if plan.get(g.key):
            remove_(model, g, plan[g.key])
    # The MACs model is exact for every layer prunus.count charges (tests recount every zoo model),
    # so the pruned model needs no second forward pass; parameters are summed directly.
    pruned_macs = macs.macs(plan)
    pruned_params = sum(p.numel() for p in model.parameters())
    total = sum(w[0] for w in widths.values())
    report = PruneReport(
        criterion=crit_name,
        global_pruning=global_pruning,
        requested_ratio=None if ratio is None else float(ratio),
        requested_macs_ratio=None if macs_ratio is None else float(macs_ratio),
        rate=rate,
        achieved_ratio=sum(w[0] - w[1] for w in widths.values()) / total if total else 0.0,
        achieved_macs_ratio=pruned_macs / dense.macs,
        achieved_params_ratio=pruned_params / dense.params,
        dense_macs=dense.macs,
        pruned_macs=pruned_macs,
        dense_params=dense.params,
        pruned_params=pruned_params,
        widths=widths,
    )
    return model, report
