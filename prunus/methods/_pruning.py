"""Helpers shared by the SFP-family methods (SFP, FPGM, MFP): rates, validation and channel selection.

Criteria only score and the structure engine only cuts; these helpers are the small piece in
between that turns scores and a rate into channel indices (`select_channels`), including FPGM's
"mix" rule. The fixed, unaugmented training slices the data-driven parts need come from
`prunus.data.training_slice`.

Example:
    >>> num_to_prune(10, 0.4), num_to_prune(10, 0.29), num_to_prune(1, 0.9)
    (4, 2, 0)
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from prunus.config import arg, check_choice, check_range
from prunus.criteria import DataBatch, create_criterion, get_criterion, list_criteria, score
from prunus.errors import ConfigError
from prunus.methods._budget import check_budget, check_widths
from prunus.models.info import example_input
from prunus.pruning import PruneBudget, num_to_prune
from prunus.structure import (
    ChannelGroup,
    ChannelTensors,
    FilterFn,
    build_groups,
    check_filter_fn,
    group_weights,
    lowest_channels,
)

__all__ = [
    "DISTANCE_TO_NORM",
    "RateSpec",
    "SoftPruningConfig",
    "check_bool",
    "check_int",
    "check_names",
    "check_criterion",
    "check_rate",
    "criterion_needs_data",
    "example_inputs",
    "num_to_prune",
    "prunable_groups",
    "rate_at",
    "select_channels",
]

#: a pruning rate: a number in [0, 1) or a function of the (0-based) epoch returning one
RateSpec = float | Callable[[int], float]

#: FPGM "mix": the norm criterion that goes with each distance criterion
DISTANCE_TO_NORM = {"fpgm": "l2", "dist-l2": "l2", "dist-l1": "l1"}

_EPS = 1e-9  # as in prunus.prune.num_to_prune

DEFAULT_RATE = 0.4  # the rate without a budget


def check_rate(rate: Any, field: str = "rate") -> None:
    """Raise `ConfigError` unless `rate` is a number in [0, 1) or a callable (checked when called)."""
    if callable(rate):
        return
    check_range(field, rate, low=0.0, high=1.0, high_inclusive=False)


def rate_at(rate: RateSpec, epoch: int, field: str = "rate") -> float:
    """The rate for `epoch`; a schedule's value is validated like a constant."""
    value = rate(epoch) if callable(rate) else rate
    check_range(f"{field}({epoch})" if callable(rate) else field, value, low=0.0, high=1.0, high_inclusive=False)
    return float(value)


