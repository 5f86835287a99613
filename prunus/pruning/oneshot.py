"""One-shot structured pruning: score every coupled group once, cut to a channel, MACs or parameter target.

Ways to state the target, exactly one per call:

- `remove_channels`: the fraction of channels REMOVED from every prunable group (uniform),
  floor(N * remove_channels) per group; with `global_pruning` the fraction of all prunable
  channels removed, ranked across groups by normalised scores.
- `keep_macs` / `keep_params`: the fraction of the dense MACs / parameters KEPT (0.5 = half).
  Uniform: the smallest per-group rate whose pruned model keeps at most that fraction (bisection
  over the rates where some group's channel count changes); global: the fewest lowest-ranked
  channels, across groups, that reach it. Then channels are given back, one width step at a time
  to the most-pruned group, while the budget still holds: on narrow models one uniform step can
  remove a large share of the MACs at once, and this lands the result just under the request
  (achieved <= requested, within 5% wherever the channel granularity allows).

`round_to` keeps every pruned width a multiple of it (or the full width; see
`prunus.pruning.widths`). Scores are taken once on the dense model; MACs and parameters during the
search come from an exact model of the cut (`prunus.pruning.costs`, checked against real counts).
A group never loses all channels. (`keep_latency`, the fraction of the dense latency KEPT, is
planned and measured by `prunus.pruning.latency`.) The names before issue 28 (`ratio`,
`macs_ratio`, `params_ratio`, `latency_ratio`) are deprecated aliases of these for one release.

`prune` works IN PLACE: it modifies `model` and returns that same object with a report.

Example:
    >>> import torch, prunus
    >>> model = prunus.create_model("resnet20", in_channels=1)
    >>> pruned, report = prune(model, torch.randn(1, 1, 28, 28), keep_macs=0.5, criterion="l1")
    >>> pruned is model and 0.475 <= report.achieved_macs_ratio <= 0.5
    True
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
import torch
from torch import nn

from prunus.config import build_config
from prunus.criteria import Criterion, DataBatch, create_criterion, list_criteria, score
from prunus.errors import ConfigError
from prunus.measure import count
from prunus.pruning.config import PruneConfig, match_layer_ratios
from prunus.pruning.costs import CostModel
from prunus.pruning.widths import _EPS, AUTO, kept_widths, num_to_prune, resolve_round_to, round_kept
from prunus.structure import ChannelGroup, FilterFn, build_groups, remove_many_, traced_counts
from prunus.structure._gc import paused_gc
from prunus.structure.roles import WRITER_ROLES

__all__ = ["PruneReport", "TargetPlan", "as_prune_config", "num_to_prune", "plan_target", "prune"]

Cut = dict[str, int]  # group key -> number of channels removed


@dataclass(frozen=True)
class PruneReport:
    """What `prune` asked for and what it achieved.

    The field names are the report's output names (results files read them) and were kept when the
    inputs were renamed: every `*_macs_ratio`, `*_params_ratio` and `*_latency_ratio` is a share
    KEPT (pruned / dense; the request is `keep_macs`, `keep_params`, `keep_latency`), and
    `requested_ratio` / `achieved_ratio` are shares of channels REMOVED (`remove_channels`).

    Attributes:
        criterion: Criterion name.
        global_pruning: Channels ranked across groups (True) or a uniform rate per group.
        requested_ratio: Requested fraction of channels removed (`remove_channels`), or None.
        requested_macs_ratio: Requested fraction of MACs kept (`keep_macs`), or None.
        rate: The uniform per-group rate used (None with global pruning); with a budget, the
            rate before channels were given back.
        achieved_ratio: Fraction of the prunable groups' channels removed.
        achieved_macs_ratio: pruned MACs / dense MACs (kept fraction).
        achieved_params_ratio: pruned params / dense params (kept fraction).
        dense_macs, pruned_macs, dense_params, pruned_params: As `prunus.count` counts them.
        widths: Group key -> [channels before, channels after], for every prunable group.
        requested_params_ratio: Requested fraction of parameters kept (`keep_params`), or None.
        round_to: Every pruned width is a multiple of this (or the group's full width).
        requested_latency_ratio: Requested fraction of the dense latency kept (`keep_latency`), or None.
        achieved_latency_ratio: pruned / dense latency MEASURED side by side on `runtime` at
            `latency_batch` (latency budgets only).
        estimated_latency_ratio: What the latency table predicted for the kept cut.
        runtime, latency_batch: Where latency was measured (latency budgets only).
        kept_whole: Group key -> why it keeps every channel: the stem and classifier (and what is
            coupled to them: a residual stream written by the stem keeps its width), layers in
            `ignore`, structures that cannot be cut safely.
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
    requested_params_ratio: float | None = None
    round_to: int = 1
    requested_latency_ratio: float | None = None
    achieved_latency_ratio: float | None = None
    estimated_latency_ratio: float | None = None
    runtime: str | None = None
    latency_batch: int | None = None
    kept_whole: dict[str, str] = field(default_factory=dict)

    @property
    def macs_speedup(self) -> float:
        """dense MACs / pruned MACs."""
        return self.dense_macs / max(self.pruned_macs, 1)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict of every field."""
        return asdict(self)


Fits = Callable[[Mapping[str, int]], bool]


def _uniform_cut(groups: Sequence[ChannelGroup], rate: float, round_to: int) -> Cut:
    return {g.key: num_to_prune(g.num_channels, rate, round_to, g.blocks, g.min_channels) for g in groups}


def _uniform_search(groups: Sequence[ChannelGroup], fits: Fits, round_to: int) -> tuple[float, Cut | None]:
    """Smallest uniform rate whose cut fits the budget (bisection over the breakpoints); None: unreachable."""
    # A group's count floor(N * r) only changes at r = k / N, so these are all the distinct cuts.
    widths = {g.num_channels for g in groups}  # a property: asked once per group, not once per channel
    rates = np.unique(np.concatenate([[0.0], *(np.arange(n) / n for n in widths)])).tolist()
    lo, hi = 0, len(rates) - 1
    if not fits(_uniform_cut(groups, rates[hi], round_to)):
        return rates[hi], None
    while lo < hi:  # costs shrink monotonically with the rate: the cuts are nested prefixes
        mid = (lo + hi) // 2
        if fits(_uniform_cut(groups, rates[mid], round_to)):
            hi = mid
        else:
            lo = mid + 1
    return rates[lo], _uniform_cut(groups, rates[lo], round_to)


def _global_order(groups: Sequence[ChannelGroup], scores: dict[str, torch.Tensor]) -> list[int]:
    """Group index of each unit in global removal order; each group keeps its `min_channels`.

    Scores are divided by their group's mean so groups of different scale compete fairly; a unit
    (one channel, or e.g. one offset per grouped-conv block) is scored by its mean. Only the number
    taken from each group matters: it takes its units in `removal_order` (the same ranking).
    """
    ranked = []
    for gi, g in enumerate(groups):
        values = scores[g.key].detach().double().cpu()
        per_unit = torch.stack([values[list(u)].mean() for u in g.units])
        mean = float(per_unit.mean())
        norm = per_unit / mean if mean > 0 else per_unit
        ranked += [(float(v), gi, o) for o, v in enumerate(norm)]
    ranked.sort()
    taken = [0] * len(groups)
    order = []
    for _, gi, _o in ranked:
        g = groups[gi]
        if taken[gi] < (g.num_channels - g.min_channels) // g.blocks:
            taken[gi] += 1
            order.append(gi)
    return order


def _global_cut(groups: Sequence[ChannelGroup], order: list[int], m: int, round_to: int) -> Cut:
    offsets = [0] * len(groups)
    for gi in order[:m]:
        offsets[gi] += 1
    return {
        g.key: g.num_channels
        - round_kept(g.num_channels, g.num_channels - o * g.blocks, round_to, g.blocks, g.min_channels)
        for g, o in zip(groups, offsets, strict=True)
    }


def _global_search(groups: Sequence[ChannelGroup], order: list[int], fits: Fits, round_to: int) -> Cut | None:
    lo, hi = 0, len(order)
    if not fits(_global_cut(groups, order, hi, round_to)):
        return None
    while lo < hi:
        mid = (lo + hi) // 2
        if fits(_global_cut(groups, order, mid, round_to)):
            hi = mid
        else:
            lo = mid + 1
    return _global_cut(groups, order, lo, round_to)


def give_back(groups: Sequence[ChannelGroup], cut: Cut, fits: Fits, round_to: int) -> Cut:
    """Return channels to the most-pruned groups, one valid width step at a time, while `fits` holds.

    A uniform or global search moves in steps that can be coarse on narrow models (4 channels:
    25% of a group per step); giving back afterwards lands the budget from below. A group whose
    next step does not fit is done for good (costs only grow as channels come back).
    """
    cut = dict(cut)
    done: set[str] = set()
    widths = {g.key: kept_widths(g.num_channels, round_to, g.blocks, g.min_channels) for g in groups}
    while True:
        open_ = [g for g in groups if cut[g.key] > 0 and g.key not in done]
        if not open_:
            return cut
        g = max(open_, key=lambda g: cut[g.key] / g.num_channels)  # ties: the first in module order
        kept = g.num_channels - cut[g.key]
        trial = {**cut, g.key: g.num_channels - next(w for w in widths[g.key] if w > kept)}
        if fits(trial):
            cut = trial
        else:
            done.add(g.key)


def _data_batch(model: nn.Module, crit: Criterion, batch: Any) -> DataBatch | None:
    if batch is None:
        if crit.needs_data:
            raise ConfigError(f"criterion {crit.name!r} needs data: pass batch=(inputs, targets)")
        return None
    if isinstance(batch, DataBatch):
        return batch
    inputs, targets = batch
    return DataBatch(model, inputs, targets)


def _scores(
    model: nn.Module, groups: Sequence[ChannelGroup], criterion: str | Criterion, batch: Any
) -> tuple[str, dict[str, torch.Tensor]]:
    if isinstance(criterion, str):
        if criterion not in list_criteria():
            raise ConfigError(f"criterion={criterion!r} is not valid; choose one of: {', '.join(list_criteria())}")
        crit, crit_name = create_criterion(criterion), criterion
    else:
        crit, crit_name = criterion, criterion.name
    data = _data_batch(model, crit, batch)
    return crit_name, {g.key: score(model, g, crit, data) for g in groups}


def plan_cut(
    groups: Sequence[ChannelGroup],
    scores: dict[str, torch.Tensor],
    fits: Fits,
    *,
    global_pruning: bool,
    round_to: int,
) -> tuple[float | None, Cut | None]:
    """The cut meeting a budget (`fits(cut)` is True), landed from below; (uniform rate, cut) or (.., None)."""
    if global_pruning:
        rate, cut = None, _global_search(groups, _global_order(groups, scores), fits, round_to)
    else:
        rate, cut = _uniform_search(groups, fits, round_to)
    return rate, (None if cut is None else give_back(groups, cut, fits, round_to))


@dataclass(frozen=True)
class TargetPlan:
    """The cut a target chose on a dense model, before anything is cut (see `plan_target`).

    Attributes:
        groups: The prunable groups, in module order.
        costs: The exact cost model of cuts (`prunus.pruning.costs.CostModel`) on the dense model.
        criterion: Name of the criterion that ranked the channels.
        cut: Group key -> channels removed (every prunable group).
        rate: The uniform per-group rate searched (None with global pruning or a latency budget).
        round_to: The validated rounding.
        latency: Requested/measured/estimated latency ratios, runtime and batch (latency budgets only).
        kept_whole: Group key -> why it keeps every channel (see `PruneReport.kept_whole`).
    """

    groups: list[ChannelGroup]
    costs: CostModel
    criterion: str
    cut: Cut
    rate: float | None
    round_to: int
    latency: dict[str, Any]
    kept_whole: dict[str, str] = field(default_factory=dict)


def plan_target(
    model: nn.Module,
    example_inputs: Any,
    config: PruneConfig,
    *,
    criterion: Criterion | None = None,
    filter_fn: FilterFn | None = None,
    batch: DataBatch | tuple[torch.Tensor, torch.Tensor] | None = None,
    threads: int | None = None,
    latency_table: Any = None,
    cache_dir: str | None = None,
) -> TargetPlan:
    """Choose the cut for the ONE target of `config` (remove_channels, keep_macs, keep_params or keep_latency).

    The model is not edited (a latency budget times a pruned copy). `prune` cuts what this returns;
    `prunus.pruning.plan_widths` hands it to the training-time methods as per-group widths.
    `criterion`: a `Criterion` instance used instead of `config.criterion` (Python API only).
    Groups named by `config.layer_ratios` get their own ratio and are left out of the search.
    """
    name, value = config.require_target()
    if config.round_to == AUTO:  # resolved once, so the search, the latency tables and the report agree
        config = replace(config, round_to=resolve_round_to(AUTO))
    round_to = config.round_to
    ignored = list(config.ignore) or None
    every = build_groups(model, example_inputs, ignored, filter_fn=filter_fn)
    groups = [g for g in every if g.prunable]
    kept_whole = {g.key: _why_whole(g) for g in every if not g.prunable}
    if config.keep_streams:  # residual streams stay whole: only the channels inside the blocks are cut
        kept_whole |= {g.key: _why_whole(g, STREAM_KEPT) for g in groups if g.residual}
        groups = [g for g in groups if not g.residual]
    # the trace already ran the model on these inputs: its MACs are `count`'s (else count them)
    dense = traced_counts(model, every) or count(model, example_inputs=example_inputs)
    crit_name, scores = _scores(model, groups, criterion if criterion is not None else config.criterion, batch)
    costs = CostModel(model, groups, scores, dense)
    fixed = _fixed_cut(groups, config)
    free = [g for g in groups if g.key not in fixed]
    rate: float | None = None
    cut: Cut | None
    latency: dict[str, Any] = {}
    if name == "keep_latency":
        from prunus.pruning.latency import plan_latency

        plan = plan_latency(
            model, example_inputs, free, costs, scores, config, threads=threads, filter_fn=filter_fn,
            table=latency_table, cache_dir=cache_dir, fixed=fixed,
        )  # fmt: skip
        cut = plan.cut
        latency = {
            "requested_latency_ratio": value,
            "achieved_latency_ratio": plan.measured_ratio,
            "estimated_latency_ratio": plan.estimated_ratio,
            "runtime": config.runtime,
            "latency_batch": config.latency_batch,
        }
    elif name == "remove_channels" and config.global_pruning:
        total_units = sum(g.num_channels // g.blocks for g in free)
        order = _global_order(free, scores)
        cut = _global_cut(free, order, min(math.floor(total_units * value + _EPS), len(order)), round_to)
    elif name == "remove_channels":
        rate = value
        cut = _uniform_cut(free, rate, round_to)
    else:
        measure = costs.macs if name == "keep_macs" else costs.params
        dense_value = dense.macs if name == "keep_macs" else dense.params
        target = math.floor(value * dense_value)
        rate, cut = plan_cut(
            free, scores, lambda c: measure({**fixed, **c}) <= target, global_pruning=config.global_pruning,
            round_to=round_to,
        )  # fmt: skip
        if cut is None:  # out of reach: the closest the model can come is every free group at its fewest channels
            cut = _uniform_cut(free, 1 - 1e-12, round_to)
            _warn_unreachable(name, value, measure({**fixed, **cut}) / dense_value, round_to, costs, kept_whole)
        else:
            achieved = measure({**fixed, **cut}) / dense_value
            if achieved < 0.95 * value:
                _warn_undershoot(name, value, achieved, round_to)
    cut = {g.key: {**fixed, **cut}.get(g.key, 0) for g in groups}
    return TargetPlan(groups, costs, crit_name, cut, rate, round_to, latency, kept_whole)


STREAM_KEPT = "a residual stream, kept by keep_streams"


def _why_whole(group: ChannelGroup, reason: str | None = None) -> str:
    """One line: why `group` keeps its width, and which other layers that keeps whole with it."""
    writers = [m for m in group.modules(*WRITER_ROLES) if m != group.key]
    coupled = f"; coupled with {', '.join(writers[:4])}{' ...' if len(writers) > 4 else ''}" if writers else ""
    return f"{group.num_channels} channels{coupled}: {reason or group.reason}"


def _fixed_cut(groups: Sequence[ChannelGroup], config: PruneConfig) -> Cut:
    """Channels removed from the groups `config.layer_ratios` names (each at its own ratio)."""
    if not config.layer_ratios:
        return {}
    members = {g.key: g.modules(*WRITER_ROLES) for g in groups}
    ratios = match_layer_ratios(config.layer_ratios, [g.key for g in groups], members)
    return {
        g.key: num_to_prune(g.num_channels, ratios[g.key], config.round_to, g.blocks, g.min_channels)
        for g in groups
        if g.key in ratios
    }


def _warn_undershoot(name: str, value: float, achieved: float, round_to: int) -> None:
    """One line when a MACs/params budget lands more than 5% below the request (the granularity is too coarse)."""
    import warnings

    from prunus.errors import BudgetNotMetWarning

    why = f"round_to={round_to} makes the width steps coarse" if round_to > 1 else "the groups are too narrow"
    warnings.warn(
        BudgetNotMetWarning(
            f"{name}={value}: the closest cut keeps {achieved:.3f} ({achieved / value - 1:+.0%}); {why} to land "
            "within 5% below the request (try a smaller round_to or a per-layer ratio)"
        ),
        stacklevel=4,
    )


def _warn_unreachable(
    name: str, value: float, fewest: float, round_to: int, costs: CostModel, kept_whole: Mapping[str, str]
) -> None:
    """Say why a MACs/params budget is out of reach: the share in layers no prunable group can cut, and why.

    The cut is then the closest the model can come (every prunable group at its fewest channels); a
    caller who wants an error turns the warning into one (`warnings.simplefilter("error", BudgetNotMetWarning)`).
    """
    import warnings

    from prunus.errors import BudgetNotMetWarning

    what, counted = ("MACs", "macs") if name == "keep_macs" else ("parameters", "params")
    touched = costs.cuttable_layers()
    total = getattr(costs.dense, counted) or 1
    uncut = sum(getattr(c, counted) for layer, c in costs.dense.layers.items() if layer not in touched) / total
    # the groups kept whole for a reason of their own (not just written by an ignored layer) say most
    own = {key: why for key, why in kept_whole.items() if "written by ignored layer" not in why}
    whole = ""
    if kept_whole:
        key, why = next(iter((own or kept_whole).items()))
        whole = (
            f"; {len(kept_whole)} group(s) keep every channel, {len(own)} of them not for an ignored layer "
            f"(see report.kept_whole), e.g. '{key}': {why}"
        )
    fewest_text = "one channel" if round_to == 1 else f"round_to={round_to} channels"
    warnings.warn(
        BudgetNotMetWarning(
            f"{name}={value} cannot be reached: every prunable group is cut to its fewest channels "
            f"({fewest_text}), which keeps {fewest:.3f} of the {what}; {uncut:.3f} of them sit in layers that "
            f"no prunable group can cut (the ignored layers: the stem and the classifier by default{whole})"
        ),
        stacklevel=4,  # the caller of prune / plan_widths
    )


def prune(
    model: nn.Module,
    example_inputs: Any,
    config: PruneConfig | None = None,
    *,
    filter_fn: FilterFn | None = None,
    batch: DataBatch | tuple[torch.Tensor, torch.Tensor] | None = None,
    threads: int | None = None,
    latency_table: Any = None,
    cache_dir: str | None = None,
    **settings: Any,
) -> tuple[nn.Module, PruneReport]:
    """Prune `model` IN PLACE to a channel, MACs, parameter or latency target; returns that same model and a report.

    Args:
        model: The network (its pruning history records the cuts, so `prunus.save` keeps them).
            It is edited in place; the returned model is the same object (copy it first to keep the dense one).
        example_inputs: What the model is called with (batch size 1 is enough): a tensor, a tuple
            of tensors (several inputs) or a dict of keyword tensors. MACs are counted for it.
        config: A `prunus.pruning.PruneConfig`; or give its fields as keywords (sugar):
            remove_channels: Fraction of channels REMOVED per prunable group, in [0, 1) (global: of
                all prunable channels). Was `ratio` (deprecated alias, as each old name below).
            keep_macs: Fraction of the dense MACs KEPT, in (0, 1]; 0.5 halves the MACs. The result
                keeps at most this fraction, and at least 95% of it wherever the granularity
                allows (a `BudgetNotMetWarning` says so when it cannot). Out of reach (layers no
                group can cut hold more), every prunable group is cut to its fewest channels and a
                `BudgetNotMetWarning` says which share cannot be cut and why.
                Was `macs_ratio`.
            keep_params: Fraction of the dense parameters KEPT, in (0, 1], landed like `keep_macs`.
                Was `params_ratio`.
            keep_latency: Fraction of the dense latency KEPT on `runtime` at `latency_batch`, in
                (0, 1]. Planned from per-layer latency tables measured on that runtime (cached on
                disk), then checked by timing the pruned model against the dense one; the report
                gives the measured ratio (see `prunus.pruning.latency`). Was `latency_ratio`.
            criterion: A registered criterion name (`prunus.criteria.list_criteria()`), or a
                `Criterion` instance (Python only).
            ignore (alias ignored_layers): Module names whose output channels are kept.
            global_pruning: Rank channels across groups by scores divided by their group's mean,
                instead of one rate for every group.
            round_to: Keep every pruned width a multiple of this many channels (or the full
                width): 8 or 16 match CPU vector widths. 1 (default) = any width.
            layer_ratios: {module-name glob: ratio REMOVED} for the groups it names; the other
                groups follow the target.
            runtime, latency_batch: Where a `keep_latency` budget is measured ("onnxruntime" or "torch", 64).
        filter_fn: `filter_fn(module, name) -> bool`, False keeps the module's output channels.
            Default (neither it nor `ignore`): all but the model's stem and classifier
            (`prunus.structure.default_filter`).
        batch: (inputs, targets) or a `DataBatch`, for data-driven criteria such as taylor.
        threads: Intra-op threads for the latency measurements (None: the runtime's default).
        latency_table: A `prunus.pruning.latency.LatencyTable` to plan with instead of measuring one.
        cache_dir: Directory of cached latency tables (default ~/.cache/prunus/latency).

    Returns:
        (model, report); the model is the same object, now smaller.

    Warns:
        PrunusDeprecationWarning: a target given under its old name (`ratio`, `macs_ratio`, ...).
        BudgetNotMetWarning: a MACs/params budget landed more than 5% below the request, or is out
            of reach (`warnings.simplefilter("error", BudgetNotMetWarning)` makes either an error).

    Raises:
        ConfigError: not exactly one target (an old and a new name for one target included), a
            target out of range, an unknown criterion, no batch for a data-driven criterion, a bad
            round_to, or a latency budget whose narrowest widths measure too slow.

    Example:
        >>> model, report = prune(model, torch.randn(1, 1, 28, 28), remove_channels=0.4)  # doctest: +SKIP
        >>> report.widths["layer1.0.conv1"]  # doctest: +SKIP
        [16, 10]
    """
    criterion = settings.get("criterion")
    instance = criterion if criterion is not None and not isinstance(criterion, str) else None
    if instance is not None:  # a Criterion object: the config records its name
        settings = {**settings, "criterion": "l1"}
    config = as_prune_config(config, settings, "prune")
    name, value = config.require_target()
    # A latency target times models for minutes: the collector runs there; elsewhere it is paused (`_gc`).
    with paused_gc() if name != "keep_latency" else contextlib.nullcontext():
        plan = plan_target(
            model, example_inputs, config, criterion=instance, filter_fn=filter_fn, batch=batch, threads=threads,
            latency_table=latency_table, cache_dir=cache_dir,
        )  # fmt: skip
        report = _apply(model, plan, config.global_pruning, {name: value})
    return model, replace(report, **plan.latency) if plan.latency else report


def as_prune_config(config: PruneConfig | None, settings: Mapping[str, Any], owner: str) -> PruneConfig:
    """`config` as given, or a `PruneConfig` built from keyword `settings` (`prunus.config.build_config`).

    `ignored_layers` is accepted as the older name of `ignore`.
    """
    settings = dict(settings)
    if settings.get("ignored_layers") is not None:
        settings["ignore"] = tuple(settings.pop("ignored_layers"))
    settings.pop("ignored_layers", None)
    return build_config(PruneConfig, config, settings, f"{owner}()")


def _apply(model: nn.Module, plan: TargetPlan, global_pruning: bool, requested: dict[str, float]) -> PruneReport:
    """Cut the model and report; MACs from the exact cost model, parameters summed directly."""
    groups, cut, costs = plan.groups, plan.cut, plan.costs
    widths = {g.key: [g.num_channels, g.num_channels - cut.get(g.key, 0)] for g in groups}
    remove_many_(model, [(g, costs.channels(g.key, cut[g.key])) for g in groups if cut.get(g.key)])
    # The MACs model is exact for every layer prunus.count charges (tests recount every zoo model),
    # so the pruned model needs no second forward pass.
    pruned_macs = costs.macs(cut)
    pruned_params = sum(p.numel() for p in model.parameters())
    total = sum(w[0] for w in widths.values())
    dense = costs.dense
    return PruneReport(
        criterion=plan.criterion,
        global_pruning=global_pruning,
        requested_ratio=requested.get("remove_channels"),
        requested_macs_ratio=requested.get("keep_macs"),
        rate=plan.rate,
        achieved_ratio=sum(w[0] - w[1] for w in widths.values()) / total if total else 0.0,
        achieved_macs_ratio=pruned_macs / dense.macs,
        achieved_params_ratio=pruned_params / dense.params,
        dense_macs=dense.macs,
        pruned_macs=pruned_macs,
        dense_params=dense.params,
        pruned_params=pruned_params,
        widths=widths,
        requested_params_ratio=requested.get("keep_params"),
        round_to=plan.round_to,
        kept_whole=dict(plan.kept_whole),
    )
