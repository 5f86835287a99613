"""Soft Filter Pruning (He et al., IJCAI 2018) and FPGM (He et al., CVPR 2019) as Trainer plug-ins.

At the end of every `interval` epochs and at the last epoch, every prunable coupled group gets
its floor(N * rate) lowest-scored channels masked.

Soft (default): the mask is enforced in the forward pass where the channel is READ
(`prunus.structure.ForwardMask`): the network computes exactly the pruned one, while the masked
filters keep their weights and receive, straight-through, the gradient they would get if alive
(their input detached, so nothing leaks upstream). They keep learning, their scores stay
meaningful, and a filter that now outscores a live one escapes the next mask ("turnover"). Only
the final mask (last epoch) zeroes weights: conv rows, biases, depthwise rows and BN gamma AND
beta (`soft_mask_`). Zeroing at every re-selection instead, as the reference code did, gives a
masked channel behind a ReLU exactly zero gradient once its BN gamma and beta are zero (needed for
compact == masked): nothing ever regrew and soft was hard (issue 13: 0 of 81 channels back).

Hard (`hard=True`, what the FPGM reference code did): masked weights, BN gamma/beta, their
gradients and the optimizer's momentum are zeroed every step, so they stay exactly zero. After
the last epoch the masked channels are removed physically (`remove_at_end`); the pruning history
lets `prunus.save`/`prunus.load` rebuild the compact shapes.

FPGM is the same loop with the `fpgm` criterion; `mix_ratio` gives FPGM's "mix" variant.

Metrics (prefix = the method name, `sfp_` or `fpgm_`), every epoch: `channels_masked` (total
now masked), `updated` (masks recomputed this epoch), `turnover` (channels masked last time that
are not masked now: they came back), `regrown` (channels masked last time whose filter L2 norm is
now at least `REGROW_THRESHOLD` = 0.1 of their group's median filter norm, i.e. alive, not
decayed to zero), `masked_norm` (median over masked channels of their filter norm divided by
their group's median; 0 in hard mode), `rate`, `criterion`; after removal: `params`, `macs`,
`params_dense`, `macs_dense`, `channels_removed`.

Budgets: instead of `rate`, `keep_macs` / `keep_params` / `keep_latency` (fraction KEPT) are
resolved at setup into per-group widths by `prunus.pruning.plan_widths`; `widths` overrides the
rate per group. Logged with epoch 0: `planned_macs_ratio`, `planned_params_ratio` (and
`planned_latency_ratio`, measured).

Example:
    >>> from prunus.methods import create_method
    >>> create_method("sfp", keep_macs=0.5).config.rate is None  # widths planned at setup
    True
    >>> sfp = create_method("sfp", rate=0.4, criterion="l2", interval=1)
    >>> sfp.name, sfp.criterion
    ('sfp', 'l2')
    >>> Trainer(model, data, TrainConfig(epochs=10), methods=[sfp]).fit()  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import nn

from prunus.config import arg, check_range
from prunus.criteria import DataBatch
from prunus.data import training_slice
from prunus.engine.method import Method, TrainerView
from prunus.errors import ConfigError
from prunus.measure import count
from prunus.methods._budget import plan_budget, resolve_widths
from prunus.methods._pruning import (
    DISTANCE_TO_NORM,
    SoftPruningConfig,
    check_criterion,
    criterion_needs_data,
    example_inputs,
    num_to_prune,
    prunable_groups,
    rate_at,
    select_channels,
)
from prunus.methods._registry import build_config, register_method
from prunus.pruning import WidthPlan
from prunus.pruning.widths import resolve_round_to
from prunus.structure import ChannelGroup, ForwardMask, HardMask, group_weights, remove_, soft_mask_

__all__ = ["FPGM", "FPGMConfig", "SFPConfig", "SoftFilterPruning"]

# images of the fixed training slice that data-driven criteria (taylor) score on
CRITERION_BATCH = 256
# a masked filter counts as regrown when its norm is at least this share of its group's median
# norm (issue 13 measured dead masked filters at 0.08% of the median)
REGROW_THRESHOLD = 0.1


@dataclasses.dataclass(frozen=True)
class SFPConfig(SoftPruningConfig):
    """SFP's arguments: the shared soft-pruning schedule plus the criterion (see `SoftFilterPruning`).

    Example:
        >>> SFPConfig(rate=0.3).criterion
        'l2'
        >>> SFPConfig(interval=0)
        Traceback (most recent call last):
        ...
        prunus.errors.ConfigError: interval=0 is not valid; expected an integer >= 1
    """

    criterion: str = arg("l2", "registered criterion name (prunus.criteria.list_criteria())")
    mix_ratio: float | None = arg(None, "FPGM 'mix' (distance criteria): share chosen by norm first; None = pure")

    def __post_init__(self) -> None:
        super().__post_init__()
        check_criterion(self.criterion)
        if self.mix_ratio is not None:
            check_range("mix_ratio", self.mix_ratio, low=0.0, high=1.0)
            if self.criterion not in DISTANCE_TO_NORM:
                raise ConfigError(
                    f"mix_ratio applies to distance criteria only ({', '.join(DISTANCE_TO_NORM)}), "
                    f"not criterion={self.criterion!r}"
                )
            object.__setattr__(self, "mix_ratio", float(self.mix_ratio))


@dataclasses.dataclass(frozen=True)
class FPGMConfig(SFPConfig):
    """FPGM's arguments: SFP's, with the geometric-median criterion by default."""

    criterion: str = arg("fpgm", "registered criterion name (prunus.criteria.list_criteria())")


@register_method("sfp", config=SFPConfig, example={"rate": 0.5, "criterion": "l1"})
class SoftFilterPruning(Method):
    """Soft Filter Pruning: zero the lowest-scored channels every `interval` epochs, let them regrow.

    Args:
        rate: Fraction of each prunable group's channels masked, in [0, 1), or a function of the
            0-based epoch just finished returning one (e.g. a ramp).
        criterion: A registered criterion name (`prunus.criteria.list_criteria()`); data-driven
            ones (taylor) score on a fixed, unaugmented slice of the training set.
        interval: Masks are recomputed at the end of every `interval` epochs and of the last one.
        hard: Also keep the masked weights, gradients and momentum at zero every step.
        remove_at_end: Physically remove the masked channels after the last epoch.
        ignored_layers: Module names whose output channels are never masked (shorthand for a filter_fn).
        filter_fn: `filter_fn(module, name) -> bool` (Python only), False keeps the module's output
            channels; default (neither given): all but the model's stem conv and classifier.
        mix_ratio: FPGM "mix", distance criteria only: this share of the channels to mask
            (in [0, 1]) is chosen by the matching norm (fpgm/dist-l2 -> l2, dist-l1 -> l1), the
            rest by distance computed among the surviving channels only. None = pure criterion.
        round_to: Fewer channels are masked so every final width is a multiple of this (or the
            full width), as in `prunus.prune`.
        widths: Per-group override of `rate`: group key -> ratio KEPT (float, in (0, 1]) or channel
            count (int), as C-SGD's `widths`; an unknown key fails at setup, listing the groups.
        keep_macs, keep_params, keep_latency: A budget instead of `rate` (exactly one of the
            two ways): the fraction of the dense model's MACs / parameters / latency KEPT, in
            (0, 1]. Resolved once at setup, on the initial model, into per-group channel counts
            by `prunus.pruning.plan_widths` (the search `prunus.prune` runs); the counts are part
            of the method's state, so a resumed run keeps them. The masks then keep exactly those
            counts, so the removed model meets the budget.
        runtime, latency_batch: Where a `keep_latency` budget is planned and measured ("onnxruntime" or
            "torch"; batch 64), with the run's `threads`.
        global_pruning: A budget's channels are ranked across groups (l1) instead of one uniform
            rate, as `prunus.prune(global_pruning=True)`.

    The arguments are the fields of `SFPConfig`; pass them as keywords or as one config.

    Raises:
        ConfigError: an argument is out of range or names an unknown criterion.

    Example:
        >>> SoftFilterPruning(rate=0.3, hard=True).hard
        True
    """

    config_class = SFPConfig

    def __init__(self, config: SFPConfig | None = None, /, **kwargs: Any) -> None:
        self.config = build_config(type(self).config_class, config, kwargs, f"method {self.name!r}")
        self._init_schedule(self.config)
        self.criterion = self.config.criterion
        self.mix_ratio = self.config.mix_ratio

    def _init_schedule(self, c: SoftPruningConfig) -> None:
        """The shared arguments as attributes, and empty run state (subclasses call it too)."""
        self.rate = c.rate
        self.interval = c.interval
        self.hard = c.hard
        self.remove_at_end = c.remove_at_end
        self.ignored_layers = list(c.ignored_layers) if c.ignored_layers is not None else None
        self.filter_fn = c.filter_fn
        self.round_to = resolve_round_to(c.round_to)
        self.mix_ratio: float | None = None
        self.budget = c.budget
        #: group key -> channels kept at the end, from `widths` or the budget (resolved at setup,
        #: part of the state); groups not listed follow `rate`
        self.kept: dict[str, int] = {}
        #: the budget's `prunus.pruning.WidthPlan` (on the rank that planned it), else None
        self.plan: WidthPlan | None = None
        self._planned: dict[str, float] = {}
        # run state (see state_dict)
        self.groups: list[ChannelGroup] = []
        self.masks: dict[str, list[int]] = {}
        self.updates = 0  # how many times the masks were recomputed
        self.removed = False
        self._hard_mask: HardMask | None = None
        self._forward_mask: ForwardMask | None = None
        self.final_applied = False  # the last-epoch mask zeroed the weights (soft mode)
        self._model: nn.Module | None = None
        self._batch: tuple[torch.Tensor, torch.Tensor] | None = None

    # ------------------------------------------------------------------------------------ hooks
    def setup(self, trainer: TrainerView) -> None:
        """Find the coupled groups of the model once (shapes do not change until `on_fit_end`)."""
        inputs = example_inputs(trainer.data.input_shape, trainer.device)
        self.groups = prunable_groups(trainer.model, inputs, self.ignored_layers, self.filter_fn)
        self._model = trainer.model
        self._resolve_kept(trainer, inputs)
        if self.hard:
            self._hard_mask = HardMask(self.groups)
        else:
            self._forward_mask = ForwardMask(self.groups)

    def _resolve_kept(self, trainer: TrainerView, inputs: torch.Tensor) -> None:
        """Per-group final widths from `widths` or the budget, once, on the initial model.

        A resumed run re-plans here on its fresh model, then `load_state_dict` restores the widths the
        run started with (a latency plan is measured, so it need not come out the same twice).
        """
        c = self.config
        keys = [g.key for g in self.groups]
        if self.budget is not None:
            self.kept, self.plan = plan_budget(
                trainer.model,
                inputs,
                c,
                keys=keys,
                ignored_layers=self.ignored_layers,
                filter_fn=self.filter_fn,
                threads=getattr(trainer.config, "threads", None),
                device=trainer.device,
            )
            if self.plan is not None:  # logged with epoch 0 (the trainer clears what setup logs)
                p = self.plan
                self._planned = {"planned_macs_ratio": p.macs_ratio, "planned_params_ratio": p.params_ratio}
                if p.latency_ratio is not None:
                    self._planned["planned_latency_ratio"] = p.latency_ratio
        elif c.widths:
            self.kept = resolve_widths(f"{self.name}.widths", c.widths, self.groups, self.round_to)

    def _num_masked(self, group: ChannelGroup, rate: float | None) -> int:
        """Channels of `group` to mask: its resolved width if it has one, else floor(N * rate) (rounded)."""
        if group.key in self.kept:
            return group.num_channels - self.kept[group.key]
        if rate is None:  # a budget covers every group; a group without a width would be a planning bug
            raise ConfigError(f"{self.name}: no width planned for group {group.key!r}")
        return num_to_prune(group.num_channels, rate, self.round_to, group.blocks, group.min_channels)

    def _rate_now(self, epoch: int) -> float | None:
        """The rate for `epoch`, or None under a budget (every group has its width)."""
        return None if self.rate is None else rate_at(self.rate, epoch)

    def after_backward(self, trainer: TrainerView) -> None:
        """Hard variant: zero masked weights, gradients and momentum so the step leaves them at 0."""
        if self._hard_mask is not None and self.masks:
            self._hard_mask.apply_(trainer.model, trainer.optimizer)

    def on_epoch_end(self, trainer: TrainerView) -> None:
        """Recompute and apply the masks on the scheduled epochs; log what happened."""
        update = self._is_update_epoch(trainer)
        metrics: dict[str, Any] = {"updated": update, "turnover": 0, "regrown": 0}
        if update:
            rate = self._rate_now(trainer.epoch)
            masks = self._select(trainer, self.criterion, rate)
            metrics.update(self._apply(trainer, masks))
            if rate is not None:
                metrics["rate"] = rate
        metrics["masked_norm"] = self._masked_norm(trainer.model)
        metrics.update(channels_masked=self.num_masked, criterion=self.criterion)
        if trainer.epoch == 0:
            metrics.update(self._planned)
        self._log(trainer, metrics)

    def on_fit_end(self, trainer: TrainerView) -> None:
        """Remove the masked channels physically and log the achieved params and MACs."""
        if self._forward_mask is not None:
            self._forward_mask.detach()  # removal changes shapes; the hooks' positions would be stale
        if not self.remove_at_end or self.removed:
            return
        model: nn.Module = trainer.model
        shape = (1, *trainer.data.input_shape)
        dense = count(model, shape)
        removed = 0
        for group in self.groups:
            idxs = self.masks.get(group.key)
            if idxs:
                remove_(model, group, idxs)
                removed += len(idxs)
        self.masks = {}
        self.removed = True
        if self._hard_mask is not None:
            self._hard_mask.clear()
        # remove_ replaced the cut parameters: an optimizer over the old ones would be a trap
        trainer.rebuild_optimizer()
        pruned = count(model, shape)
        self._log(
            trainer,
            {
                "channels_removed": removed,
                "params_dense": dense.params,
                "params": pruned.params,
                "macs_dense": dense.macs,
                "macs": pruned.macs,
            },
        )

    def state_dict(self) -> dict[str, Any]:
        """Masks (lists of ints per group key), the resolved widths and counters: enough to resume exactly."""
        state: dict[str, Any] = {
            "masks": {k: list(v) for k, v in self.masks.items()},
            "updates": self.updates,
            "removed": self.removed,
            "final_applied": self.final_applied,
        }
        if self.kept:  # widths from `widths` or a budget: a resumed run must not re-plan them
            state["widths"] = dict(self.kept)
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore `state_dict`'s masks (also into the hard mask) and counters."""
        self.masks = {str(k): [int(i) for i in v] for k, v in state.get("masks", {}).items()}
        self.updates = int(state.get("updates", 0))
        self.removed = bool(state.get("removed", False))
        self.final_applied = bool(state.get("final_applied", False))
        if "widths" in state:  # the widths the run started with, not a re-plan on this run's fresh model
            self.kept = {str(k): int(v) for k, v in state["widths"].items()}
        if self._hard_mask is not None:
            self._hard_mask.load_state_dict({"masks": self.masks})
        self._sync_forward_mask()

    # -------------------------------------------------------------------------------- internals
    @property
    def num_masked(self) -> int:
        """Channels currently masked, over all groups."""
        return sum(len(v) for v in self.masks.values())

    def _is_update_epoch(self, trainer: TrainerView) -> bool:
        done = trainer.epoch + 1  # epochs finished, this one included
        return done % self.interval == 0 or done == trainer.config.epochs

    def _log(self, trainer: TrainerView, metrics: dict[str, Any]) -> None:
        trainer.log_metrics({f"{self.name}_{k}": v for k, v in metrics.items()})

    def _data_batch(self, trainer: TrainerView, criterion: str) -> DataBatch | None:
        if not criterion_needs_data(criterion):
            return None
        if self._batch is None:  # the same fixed images every time, on every rank
            self._batch = training_slice(trainer.data, CRITERION_BATCH, device=trainer.device)
        return DataBatch(trainer.model, *self._batch)

    def _select(
        self, trainer: TrainerView, criterion: str, rate: float | None, model: nn.Module | None = None
    ) -> dict[str, list[int]]:
        """Channels to mask per group key, scored on `model` (default: the live model)."""
        model = trainer.model if model is None else model
        batch = self._data_batch(trainer, criterion)
        return {
            g.key: select_channels(
                model,
                g,
                criterion,
                self._num_masked(g, rate),
                mix_ratio=self.mix_ratio,
                batch=batch,
            )
            for g in self.groups
        }

    def _apply(self, trainer: TrainerView, masks: dict[str, list[int]]) -> dict[str, int]:
        """Mask `masks` in the live model; returns turnover and regrowth counts (measured before)."""
        model = trainer.model
        turnover = regrown = 0
        for group in self.groups:
            before = self.masks.get(group.key, [])
            turnover += len(set(before) - set(masks.get(group.key, [])))
            if before:
                norms = _filter_norms(model, group)
                regrown += int((norms[before] >= REGROW_THRESHOLD * norms.median()).sum())
        self.masks = {k: list(v) for k, v in masks.items() if v}
        self.updates += 1
        final = trainer.epoch + 1 == trainer.config.epochs
        if self.hard or final:
            # hard: zero now and keep zero every step; soft: the final mask zeroes the weights, so the
            # plain model (no hooks) is the pruned one and removal changes nothing
            for group in self.groups:
                if self.masks.get(group.key):
                    soft_mask_(model, group, self.masks[group.key])
            self.final_applied = final and not self.hard
        if self._hard_mask is not None:
            for group in self.groups:
                self._hard_mask.set(group, self.masks.get(group.key, []))
            # momentum must not carry the masked weights off zero at the next step
            self._hard_mask.apply_(model, trainer.optimizer)
        self._sync_forward_mask()
        return {"turnover": turnover, "regrown": regrown}

    def _sync_forward_mask(self) -> None:
        """Soft mode: hooks enforce the current masks until the final mask zeroed the weights."""
        fm = self._forward_mask
        if fm is None:
            return
        fm.detach()
        for group in self.groups:
            fm.set(group, self.masks.get(group.key, []))
        if self.masks and not self.final_applied and not self.removed and self._model is not None:
            fm.attach(self._model)

    def _masked_norm(self, model: nn.Module) -> float:
        """Median over masked channels of filter norm / the group's median norm (0.0 when none)."""
        ratios = []
        if self.removed:
            return 0.0
        for group in self.groups:
            idxs = self.masks.get(group.key)
            if idxs:
                norms = _filter_norms(model, group)
                ratios.append(norms[idxs] / norms.median().clamp_min(1e-12))
        return float(torch.cat(ratios).median()) if ratios else 0.0


def _filter_norms(model: nn.Module, group: ChannelGroup) -> torch.Tensor:
    """L2 norm per channel of the group's writer rows (all writers of a residual stream together)."""
    rows = group_weights(model, group).writers
    return torch.sqrt(sum(w.detach().float().pow(2).sum(1) for w in rows)).cpu()


@register_method("fpgm", config=FPGMConfig, example={"rate": 0.5, "mix_ratio": 0.5})
class FPGM(SoftFilterPruning):
    """FPGM: the SFP loop with the geometric-median criterion (`fpgm` = summed L2 distance).

    Arguments (`FPGMConfig`) as `SoftFilterPruning`, with `criterion="fpgm"` by default; `mix_ratio`
    gives the paper's "mix" variant (a share by L2 norm first, the rest by distance among the survivors).

    Example:
        >>> FPGM(rate=0.4, mix_ratio=0.25).criterion
        'fpgm'
    """

    config_class = FPGMConfig