def check_int(field: str, value: Any, low: int) -> None:
    """Raise `ConfigError` unless `value` is an integer >= `low` (bools are not integers here)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ConfigError(f"{field}={value!r} is not valid; expected an integer >= {low}")


def check_bool(field: str, value: Any) -> None:
    """Raise `ConfigError` unless `value` is True or False."""
    if not isinstance(value, bool):
        raise ConfigError(f"{field} must be true or false, got {value!r}")


def check_names(field: str, value: Any) -> tuple[str, ...] | None:
    """None, or a list/tuple of module names as a tuple; a bare string raises (it is not a list)."""
    if value is None:
        return None
    if isinstance(value, str) or not isinstance(value, Sequence) or not all(isinstance(n, str) for n in value):
        raise ConfigError(f"{field} must be a list of module names, got {value!r}")
    return tuple(value)


@dataclasses.dataclass(frozen=True)
class SoftPruningConfig(PruneBudget):
    """The arguments SFP, FPGM and MFP share: when and how hard the soft masks are applied, and how many.

    How many channels each group keeps at the end: `rate` (default 0.4 masked per group), with
    `widths` overriding it per group (ratio KEPT or channel count), or exactly one budget instead
    (`keep_macs`, `keep_params`, `keep_latency`; see `prunus.methods._budget`), resolved at
    setup into per-group counts by `prunus.pruning.plan_widths`.

    Raises:
        ConfigError: a field is out of range; the message names it and the valid values.
    """

    rate: RateSpec | None = arg(
        None, "fraction of each prunable group's channels masked, in [0, 1), or fn(epoch); default 0.4 without a budget"
    )
    interval: int = arg(1, "masks recomputed at the end of every `interval` epochs and of the last one")
    hard: bool = arg(False, "also keep masked weights, gradients and momentum at zero every step")
    remove_at_end: bool = arg(True, "physically remove the masked channels after the last epoch")
    ignored_layers: tuple[str, ...] | None = arg(None, "never masked; None = the model's stem and classifier")
    filter_fn: FilterFn | None = arg(None, "Python only: filter_fn(module, name) -> bool, False keeps its outputs")
    widths: dict[str, float | int] | None = arg(None, "per-group override of rate: key -> ratio KEPT (float) or count")

    def __post_init__(self) -> None:
        super().__post_init__()  # the budget fields (prunus.pruning.PruneBudget)
        object.__setattr__(self, "widths", check_widths("widths", self.widths))
        budget = check_budget(self, "", fixed={"rate": self.rate, "widths": self.widths})
        if budget is None and self.rate is None:
            object.__setattr__(self, "rate", DEFAULT_RATE)
        if self.rate is not None:
            check_rate(self.rate)
        check_int("interval", self.interval, 1)
        check_bool("hard", self.hard)
        check_bool("remove_at_end", self.remove_at_end)
        object.__setattr__(self, "ignored_layers", check_names("ignored_layers", self.ignored_layers))
        check_filter_fn(self.filter_fn)


def check_criterion(name: Any, field: str = "criterion") -> str:
    """Validate a registered criterion name; the error lists every registered one."""
    if not isinstance(name, str):
        choices = ", ".join(list_criteria())
        raise ConfigError(f"{field} must be a criterion name, got {name!r}; choose one of: {choices}")
    check_choice(field, name, list_criteria())
    return name


def criterion_needs_data(name: str) -> bool:
    """Whether criterion `name` needs a data batch (activations and gradients)."""
    return bool(get_criterion(name).needs_data)


def example_inputs(input_shape: Sequence[int], device: torch.device | str = "cpu") -> torch.Tensor:
    """A batch of one all-zero sample of shape (C, H, W), for tracing (see `prunus.models.info.example_input`)."""
    return example_input(tuple(int(s) for s in input_shape), device=device)


def prunable_groups(
    model: nn.Module, inputs: Any, ignored_layers: Sequence[str] | None = None, filter_fn: FilterFn | None = None
) -> list[ChannelGroup]:
    """The prunable coupled groups of `model` (see `prunus.structure.build_groups`)."""
    return [g for g in build_groups(model, inputs, ignored_layers, filter_fn=filter_fn) if g.prunable]


def _mix_channels(
    model: nn.Module, group: ChannelGroup, criterion: str, count: int, mix_ratio: float, batch: DataBatch | None
) -> list[int]:
    """FPGM "mix": a share of the channels by norm first, the rest by distance among the survivors only."""
    n = group.num_channels
    by_norm = score(model, group, DISTANCE_TO_NORM[criterion], batch)
    norm_first = lowest_channels(group, by_norm, math.floor(count * mix_ratio + _EPS))
    if not norm_first:
        return lowest_channels(group, score(model, group, criterion, batch), count)
    dropped = set(norm_first)
    keep = torch.tensor([j for j in range(n) if j not in dropped], dtype=torch.long)
    full = group_weights(model, group)
    # Distances are measured among the survivors only: the dropped filters no longer pull the
    # survivors' scores (that is the point of the two-stage rule).
    survivors = ChannelTensors(
        full.key,
        len(keep),
        tuple(w[keep.to(w.device)] for w in full.writers),
        tuple(g[keep.to(g.device)] for g in full.norms),
        (),
        None,
    )
    dist = create_criterion(criterion)(survivors).cpu()
    scores = torch.full((n,), -math.inf)  # already dropped channels come first in lowest_channels
    scores[keep] = dist
    return lowest_channels(group, scores, count)


def select_channels(
    model: nn.Module,
    group: ChannelGroup,
    criterion: str,
    count: int,
    *,
    mix_ratio: float | None = None,
    batch: DataBatch | None = None,
) -> list[int]:
    """The `count` lowest-scored channels of `group` in `model` (a valid set for masks and cuts).

    Args:
        model: The model to score (the one `group` was built on, or a copy with its shapes).
        group: A prunable group.
        criterion: A registered criterion name.
        count: How many channels to choose (rounded down to whole grouped-conv offsets).
        mix_ratio: FPGM "mix" (distance criteria only): this share of `count` is chosen by the
            matching norm (`DISTANCE_TO_NORM`) first, the rest by `criterion` computed among the
            surviving channels only. None = pure `criterion`.
        batch: Data for data-driven criteria.

    Example:
        >>> select_channels(model, group, "fpgm", 4, mix_ratio=0.5)  # doctest: +SKIP
        [0, 3, 5, 9]
    """
    if count <= 0:
        return []
    if mix_ratio is not None and criterion in DISTANCE_TO_NORM:
        return _mix_channels(model, group, criterion, count, mix_ratio, batch)
    return lowest_channels(group, score(model, group, criterion, batch), count)
