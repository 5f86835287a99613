"""Budgets and per-group widths for the training-time methods (SFP, FPGM, MFP, C-SGD).

A method may be given its final widths three ways: one rate / width for every group, a per-group
override `widths = {group key: ratio kept (float) or channel count (int)}`, or ONE budget
(`keep_macs`, `keep_params` or `keep_latency`, the fraction of the dense model KEPT). A budget
is resolved once, at setup, on the initial model by `prunus.pruning.plan_widths` (the search
`prunus.prune` runs) into channel counts per group; the counts are part of the method's state,
so a resumed run keeps the widths it started with. Under torch.distributed rank 0 plans and
broadcasts the counts (a latency plan times the model; ranks must not disagree).

Example:
    >>> check_widths("sfp.widths", {"layer1.0.conv1": 0.5, "layer2.0.conv1": 4})
    {'layer1.0.conv1': 0.5, 'layer2.0.conv1': 4}
    >>> check_widths("sfp.widths", {"layer1.0.conv1": 0})
    Traceback (most recent call last):
    ...
    prunus.errors.ConfigError: sfp.widths['layer1.0.conv1']=0: a channel count must be >= 1
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from prunus.config import check_range
from prunus.errors import ConfigError
from prunus.methods._clustering import target_width
from prunus.pruning import BUDGETS, PruneBudget, PruneConfig, WidthPlan, plan_widths
from prunus.pruning.widths import round_kept
from prunus.structure import ChannelGroup, FilterFn

__all__ = ["BUDGETS", "check_budget", "check_widths", "plan_budget", "resolve_widths"]


def check_widths(field: str, widths: Any) -> dict[str, float | int] | None:
    """None, or a mapping of group key -> ratio kept in (0, 1] (float) or channel count >= 1 (int), as a dict."""
    if widths is None:
        return None
    if not isinstance(widths, Mapping):
        raise ConfigError(f"{field} must map group keys to ratios or channel counts, got {widths!r}")
    for key, value in widths.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{field}[{key!r}]={value!r}: expected a ratio in (0, 1] or a channel count")
        if isinstance(value, int) and value < 1:
            raise ConfigError(f"{field}[{key!r}]={value}: a channel count must be >= 1")
        if isinstance(value, float):
            check_range(f"{field}[{key!r}]", value, 0.0, 1.0, low_inclusive=False)
    return dict(widths)


def check_budget(config: PruneBudget, prefix: str, *, fixed: Mapping[str, Any]) -> str | None:
    """The budget a method config was given (its `PruneBudget` fields, validated there), or None.

    `fixed`: the config's other ways of stating widths that a budget excludes, name -> value
    given (None = not given), e.g. {"rate": 0.4, "widths": None}.

    Raises:
        ConfigError: a budget given together with one of `fixed`.
    """
    budget = config.budget
    if budget is None:
        return None
    clash = [name for name, value in fixed.items() if value is not None]
    if clash:
        owner = f"{prefix.rstrip('.')}: " if prefix else ""
        raise ConfigError(
            f"{owner}give either {' / '.join(fixed)} or a budget ({budget}), not both; got {', '.join(clash)} "
            f"and {budget}={getattr(config, budget)}"
        )
    return budget


def resolve_widths(
    field: str, spec: Mapping[str, float | int], groups: Sequence[ChannelGroup], round_to: int
) -> dict[str, int]:
    """Channels kept per group key for a `widths` override: ratios rounded as `round_to` says, counts as given.

    Raises:
        ConfigError: a key that is not a prunable group (the message lists them), a count above
            the group's width, or one that does not split into the group's grouped-conv blocks.
    """
    by_key = {g.key: g for g in groups}
    kept = {}
    for key, value in spec.items():
        group = by_key.get(key)
        if group is None:
            raise ConfigError(f"{field} names {key!r}, which is not a prunable group; groups: {', '.join(by_key)}")
        n = group.num_channels
        k = target_width(n, value, key)
        if isinstance(value, float):
            k = round_kept(n, k, round_to, group.blocks, group.min_channels)
        elif round_kept(n, k, 1, group.blocks, group.min_channels) != k:
            raise ConfigError(
                f"{field}[{key!r}]={value}: group {key!r} is cut in whole blocks of {group.blocks} "
                f"(a grouped conv) and keeps at least {group.min_channels}; give a multiple of {group.blocks}"
            )
        kept[key] = k
    return kept


def plan_budget(
    model: nn.Module,
    inputs: torch.Tensor,
    config: PruneBudget,
    *,
    keys: Sequence[str],
    ignored_layers: Sequence[str] | None,
    filter_fn: FilterFn | None,
    threads: int | None,
    device: torch.device | str = "cpu",
) -> tuple[dict[str, int], WidthPlan | None]:
    """Channels kept per key of `keys` for the config's budget, planned on rank 0 and shared with every rank.

    Returns:
        (kept counts, the plan on the rank that made it, else None).
    """
    distributed = dist.is_available() and dist.is_initialized()
    plan = None
    if not distributed or dist.get_rank() == 0:
        settings = PruneConfig(**config.budget_fields(), ignore=tuple(ignored_layers or ()))
        plan = plan_widths(model, inputs, settings, filter_fn=filter_fn, threads=threads)
        missing = sorted(set(keys) - set(plan.widths))
        if missing:  # the method's groups and the planner's come from the same build_groups call
            raise ConfigError(f"the budget plan has no width for group(s) {missing}")
        kept = {k: plan.widths[k] for k in keys}
    else:
        kept = dict.fromkeys(keys, 0)
    if distributed:
        t = torch.tensor([kept[k] for k in keys], dtype=torch.long, device=device)
        dist.broadcast(t, src=0)
        kept = {k: int(v) for k, v in zip(keys, t.cpu().tolist(), strict=True)}
    return kept, plan
