"""Per-group widths for a MACs, parameter or latency budget, without cutting: what training-time methods aim at.

`prunus.prune` cuts a model once; SFP, FPGM, MFP and C-SGD narrow it while training and need the
final width of every group up front. `plan_widths` runs exactly the search `prune` runs
(`prunus.pruning.oneshot.plan_target`: a uniform rate by default, or channels ranked across
groups with `global_pruning`, then channels given back while the budget holds; a latency budget
is planned from the runtime's latency table and checked by timing a pruned copy) and returns the
channels each prunable group KEEPS, keyed by the group keys the methods use
(`prunus.structure.build_groups`), with the ratios that cut achieves. The model is not edited.

The predicted MACs and parameter ratios are exact for the planned counts when the channels
removed are the planner's (lowest `criterion` score); a method that picks other channels of a
group removes the same number, which changes nothing for plain and residual convs and can move
the count a little only where a group's channels feed layers unequally (a concat).

Example:
    >>> import torch, prunus
    >>> model = prunus.create_model("resnet20", in_channels=1, width_mult=0.25)
    >>> plan = plan_widths(model, torch.zeros(1, 1, 28, 28), keep_macs=0.5)
    >>> 0.475 <= plan.macs_ratio <= 0.5, plan.widths["layer1.0.conv1"] <= plan.dense_widths["layer1.0.conv1"]
    (True, True)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from prunus.criteria import DataBatch
from prunus.errors import ConfigError
from prunus.pruning.config import BUDGETS, PruneBudget, PruneConfig
from prunus.pruning.oneshot import as_prune_config, plan_target
from prunus.structure import FilterFn

__all__ = ["BUDGETS", "WidthPlan", "plan_widths"]


@dataclass(frozen=True)
class WidthPlan:
    """The widths a budget chose.

    The `*_ratio` fields are outputs (shares KEPT, pruned / dense) and kept their names when the
    budget inputs were renamed to `keep_macs` / `keep_params` / `keep_latency`.

    Attributes:
        budget: The budget field given: "keep_macs", "keep_params" or "keep_latency".
        requested: The requested fraction kept.
        widths: Group key -> channels kept, for every prunable group.
        dense_widths: Group key -> channels of the dense model.
        macs_ratio: Predicted MACs kept / dense MACs (exact cost model of the cut).
        params_ratio: Predicted parameters kept / dense parameters.
        latency_ratio: Latency budgets: pruned / dense latency MEASURED side by side on `runtime`.
        estimated_latency_ratio: Latency budgets: what the latency table predicted.
        runtime, latency_batch: Where the latency was planned (latency budgets only).
        round_to, criterion, global_pruning: How the widths were searched.
    """

    budget: str
    requested: float
    widths: dict[str, int]
    dense_widths: dict[str, int]
    macs_ratio: float
    params_ratio: float
    latency_ratio: float | None
    estimated_latency_ratio: float | None
    runtime: str | None
    latency_batch: int | None
    round_to: int
    criterion: str
    global_pruning: bool

    @property
    def achieved(self) -> float:
        """The ratio of the kind requested: MACs or parameters predicted exactly, latency measured."""
        return {"keep_macs": self.macs_ratio, "keep_params": self.params_ratio}.get(
            self.budget, self.latency_ratio if self.latency_ratio is not None else float("nan")
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict of every field."""
        return asdict(self)


def plan_widths(
    model: nn.Module,
    example_inputs: torch.Tensor,
    config: PruneConfig | PruneBudget | None = None,
    *,
    filter_fn: FilterFn | None = None,
    batch: DataBatch | tuple[torch.Tensor, torch.Tensor] | None = None,
    threads: int | None = None,
    latency_table: Any = None,
    cache_dir: str | None = None,
    **settings: Any,
) -> WidthPlan:
    """Channels each prunable group keeps so the model meets ONE budget; the model is not edited.

    Args:
        model: The dense model (the one the method will train).
        example_inputs: A batch it accepts (batch size 1 is enough).
        config: A `PruneConfig` (or a method's `PruneBudget`) whose target is a budget; or its fields
            as keywords:
            keep_macs, keep_params, keep_latency: Exactly one: the fraction KEPT, in (0, 1], as in
                `prunus.prune` (MACs and parameters land within 5% below the request wherever the
                channel granularity allows; latency is measured on `runtime` at `latency_batch`).
            criterion: Ranks channels (default "l1", as `prune`): which channels the plan assumes go,
                and with `global_pruning` or a latency budget, which groups give them up.
            global_pruning: Rank channels across groups instead of one uniform rate (the default, as `prune`).
            round_to: Every planned width is a multiple of this (or the group's full width).
            ignore (alias ignored_layers): Layers whose output channels are kept, as in `prune`.
            runtime, latency_batch: Latency budgets, as in `prune`.
        filter_fn: Layers whose output channels are kept, as in `prune`.
        batch: (inputs, targets) for data-driven criteria.
        threads, latency_table, cache_dir: Latency budgets, as in `prune`.

    Returns:
        A `WidthPlan`.

    Raises:
        ConfigError: not exactly one budget, a value out of (0, 1], or one of `prune`'s errors.

    Example:
        >>> plan = plan_widths(model, x, keep_latency=0.5, runtime="torch", latency_batch=8)  # doctest: +SKIP
        >>> plan.latency_ratio  # measured  # doctest: +SKIP
        0.51
    """
    if isinstance(config, PruneBudget) and not isinstance(config, PruneConfig):
        config = PruneConfig(**config.budget_fields())  # a method's budget: the planner's settings are its own
    config = as_prune_config(config, settings, "plan_widths")
    if config.budget is None:
        raise ConfigError(f"give exactly one of {', '.join(BUDGETS)} (fractions kept); got none")
    name, value = config.require_target()
    plan = plan_target(
        model, example_inputs, config, filter_fn=filter_fn, batch=batch, threads=threads,
        latency_table=latency_table, cache_dir=cache_dir,
    )  # fmt: skip
    costs, latency = plan.costs, plan.latency
    return WidthPlan(
        budget=name,
        requested=value,
        widths={g.key: g.num_channels - plan.cut[g.key] for g in plan.groups},
        dense_widths={g.key: g.num_channels for g in plan.groups},
        macs_ratio=costs.macs(plan.cut) / costs.dense.macs,
        params_ratio=costs.params(plan.cut) / costs.dense.params,
        latency_ratio=latency.get("achieved_latency_ratio"),
        estimated_latency_ratio=latency.get("estimated_latency_ratio"),
        runtime=config.runtime if latency else None,
        latency_batch=config.latency_batch if latency else None,
        round_to=plan.round_to,
        criterion=plan.criterion,
        global_pruning=config.global_pruning,
    )
