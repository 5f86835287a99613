"""MFP, Meta-attribute-based Filter Pruning (He, Liu, Zhu, Yang; TNNLS 2022): SFP with a switching criterion.

Every `switch_interval` epochs (at the end of epochs 0, s, 2s, ...) MFP builds one "neighbour"
network per candidate criterion: a copy of the current weights with that criterion's lowest
floor(N * rate) channels of every prunable group zeroed (BN gamma and beta too). A meta-attribute
scores each neighbour (lower wins) and training continues from the best one: its masks are applied
to the live model, which gives exactly the neighbour's weights, and its zeroed filters stay
trainable (soft). On the other scheduled epochs the current criterion's masks are re-applied, as
in SFP; after the last epoch the masked channels are removed physically.

The paper's meta-attribute is not recoverable from public material; prunus makes it pluggable
and ships two interpretations (see docs/methods.md, section 1):

- `loss` (default): mean cross-entropy of the neighbour, in eval mode, on a fixed slice of the
  TRAINING set (its first `holdout_size` images, unaugmented; never the test set). The slice is
  held out of the selection only, not of training.
- `norm-spread`: FPGM's two conditions for norm criteria to be reliable, per prunable group on
  the current weights: the filter L2 norms spread widely (std / mean >= `SPREAD_MIN` = 0.3) and
  the smallest is near zero (min / median <= `NEAR_ZERO` = 0.05). With f the fraction of groups
  meeting both, norm criteria (l1, l2, bn-scale) score 1 - f, distance criteria (fpgm, dist-l1,
  dist-l2) score f, anything else 1; ties go to the earlier candidate.

A user callable `fn(neighbour, context) -> float` (see `MetaContext`) works the same way.

Metrics (prefix `mfp_`): those of SFP, plus `criterion` every epoch, and at every switch
`choice` (the winner), `scores` (every candidate's meta-attribute) and `wins` (how often each
candidate has won so far). If one criterion always wins, MFP is that criterion: `wins` shows it.

Under DDP every rank evaluates the same slice with the same weights; the scores are also
broadcast from rank 0, so every rank makes the same choice even with nondeterministic kernels.

Example:
    >>> from prunus.methods import create_method
    >>> mfp = create_method("mfp", rate=0.4, switch_interval=2, meta_attribute="loss")
    >>> mfp.candidates
    ('l1', 'l2', 'dist-l1', 'dist-l2')
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from prunus.config import check_choice
from prunus.criteria import score
from prunus.data import training_slice_loader
from prunus.engine.method import TrainerView
from prunus.errors import ConfigError
from prunus.evaluation import evaluate
from prunus.methods._pruning import SoftPruningConfig, check_criterion, check_int, rate_at
from prunus.methods._registry import arg, build_config, register_method
from prunus.methods.sfp import SoftFilterPruning
from prunus.registry import Registry
from prunus.structure import ChannelGroup, soft_mask_

__all__ = [
    "DEFAULT_CANDIDATES",
    "META_ATTRIBUTES",
    "MFPConfig",
    "NEAR_ZERO",
    "SPREAD_MIN",
    "MetaAttribute",
    "MetaAttributePruning",
    "MetaContext",
    "holdout_loss",
    "norm_spread",
    "register_meta_attribute",
]

DEFAULT_CANDIDATES = ("l1", "l2", "dist-l1", "dist-l2")
NORM_CRITERIA = ("l1", "l2", "bn-scale")
DISTANCE_CRITERIA = ("fpgm", "dist-l1", "dist-l2")
SPREAD_MIN = 0.3  # norm-spread: std / mean of a group's filter norms counted as "large spread"
NEAR_ZERO = 0.05  # norm-spread: min / median of a group's filter norms counted as "near zero"
HOLDOUT_BATCH = 256  # images per forward pass when the `loss` meta-attribute evaluates a neighbour


@dataclass(frozen=True)
class MetaContext:
    """What a meta-attribute may look at besides the neighbour network.

    Attributes:
        criterion: The candidate criterion that built this neighbour.
        masks: Its zeroed channels per group key.
        model: The live model with the current (unmasked-by-this-candidate) weights; do not edit.
        groups: The prunable groups.
        holdout: Loader over the fixed training slice (unaugmented), batches on the model's device.
        epoch: The 0-based epoch just finished.
    """

    criterion: str
    masks: dict[str, list[int]]
    model: nn.Module
    groups: tuple[ChannelGroup, ...]
    holdout: Any
    epoch: int


#: a meta-attribute: neighbour network and context in, one number out (lower = better neighbour)
MetaAttribute = Callable[[nn.Module, MetaContext], float]

#: named meta-attributes, on the shared `prunus.registry.Registry` (`META_ATTRIBUTES.list()`)
META_ATTRIBUTES: Registry[float] = Registry("meta-attribute")


def register_meta_attribute(name: str, **meta: Any) -> Callable[[MetaAttribute], MetaAttribute]:
    """Decorator: make a meta-attribute selectable by name (`meta_attribute="name"`)."""
    return META_ATTRIBUTES.register(name, **meta)


@register_meta_attribute("loss")
def holdout_loss(neighbour: nn.Module, ctx: MetaContext) -> float:
    """Mean cross-entropy of `neighbour` (eval mode) on the fixed training slice."""
    return float(evaluate(neighbour, ctx.holdout)["loss"])


@register_meta_attribute("norm-spread")
def norm_spread(neighbour: nn.Module, ctx: MetaContext) -> float:
    """FPGM's norm conditions on the current weights (see the module docstring for thresholds)."""
    del neighbour  # a statistic of the current weights, the same for every candidate
    met = 0
    for group in ctx.groups:
        norms = score(ctx.model, group, "l2").double()
        mean, median = float(norms.mean()), float(norms.median())
        spread = float(norms.std(unbiased=False)) / mean if mean > 0 else 0.0
        near_zero = median > 0 and float(norms.min()) / median <= NEAR_ZERO
        met += spread >= SPREAD_MIN and near_zero
    frac = met / max(len(ctx.groups), 1)
    if ctx.criterion in NORM_CRITERIA:
        return 1.0 - frac
    if ctx.criterion in DISTANCE_CRITERIA:
        return frac
    return 1.0


