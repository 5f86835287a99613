"""Weight Evolution (Lin et al., ACM MM 2021) as a Trainer plug-in: method `we`.

After every epoch but the last, weak conv filters and BN channels are reactivated by crossover
with strong ones (methods.md section 3; the tensor work is in `_evolution.py`). As in the
reference repository (train -> test -> evolve), each epoch is evaluated BEFORE its evolution:
the evolution after epoch e runs at the start of epoch e + 1 (with epoch e's ratios), so every
recorded accuracy, the checkpoint and the final model are pre-evolution, and nothing is evolved
after the last epoch (the reference's last evolution is never evaluated). The global ratios follow
the reference's phase/sigmoid schedule with phases at the LR-step milestones of a `step`
schedule. A cosine (or constant) schedule has no LR steps, so it is ONE phase over the whole
run: the ratio rises from r/2 to about r with temperature epochs/4 (the reference's 15 epochs
for its 60-epoch phases). Restarting phases at arbitrary points of a cosine decay would
re-raise the ratio when the learning rate is already small, which the reference never does;
pass `phases` to choose other boundaries.

Every Conv1d/2d/3d and groups=1 ConvTranspose takes part (a transposed conv's filters are its
weight's columns), and every affine BatchNorm1d/2d/3d; a model with none of those convs is refused.
Linear layers, conv biases and BN running statistics are never touched. The optimizer state
is left alone like the reference, unless `reset_momentum=True`, which zeroes the optimizer
state rows (momentum, Adam moments) of every evolved filter / BN entry so old momentum cannot
pull an evolved row back.

`mode` chooses the crossover formula ("paper", the default, or "code", the repository's);
`whole_filter` which conv filters are blended whole instead ("kernel-height", the repository's
rule, is the default in both modes: methods.md section 3 gives the reason). Selection (threshold
sorted(scores)[int(n r)], starvation counters, pairing) is the repository's in both modes.

Metrics (prefix `we_`), in the record of every epoch after the first (they describe the
evolution applied at its start, after the previous epoch was evaluated): `filters`, `slices`,
`bn_channels` evolved, `forced` (starvation-counter evolutions), `ratio_conv` / `ratio_bn` /
`ratio_bias` used.

Example:
    >>> from prunus.methods import create_method
    >>> we = create_method("we", mode="code", ratio_conv=0.3)
    >>> we.config.mode, we.config.ratio_conv
    ('code', 0.3)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from prunus.config import Config, check_choice, check_range
from prunus.engine.method import Method
from prunus.errors import ConfigError
from prunus.methods._evolution import CROSSOVER_MODES, WHOLE_FILTER_RULES, evolution_ratio, evolve_, phase_starts
from prunus.methods._filters import editable_batchnorms, editable_convs, filter_dim
from prunus.methods._registry import build_config, register_method
from prunus.structure.masks import reset_optimizer_rows

__all__ = ["WeightEvolution", "WeightEvolutionConfig"]


@dataclass(frozen=True)
class WeightEvolutionConfig(Config):
    """Weight Evolution settings (reference defaults)."""

    ratio_conv: float = 0.2  # base quantile of pooled conv filter scores
    ratio_bn: float = 0.05  # base quantile of pooled |gamma|
    ratio_bias: float = 0.05  # base quantile of pooled |beta|
    lam: float = 0.1  # local selection: s <= lam * layer max
    mode: str = "paper"  # crossover rule: "paper" (default) or "code" (the reference repository)
    whole_filter: str = "kernel-height"  # filters blended whole: "kernel-height" (1x1; the repository) or "one-input"
    phases: tuple[int, ...] | None = None  # first epochs of the phases; None = 0 + the step milestones
    reset_momentum: bool = False  # zero the optimizer-state rows of evolved filters

    def __post_init__(self) -> None:
        for name in ("ratio_conv", "ratio_bn", "ratio_bias"):
            check_range(name, getattr(self, name), low=0.0, high=1.0)
        check_range("lam", self.lam, low=0.0, high=1.0)
        check_choice("mode", self.mode, CROSSOVER_MODES)
        check_choice("whole_filter", self.whole_filter, WHOLE_FILTER_RULES)
        if not isinstance(self.reset_momentum, bool):
            raise ConfigError(f"reset_momentum must be true or false, got {self.reset_momentum!r}")
        if self.phases is not None:
            if isinstance(self.phases, (str, bytes)) or not isinstance(self.phases, (list, tuple)):
                raise ConfigError(f"phases must be a list of epochs, got {self.phases!r}")
            p = list(self.phases)
            object.__setattr__(self, "phases", tuple(p))
            if not p or p[0] != 0 or p != sorted(set(p)) or any(not isinstance(e, int) for e in p):
                raise ConfigError(f"phases must be increasing distinct epochs starting at 0, got {p}")


@register_method("we", config=WeightEvolutionConfig, example={"ratio_conv": 0.2, "ratio_bn": 0.05})
class WeightEvolution(Method):
    """Weight Evolution: reactivate weak filters' elements by crossover with strong filters.

    Args: see `WeightEvolutionConfig` (same names).

    Raises:
        ConfigError: a ratio outside [0, 1], an unknown mode or whole-filter rule, bad phases.
    """

    config_class = WeightEvolutionConfig

    def __init__(self, config: WeightEvolutionConfig | None = None, /, **kwargs: Any) -> None:
        self.config = build_config(WeightEvolutionConfig, config, kwargs, "method 'we'")
        self.counters: dict[str, int] = {"conv": 0, "gamma": 0, "beta": 0}

    def setup(self, trainer: Any) -> None:
        """Refuse a model with no filter WE can evolve, rather than train it with WE silently doing nothing."""
        if not editable_convs(trainer.model):
            raise ConfigError(
                "method 'we': the model has no conv layer whose filters Weight Evolution can evolve "
                "(Conv1d/2d/3d or a groups=1 ConvTranspose; grouped transposed and weight-normed convs are left out)"
            )

    def _phases(self, trainer: Any) -> list[int]:
        if self.config.phases is not None:
            return list(self.config.phases)
        train = trainer.config
        milestones = train.milestones if train.schedule == "step" else ()
        return phase_starts(train.epochs, milestones)

    def on_epoch_start(self, trainer: Any) -> None:
        """Evolve once with the previous epoch's ratios (that epoch is evaluated and saved by now); log the counts."""
        if trainer.epoch == 0:
            return
        cfg, epoch = self.config, trainer.epoch - 1
        phases, epochs = self._phases(trainer), trainer.config.epochs
        ratios = tuple(
            evolution_ratio(epoch, r, phases, epochs) for r in (cfg.ratio_conv, cfg.ratio_bn, cfg.ratio_bias)
        )
        tracked = _evolvable(trainer.model) if cfg.reset_momentum else []
        before = [t.detach().clone() for t, _ in tracked]
        stats = evolve_(
            trainer.model, ratios, lam=cfg.lam, mode=cfg.mode, counters=self.counters, whole=cfg.whole_filter
        )
        if cfg.reset_momentum:
            _reset_changed_rows(trainer.optimizer, tracked, before)
        trainer.log_metrics(
            {
                "we_filters": stats.filters,
                "we_slices": stats.slices,
                "we_bn_channels": stats.bn_channels,
                "we_forced": stats.forced,
                "we_ratio_conv": ratios[0],
                "we_ratio_bn": ratios[1],
                "we_ratio_bias": ratios[2],
            }
        )

    def state_dict(self) -> dict[str, Any]:
        return {"counters": dict(self.counters)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.counters = {k: int(v) for k, v in state["counters"].items()}


def _evolvable(model: nn.Module) -> list[tuple[torch.Tensor, int]]:
    """The tensors `evolve_` edits, each with the dim its rows (filters, BN channels) lie on."""
    out = [(m.weight, filter_dim(m)) for m in editable_convs(model)]
    for m in editable_batchnorms(model):
        out.extend(((m.weight, 0), (m.bias, 0)))
    return out


@torch.no_grad()
def _reset_changed_rows(
    optimizer: torch.optim.Optimizer, params: list[tuple[torch.Tensor, int]], before: list[torch.Tensor]
) -> None:
    """Zero every same-shaped optimizer state tensor (momentum, Adam moments) on the rows that changed
    (rows along each tensor's own dim: a transposed conv's filters are its weight's columns)."""
    for (p, dim), old in zip(params, before):
        rows = (p.detach() != old).movedim(dim, 0).reshape(p.shape[dim], -1).any(1)
        if not rows.any():
            continue
        reset_optimizer_rows(optimizer, p, rows.nonzero().flatten(), dim=dim)
