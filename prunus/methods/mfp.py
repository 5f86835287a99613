"""MFP, Meta-attribute-based Filter Pruning (He, Liu, Zhu, Yang; TNNLS 2022): SFP with a switching criterion.

Every `switch_interval` epochs (at the end of epochs 0, s, 2s, ...) MFP builds one "neighbour"
network per candidate criterion: a copy of the current weights with that criterion's lowest
floor(N * rate) channels of every prunable group zeroed (BN gamma and beta too), i.e. exactly the
pruned network that candidate proposes. A meta-attribute scores each neighbour (lower wins) and
training continues under the best one's masks (soft, as in SFP: enforced in the forward pass,
masked filters keep learning). On the other scheduled epochs the current criterion's masks are
re-applied; after the last epoch the masked channels are removed physically.

Choosing fairly. The paper (v2 title: "Filter Pruning by Switching to Neighboring CNNs with Good
Attributes") selects the criterion "via a meta-attribute, a property of the neural network at the
current state". The live network has trained under the incumbent criterion's masks, so the
incumbent's neighbour is the live network itself while every other neighbour loses channels the
network relies on and keeps channels it has not used: compared as they stand, the incumbent wins
every switch (issue 13's prototype). Each neighbour therefore gets the same short recovery before
it is scored: its BatchNorm statistics are re-estimated on `recalibration_images` training images
(train-mode forward passes, no gradient; "adaptive BN" candidate evaluation, Li et al., EagleEye,
ECCV 2020, who found it is what makes candidates' pre-fine-tuning accuracy predictive). It removes
the statistics part of the incumbent's advantage; co-adapted weights remain, which the per-switch
logs (`mask_diff`, `choice`, `kept`) let a reader judge.

On an exact tie of the best scores the current criterion is kept (logged in `tie`), else the
earlier candidate wins: identical masks are not a switch.

The paper's meta-attribute is not recoverable from public material; prunus makes it pluggable
and ships two interpretations (see docs/methods.md, section 1):

- `loss` (default): mean cross-entropy of the recalibrated neighbour, in eval mode, on the first
  `holdout_size` images of the VALIDATION split: images held out of training (never the test
  set). A run without a validation split (`val_size=0`) cannot use it and is refused at setup.
- `norm-spread`: FPGM's two conditions for norm criteria to be reliable, per prunable group on
  the current weights: the filter L2 norms spread widely (std / mean >= `SPREAD_MIN` = 0.3) and
  the smallest is near zero (min / median <= `NEAR_ZERO` = 0.05). With f the fraction of groups
  meeting both, norm criteria (l1, l2, bn-scale) score 1 - f, distance criteria (fpgm, dist-l1,
  dist-l2) score f, anything else 1.

A user callable `fn(neighbour, context) -> float` (see `MetaContext`) works the same way.

Metrics (prefix `mfp_`): those of SFP, plus `criterion` every epoch, and at every switch
`choice` (the winner), `kept` (whether it is the criterion already in use), `tie` (the candidates
tied for best, empty when none), `scores` (every candidate's meta-attribute), `mask_diff`
(channels in which each pair of candidates' masks differ, "a|b" -> count), `diff_from_live`
(channels in which each candidate's mask differs from the masks in use) and `wins` (how often each
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

import contextlib
import copy
import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from prunus.config import arg, check_choice
from prunus.criteria import score
from prunus.data import training_slice_loader
from prunus.engine.method import TrainerView
from prunus.errors import ConfigError
from prunus.measure.evaluation import evaluate
from prunus.methods._pruning import SoftPruningConfig, check_criterion, check_int
from prunus.methods._registry import build_config, register_method
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
    "recalibrate_bn_",
    "norm_spread",
    "register_meta_attribute",
]

DEFAULT_CANDIDATES = ("l1", "l2", "dist-l1", "dist-l2")
NORM_CRITERIA = ("l1", "l2", "bn-scale")
DISTANCE_CRITERIA = ("fpgm", "dist-l1", "dist-l2")
SPREAD_MIN = 0.3  # norm-spread: std / mean of a group's filter norms counted as "large spread"
NEAR_ZERO = 0.05  # norm-spread: min / median of a group's filter norms counted as "near zero"
HOLDOUT_BATCH = 256  # images per forward pass when the `loss` meta-attribute evaluates a neighbour
RECALIBRATION_BATCH = 256  # images per train-mode forward pass when a neighbour's BN statistics are re-estimated


@dataclass(frozen=True)
class MetaContext:
    """What a meta-attribute may look at besides the neighbour network.

    Attributes:
        criterion: The candidate criterion that built this neighbour.
        masks: Its zeroed channels per group key.
        model: The live model with the current (unmasked-by-this-candidate) weights; do not edit.
        groups: The prunable groups.
        holdout: Loader over the held-out images (the first `holdout_size` of the validation split,
            unaugmented), batches on the model's device; None without a validation split.
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
    """Mean cross-entropy of `neighbour` (eval mode) on the held-out images."""
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
    holdout_size: int = arg(1024, "validation images (held out of training) the 'loss' meta-attribute evaluates on")
    recalibration_images: int = arg(512, "training images each neighbour's BN statistics are re-estimated on (0 = off)")

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
        check_int("recalibration_images", self.recalibration_images, 0)
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
        holdout_size: Validation images the `loss` meta-attribute evaluates on (the first ones).
        recalibration_images: Training images (the first ones, unaugmented) on which every
            neighbour's BatchNorm statistics are re-estimated before it is scored; 0 = none.
        interval, hard, remove_at_end, ignored_layers, filter_fn, round_to: As in `SoftFilterPruning`.
        widths, keep_macs, keep_params, keep_latency, runtime, latency_batch, global_pruning: Final
            widths per group or one budget instead of `rate`, as in `SoftFilterPruning`; every
            neighbour masks the same number of channels per group, only which ones differ.

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
        self.recalibration_images = c.recalibration_images
        self.wins: dict[str, int] = dict.fromkeys(c.candidates, 0)
        self.switches = 0
        self._holdout: Any = None
        self._recalibration: Any = None

    def setup(self, trainer: TrainerView) -> None:
        """SFP's setup; the `loss` meta-attribute needs images held out of training: the validation split."""
        super().setup(trainer)
        if self.meta_attribute == "loss" and trainer.data.val is None:
            raise ConfigError(
                "mfp meta_attribute='loss' scores neighbours on images held out of training, and this run has "
                "no validation split; set val_size > 0 (CLI: --val-size) or use meta_attribute='norm-spread'"
            )

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
            rate = self._rate_now(trainer.epoch)
            if switch:
                masks, log = self._switch(trainer, rate)
                metrics.update(choice=self.criterion, **log)
            else:
                masks = self._select(trainer, self.criterion, rate)
            metrics.update(self._apply(trainer, masks))
            if rate is not None:
                metrics["rate"] = rate
        metrics["masked_norm"] = self._masked_norm(trainer.model)  # as SFP logs it: are masked filters alive?
        metrics.update(channels_masked=self.num_masked, criterion=self.criterion, wins=dict(self.wins))
        if trainer.epoch == 0:
            metrics.update(self._planned)
        self._log(trainer, metrics)

    def _switch(self, trainer: TrainerView, rate: float | None) -> tuple[dict[str, list[int]], dict[str, Any]]:
        """Score one recalibrated neighbour per candidate; adopt the best one's criterion and masks."""
        live = trainer.model
        if self._holdout is None and trainer.data.val is not None:  # the same images at every switch, every rank
            val = trainer.data.val
            self._holdout = training_slice_loader(val, self.holdout_size, HOLDOUT_BATCH, device=trainer.device)
        if self._recalibration is None and self.recalibration_images > 0:
            n = self.recalibration_images
            self._recalibration = training_slice_loader(trainer.data, n, RECALIBRATION_BATCH, device=trainer.device)
        plans = {c: self._select(trainer, c, rate) for c in self.candidates}
        state = {k: v.clone() for k, v in live.state_dict().items()}
        paused = self._forward_mask.paused() if self._forward_mask is not None else contextlib.nullcontext()
        with paused:  # a hook-free copy: each neighbour is exactly its candidate's pruned network
            neighbour = copy.deepcopy(live)  # one buffer, reset to the current weights for each candidate
        meta = self._meta()
        values = []
        for c in self.candidates:
            neighbour.load_state_dict(state)
            for group in self.groups:
                if plans[c].get(group.key):
                    soft_mask_(neighbour, group, plans[c][group.key])
            if self._recalibration is not None:
                recalibrate_bn_(neighbour, self._recalibration)
            ctx = MetaContext(c, plans[c], live, tuple(self.groups), self._holdout, trainer.epoch)
            values.append(float(meta(neighbour, ctx)))
        values = _agree(values, trainer)
        best = min(values)
        tied = [c for c, v in zip(self.candidates, values, strict=True) if v == best]
        previous = self.criterion
        self.criterion = previous if previous in tied else tied[0]  # identical scores are not a reason to switch
        self.wins[self.criterion] += 1
        self.switches += 1
        names = self.candidates
        pairs = [(a, b) for i, a in enumerate(names) for b in names[i + 1 :]]
        log = {
            "scores": dict(zip(names, values, strict=True)),
            "kept": self.criterion == previous,
            "tie": tied if len(tied) > 1 else [],
            "mask_diff": {f"{a}|{b}": _mask_diff(plans[a], plans[b]) for a, b in pairs},
            "diff_from_live": {c: _mask_diff(plans[c], self.masks) for c in names},
        }
        return plans[self.criterion], log

    def state_dict(self) -> dict[str, Any]:
        """SFP's state plus the current criterion, the win counts and the switch counter."""
        return {**super().state_dict(), "criterion": self.criterion, "wins": dict(self.wins), "switches": self.switches}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore `state_dict`."""
        super().load_state_dict(state)
        self.criterion = str(state.get("criterion", self.criterion))
        self.wins = {c: int(state.get("wins", {}).get(c, 0)) for c in self.candidates}
        self.switches = int(state.get("switches", 0))


def _mask_diff(a: dict[str, list[int]], b: dict[str, list[int]]) -> int:
    """Channels masked by exactly one of two mask sets, over all groups."""
    return sum(len(set(a.get(k, [])) ^ set(b.get(k, []))) for k in set(a) | set(b))


@torch.no_grad()
def recalibrate_bn_(model: nn.Module, loader: Any) -> nn.Module:
    """Re-estimate every BatchNorm's running statistics on `loader` (train-mode forward, no gradient).

    The statistics become the plain average over the batches (momentum None while it runs); the
    model's train/eval mode and the BN momenta are restored. Returns `model`.
    """
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    if not bns:
        return model
    was_training = model.training
    momenta = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    try:
        for x, _ in loader:
            model(x)
    finally:
        for m, mom in zip(bns, momenta, strict=True):
            m.momentum = mom
        model.train(was_training)
    return model


def _agree(values: list[float], trainer: TrainerView) -> list[float]:
    """Rank 0's scores on every rank (identical already unless kernels are nondeterministic)."""
    if getattr(trainer, "world_size", 1) <= 1 or not torch.distributed.is_initialized():
        return values
    t = torch.tensor(values, dtype=torch.float64, device=trainer.device)
    torch.distributed.broadcast(t, src=0)
    return [float(v) for v in t.cpu()]