@dataclasses.dataclass(frozen=True)
class MFPConfig(SoftPruningConfig):
    """MFP's arguments: the shared soft-pruning schedule plus the criterion switching (see `MetaAttributePruning`).

    Example:
        >>> MFPConfig(candidates=["l1", "fpgm"]).candidates
        ('l1', 'fpgm')
    """

    candidates: tuple[str, ...] = arg(DEFAULT_CANDIDATES, "criteria to choose from: registered, distinct, >= 1")
    switch_interval: int = arg(2, "epochs between criterion switches (the first at the end of epoch 0)")
    meta_attribute: str | MetaAttribute = arg("loss", "a META_ATTRIBUTES name or fn(neighbour, ctx); lower wins")
    holdout_size: int = arg(1024, "images of the fixed training slice the 'loss' meta-attribute evaluates on")

    def __post_init__(self) -> None:
        candidates = self.candidates
        if isinstance(candidates, str) or not isinstance(candidates, Sequence) or not candidates:
            raise ConfigError(f"candidates must be a non-empty list of criterion names, got {candidates!r}")
        names = tuple(check_criterion(c, "candidates") for c in candidates)
        if len(set(names)) != len(names):
            raise ConfigError(f"candidates must be distinct, got {list(names)}")
        object.__setattr__(self, "candidates", names)
        super().__post_init__()
        check_int("switch_interval", self.switch_interval, 1)
        check_int("holdout_size", self.holdout_size, 1)
        if not callable(self.meta_attribute):
            check_choice("meta_attribute", self.meta_attribute, META_ATTRIBUTES.list())


