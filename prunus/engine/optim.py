"""Optimizer construction: SGD (nesterov) or AdamW, with per-tensor weight-decay exemptions."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from prunus.engine.config import TrainConfig
from prunus.structure.masks import reset_optimizer_rows as reset_optimizer_rows  # re-exported: methods' hook

__all__ = ["build_optimizer", "exempt_from_weight_decay", "reset_optimizer_rows"]


def build_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """One param group with the configured weight decay; methods split it later if needed.

    Example:
        >>> opt = build_optimizer(nn.Linear(2, 2), TrainConfig())
        >>> type(opt).__name__, opt.param_groups[0]["nesterov"]
        ('SGD', True)
    """
    params = [p for p in model.parameters() if p.requires_grad]
    if config.optimizer == "adamw":
        opt: torch.optim.Optimizer = torch.optim.AdamW(
            params, lr=config.lr, betas=(config.momentum, 0.999), weight_decay=config.weight_decay
        )
    else:
        opt = torch.optim.SGD(
            params,
            lr=config.lr,
            momentum=config.momentum,
            nesterov=config.nesterov and config.momentum > 0,
            weight_decay=config.weight_decay,
        )
    for group in opt.param_groups:
        group["base_lr"] = config.lr
    return opt


def exempt_from_weight_decay(optimizer: torch.optim.Optimizer, params: Iterable[nn.Parameter]) -> int:
    """Move `params` into a param group with weight_decay=0 (C-SGD applies decay itself).

    Must be called before the first step (optimizer state is keyed by parameter, so moving a
    parameter between groups is safe then). Returns how many parameters were moved.
    """
    targets = {id(p) for p in params}
    moved: list[nn.Parameter] = []
    template = None
    for group in optimizer.param_groups:
        keep = [p for p in group["params"] if id(p) not in targets]
        moved += [p for p in group["params"] if id(p) in targets]
        if len(keep) != len(group["params"]):
            template = group
        group["params"] = keep
    if moved and template is not None:
        options = {k: v for k, v in template.items() if k != "params"}
        options["weight_decay"] = 0.0
        optimizer.add_param_group({"params": moved, **options})
    optimizer.param_groups[:] = [g for g in optimizer.param_groups if g["params"]]
    return len(moved)
