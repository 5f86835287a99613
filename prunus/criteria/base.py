"""The criterion contract, its registry and the one helper that applies a criterion to a group.

Example:
    >>> import torch
    >>> from prunus.structure import ChannelTensors
    >>> w = torch.tensor([[3.0, 4.0], [0.0, 1.0], [1.0, 1.0]])
    >>> create_criterion("l2")(ChannelTensors("conv", 3, writers=(w,), norms=()))
    tensor([5.0000, 1.0000, 1.4142])
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from prunus.config import check_choice
from prunus.errors import ConfigError
from prunus.registry import Registry
from prunus.structure import ChannelGroup, ChannelTensors, group_weights

__all__ = [
    "CRITERIA",
    "REDUCTIONS",
    "Criterion",
    "DataBatch",
    "WeightCriterion",
    "create_criterion",
    "get_criterion",
    "list_criteria",
    "register_criterion",
    "score",
]

CRITERIA: Registry[Criterion] = Registry("criterion")

#: how per-tensor scores of one group (several writers, several BNs) become one score per channel
REDUCTIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "mean": lambda s: s.mean(0),
    "sum": lambda s: s.sum(0),
    "max": lambda s: s.max(0).values,
    "min": lambda s: s.min(0).values,
}


@dataclass(frozen=True)
class DataBatch:
    """A batch for data-driven criteria: the model to run, inputs, targets and the loss."""

    model: nn.Module
    inputs: torch.Tensor
    targets: torch.Tensor
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = nn.functional.cross_entropy


class Criterion:
    """A criterion scores the channels of one coupled group: larger = keep.

    Contract: a pure, stateless callable `criterion(tensors, batch=None) -> Tensor` that takes the
    per-channel tensors of one group (`ChannelTensors`, see `prunus.structure.group_weights`) and,
    for data-driven criteria (`needs_data`), a `DataBatch`, and returns a 1-D float tensor with one
    score per channel. It runs under `torch.no_grad`, and never edits the model: not its weights,
    not its gradients, not its BN statistics, not its train/eval mode. A group has several tensors
    (every writer of a residual stream, every BN); each gets its own scores, which `reduce`
    combines ("mean" by default, or "sum", "max", "min").

    Subclasses implement `per_tensor` (or `score_matrix`, for `WeightCriterion`) and register
    themselves with `@register_criterion("name")`.
    """

    name: ClassVar[str] = "criterion"
    #: True when the criterion needs a `DataBatch` (activations and gradients)
    needs_data: ClassVar[bool] = False

    def __init__(self, reduce: str = "mean") -> None:
        check_choice("reduce", reduce, REDUCTIONS)
        self.reduce = reduce

    def per_tensor(self, tensors: ChannelTensors, batch: DataBatch | None) -> list[torch.Tensor]:
        """One (C,) score vector per tensor of the group."""
        raise NotImplementedError

    @torch.no_grad()
    def __call__(self, tensors: ChannelTensors, batch: DataBatch | None = None) -> torch.Tensor:
        if self.needs_data and batch is None:
            raise ConfigError(f"criterion {self.name!r} needs a data batch (inputs, targets and the model)")
        scores = self.per_tensor(tensors, batch)
        if not scores:
            raise ConfigError(f"criterion {self.name!r} finds nothing to score in group {tensors.key!r}")
        stacked = torch.stack([s.float() for s in scores])
        return REDUCTIONS[self.reduce](stacked)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(reduce={self.reduce!r})"


class WeightCriterion(Criterion):
    """A criterion computed from weight rows alone: each (C, D) matrix gives C scores.

    Args:
        reduce: How the scores of several tensors combine.
        consumers: Also score the consumers' input slices, not only the writers' rows.
    """

    def __init__(self, reduce: str = "mean", consumers: bool = False) -> None:
        super().__init__(reduce)
        self.consumers = consumers

    def score_matrix(self, w: torch.Tensor) -> torch.Tensor:
        """Scores (C,) of a (C, D) matrix whose row j is channel j's flattened filter."""
        raise NotImplementedError

    def per_tensor(self, tensors: ChannelTensors, batch: DataBatch | None) -> list[torch.Tensor]:
        mats = list(tensors.writers) + (list(tensors.consumers) if self.consumers else [])
        return [self.score_matrix(w.float()) for w in mats]


def register_criterion(name: str, **meta: Any) -> Callable[[type[Criterion]], type[Criterion]]:
    """Class decorator: register a `Criterion` subclass under `name` (also sets its `name`)."""

    def decorator(cls: type[Criterion]) -> type[Criterion]:
        if "name" not in cls.__dict__:
            cls.name = name
        summary = (cls.__doc__ or "").strip().split("\n", 1)[0]
        CRITERIA.register(name, summary=summary, **meta)(cls)
        return cls

    return decorator


def create_criterion(name: str, **kwargs: Any) -> Criterion:
    """Build the criterion registered as `name`; unknown names raise `ConfigError` listing the choices.

    Example:
        >>> create_criterion("fpgm", reduce="max")
        DistanceCriterion(reduce='max')
    """
    return CRITERIA.create(name, **kwargs)


def get_criterion(name: str) -> type[Criterion]:
    """The class registered as `name` (raises `ConfigError` listing the choices)."""
    return CRITERIA.get(name).factory


def list_criteria(pattern: str = "*") -> list[str]:
    """Sorted names of registered criteria matching a shell-style pattern."""
    return CRITERIA.list(pattern)


def score(
    model: nn.Module, group: ChannelGroup, criterion: Criterion | str, batch: DataBatch | None = None
) -> torch.Tensor:
    """Score the channels of `group` in `model` with `criterion` (a name or an instance).

    Example:
        >>> scores = score(model, group, "l2")  # doctest: +SKIP
        >>> scores.shape == (group.num_channels,)  # doctest: +SKIP
        True
    """
    crit = create_criterion(criterion) if isinstance(criterion, str) else criterion
    tensors = group_weights(model, group, consumers=bool(getattr(crit, "consumers", False)))
    return crit(tensors, batch)