@register_method("mfp", config=MFPConfig, example={"rate": 0.5, "switch_interval": 1, "holdout_size": 32})
class MetaAttributePruning(SoftFilterPruning):
    """MFP: the SFP loop whose criterion is chosen every `switch_interval` epochs by a meta-attribute.

    Args (the fields of `MFPConfig`, as keywords or as one config):
        rate: Fraction of each prunable group's channels masked, in [0, 1), or a function of the
            0-based epoch.
        candidates: Criterion names to choose from (registered, distinct, at least one).
        switch_interval: Epochs between criterion switches (the first switch is at the end of epoch 0).
        meta_attribute: "loss", "norm-spread" (see `META_ATTRIBUTES`) or a callable
            `fn(neighbour, MetaContext) -> float`; lower wins.
        holdout_size: Images of the fixed training slice the `loss` meta-attribute evaluates on.
        interval, hard, remove_at_end, ignored_layers, filter_fn, round_to: As in `SoftFilterPruning`.

    Raises:
        ConfigError: an argument is out of range or names an unknown criterion or meta-attribute.

    Example:
        >>> prefer_l1 = lambda net, ctx: 0.0 if ctx.criterion == "l1" else 1.0
        >>> MetaAttributePruning(meta_attribute=prefer_l1, switch_interval=3).switch_interval
        3
    """

    config_class = MFPConfig

    def __init__(self, config: MFPConfig | None = None, /, **kwargs: Any) -> None:  # type: ignore[override]
        self.config = build_config(MFPConfig, config, kwargs, f"method {self.name!r}")
        c = self.config
        self._init_schedule(c)
        self.criterion = c.candidates[0]
        self.candidates = c.candidates
        self.switch_interval = c.switch_interval
        self.meta_attribute = c.meta_attribute
        self.holdout_size = c.holdout_size
        self.wins: dict[str, int] = dict.fromkeys(c.candidates, 0)
        self.switches = 0
        self._holdout: Any = None

    def _meta(self) -> MetaAttribute:
        if callable(self.meta_attribute):
            return self.meta_attribute
        return META_ATTRIBUTES.get(self.meta_attribute).factory

    def on_epoch_end(self, trainer: TrainerView) -> None:
        """Switch criterion on switch epochs, else re-apply the current one on SFP's schedule."""
        switch = trainer.epoch % self.switch_interval == 0
        update = switch or self._is_update_epoch(trainer)
        metrics: dict[str, Any] = {"updated": update, "turnover": 0, "regrown": 0}
        if update:
            rate = rate_at(self.rate, trainer.epoch)
            if switch:
                masks, scores = self._switch(trainer, rate)
                metrics.update(choice=self.criterion, scores=scores, wins=dict(self.wins))
            else:
                masks = self._select(trainer, self.criterion, rate)
            metrics.update(self._apply(trainer, masks), rate=rate)
        metrics.update(channels_masked=self.num_masked, criterion=self.criterion, wins=dict(self.wins))
        self._log(trainer, metrics)

    def _switch(self, trainer: TrainerView, rate: float) -> tuple[dict[str, list[int]], dict[str, float]]:
        """Score one neighbour per candidate; adopt the best one's criterion and masks."""
        live = trainer.model
        if self._holdout is None:  # the same images at every switch, on every rank
            self._holdout = training_slice_loader(trainer.data, self.holdout_size, HOLDOUT_BATCH, device=trainer.device)
        plans = {c: self._select(trainer, c, rate) for c in self.candidates}
        state = {k: v.clone() for k, v in live.state_dict().items()}
        neighbour = copy.deepcopy(live)  # one buffer, reset to the current weights for each candidate
        meta = self._meta()
        values = []
        for c in self.candidates:
            neighbour.load_state_dict(state)
            for group in self.groups:
                if plans[c].get(group.key):
                    soft_mask_(neighbour, group, plans[c][group.key])
            ctx = MetaContext(c, plans[c], live, tuple(self.groups), self._holdout, trainer.epoch)
            values.append(float(meta(neighbour, ctx)))
        values = _agree(values, trainer)
        best = min(range(len(values)), key=lambda i: (values[i], i))
        self.criterion = self.candidates[best]
        self.wins[self.criterion] += 1
        self.switches += 1
        return plans[self.criterion], dict(zip(self.candidates, values, strict=True))

    def state_dict(self) -> dict[str, Any]:
        """SFP's state plus the current criterion, the win counts and the switch counter."""
        return {**super().state_dict(), "criterion": self.criterion, "wins": dict(self.wins), "switches": self.switches}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore `state_dict`."""
        super().load_state_dict(state)
        self.criterion = str(state.get("criterion", self.criterion))
        self.wins = {c: int(state.get("wins", {}).get(c, 0)) for c in self.candidates}
        self.switches = int(state.get("switches", 0))


def _agree(values: list[float], trainer: TrainerView) -> list[float]:
    """Rank 0's scores on every rank (identical already unless kernels are nondeterministic)."""
    if getattr(trainer, "world_size", 1) <= 1 or not torch.distributed.is_initialized():
        return values
    t = torch.tensor(values, dtype=torch.float64, device=trainer.device)
    torch.distributed.broadcast(t, src=0)
    return [float(v) for v in t.cpu()]
