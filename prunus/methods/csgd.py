"""C-SGD (Centripetal SGD, Ding et al. CVPR 2019): pull clustered filters together, then merge them.

At setup every prunable group that must narrow from n to k channels is clustered once (k-means on
the concatenated per-channel weights of all its writers, or `even` blocks); all writers of a
coupled group (a residual stream) share that one clustering, which is what keeps the merge exact.
After every backward pass, for channel j in cluster H of a clustered tensor:

    g_j <- mean_{i in H} g_i + wd * W_j + eps * (W_j - mean_{i in H} W_i)

(BatchNorm gamma/beta use eps * bn_eps_factor and no decay), so the difference of two members
shrinks like exp(-lr * (wd + eps) * t / (1 - momentum)) whatever the data, as long as
lr * (wd + eps) stays below about (1 - momentum)^2; above that momentum makes it oscillate and
the rate saturates near -ln(momentum) / 2 per step. The optimizer's own weight decay is switched
off for those tensors because the rule already contains it. With AdamW (whose per-coordinate
scaling would move members with identical gradients differently) members get their cluster's
mean gradient, so Adam moves them identically, and the centripetal pull is applied to the
weights after each step instead: W_j <- W_j - min(1, lr * eps) * (W_j - mean_H W).

Defaults that merge exactly: `eps="auto"` computes at setup, from the run's actual lr schedule,
momentum, weight decay and step count, the smallest eps whose predicted residual (member
difference at the end relative to the start) is below `tol` (for SGD this is the rule of thumb
eps ~ (1 - momentum) * ln(1 / tol) / sum(lr) - wd, with the saturation above); a given eps that
cannot reach `tol` warns. `bn_eps_factor` is 1.0: BN vectors converge with the kernels (at the
paper's 0.1 a few-epoch run left them apart and the merged model off by 5.7 in the logits).

At the end each cluster is merged into its first member (`prunus.structure.merge_` sums the
consumers' input slices), which is exact to the extent the members became identical; members are
never snapped to their mean, so the logged `csgd_max_logit_diff` (on a fixed slice of the training
set) shows how complete the convergence was. The test accuracy of the trained and the merged model
(`csgd_trained_acc`, `csgd_merged_acc`) is measured by the runner around `on_fit_end`
(`measure_fit_end`): the method never reads the test set.

Example:
    >>> from prunus.methods import create_method
    >>> method = create_method("csgd", width=0.625)  # eps="auto", bn_eps_factor=1.0
    >>> Trainer(model, data, TrainConfig(epochs=3, lr=0.05), [method]).fit()  # doctest: +SKIP
    >>> method.merge_report["csgd_max_logit_diff"] < 1e-3  # doctest: +SKIP
    True
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist
from torch import nn

from prunus.config import arg, check_choice, check_range
from prunus.data import training_slice
from prunus.engine.method import Method, TrainerView
from prunus.engine.optim import exempt_from_weight_decay
from prunus.errors import ConfigError
from prunus.measure import count
from prunus.methods._budget import check_budget, check_widths, plan_budget
from prunus.methods._clustering import (
    CLUSTER_METHODS,
    canonical,
    cluster_ids,
    even_clusters,
    group_widths,
    kmeans,
    round_widths,
    target_width,
    unsupported_reason,
)
from prunus.methods._csgd_eps import auto_eps, log_residual
from prunus.methods._pruning import check_names
from prunus.methods._registry import build_config, register_method
from prunus.models.info import example_input, get_info
from prunus.pruning import PruneBudget, WidthPlan
from prunus.pruning.widths import resolve_round_to, round_kept
from prunus.structure import (
    ChannelGroup,
    FilterFn,
    Role,
    build_groups,
    check_filter_fn,
    default_filter,
    merge_,
    per_channel,
)

if TYPE_CHECKING:
    pass

__all__ = ["CSGDConfig", "CentripetalSGD", "group_widths", "round_widths", "target_width"]

# conv/linear biases ("bias", "dw_bias") follow the kernel rule but are not counted in chi
EVAL_BATCH = 256  # images of the fixed training slice whose logits compare trained and merged models
DEFAULT_WIDTH = 0.625  # ratio kept per group without a budget (the paper's 5/8 on CIFAR ResNet-56)


@dataclass(frozen=True)
class _Part:
    """One clustered parameter: row r of `param` belongs to cluster `ids[r]`."""

    param: nn.Parameter
    ids: torch.Tensor  # (rows,) int64 cluster id per row
    inv: torch.Tensor  # (k, 1) 1 / cluster size
    k: int
    role: Role


@dataclasses.dataclass(frozen=True)
class CSGDConfig(PruneBudget):
    """C-SGD's arguments (see `CentripetalSGD`); validated here, so a bad value fails before training.

    Example:
        >>> CSGDConfig(width=0.5, cluster="even").to_dict()["eps"]
        'auto'
    """

    _PREFIX = "csgd."  # messages name the fields as recipes do

    width: float | None = arg(
        None,
        "ratio of channels kept per prunable group, in (0, 1]; 1 leaves a group alone; default 0.625 without a budget",
    )
    widths: dict[str, float | int] | None = arg(None, "per-group override: key -> ratio (float) or count (int)")
    eps: float | str | Callable[[int], float] = arg(
        "auto",
        "'auto' (smallest eps whose predicted residual at the end is below tol), a number, or fn(epoch): "
        "members converge like exp(-lr (wd + eps) t / (1 - m))",
    )
    tol: float = arg(1e-6, "eps='auto': predicted member difference at the end relative to the start, in (0, 1)")
    bn_eps_factor: float = arg(1.0, "BN gamma/beta use eps * this (1.0 converges with the kernels; paper: 0.1)")
    cluster: str = arg("kmeans", "'kmeans' on the group's concatenated per-channel weights, or 'even' blocks")
    seed: int = arg(0, "seed of the k-means initialisation")
    log_every: int = arg(20, "steps between chi logs (also logged at every epoch end)")
    merge_at_end: bool = arg(True, "merge in on_fit_end; otherwise call merge(model) yourself")
    ignored_layers: tuple[str, ...] | None = arg(None, "never clustered; None = the model's stem and classifier")
    filter_fn: FilterFn | None = arg(None, "Python only: filter_fn(module, name) -> bool, False keeps its outputs")

    def __post_init__(self) -> None:
        super().__post_init__()  # the budget fields (prunus.pruning.PruneBudget)
        widths = check_widths("csgd.widths", self.widths)
        object.__setattr__(self, "widths", widths)
        budget = check_budget(self, "csgd.", fixed={"width": self.width, "widths": widths})
        if budget is None and self.width is None:
            object.__setattr__(self, "width", DEFAULT_WIDTH)
        width, eps, seed, log_every = self.width, self.eps, self.seed, self.log_every
        if width is not None:
            if isinstance(width, int) and not isinstance(width, bool) and width > 1:
                raise ConfigError(
                    f"csgd.width={width} must be a ratio in (0, 1]; give channel counts per group in widths"
                )
            check_range("csgd.width", width, 0.0, 1.0, low_inclusive=False)
            object.__setattr__(self, "width", float(width))
        if isinstance(eps, str):
            check_choice("csgd.eps", eps, ("auto",))
        elif not callable(eps):
            check_range("csgd.eps", eps, 0.0)
        check_range("csgd.tol", self.tol, 0.0, 1.0, low_inclusive=False, high_inclusive=False)
        object.__setattr__(self, "tol", float(self.tol))
        check_range("csgd.bn_eps_factor", self.bn_eps_factor, 0.0)
        check_choice("csgd.cluster", self.cluster, CLUSTER_METHODS)
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ConfigError(f"csgd.seed must be an integer, got {seed!r}")
        if isinstance(log_every, bool) or not isinstance(log_every, int) or log_every < 1:
            raise ConfigError(f"csgd.log_every must be an integer >= 1, got {log_every!r}")
        if not isinstance(self.merge_at_end, bool):
            raise ConfigError(f"csgd.merge_at_end must be true or false, got {self.merge_at_end!r}")
        object.__setattr__(self, "ignored_layers", check_names("csgd.ignored_layers", self.ignored_layers))
        check_filter_fn(self.filter_fn, "csgd.filter_fn")
        object.__setattr__(self, "bn_eps_factor", float(self.bn_eps_factor))


@register_method(
    "csgd",
    config=CSGDConfig,
    example={"width": 0.5, "eps": 0.1, "cluster": "even"},
    summary="Centripetal SGD: make clustered filters identical, then merge them exactly",
)
class CentripetalSGD(Method):
    """Centripetal SGD with exact merging at the end of training (see module docstring).

    Args:
        width: Ratio of channels kept in every prunable group, in (0, 1]; 1 leaves a group alone.
        widths: Per-group override, group key -> ratio (float) or channel count (int).
        eps: Centripetal strength; "auto" (default): the smallest strength whose predicted residual
            at the end of the run is below `tol` (see the module docstring); or a number, or a
            function epoch -> strength. It trades speed of collapse for freedom to learn.
        tol: Target residual for "auto" (member difference at the end / at the start), and the
            threshold of the warning for a given eps.
        bn_eps_factor: BatchNorm gamma/beta use eps * this. 1.0 (default) converges them with the
            kernels; the paper's 0.1 converges them 10x slower (too slow for a short run).
        cluster: "kmeans" (on the group's concatenated per-channel weights) or "even" (blocks).
        seed: Seed of the k-means initialisation.
        log_every: Steps between chi logs (also logged at every epoch end).
        merge_at_end: Merge in `on_fit_end`; otherwise call `merge(model)` when you want.
        ignored_layers: Modules whose output channels are never clustered (shorthand for a filter_fn).
        filter_fn: `filter_fn(module, name) -> bool` (Python only), False keeps the module's output
            channels; default (neither given): all but the model's stem and classifier.
        round_to: Cluster counts from ratios are rounded up to a multiple of this (or the full
            width), as in `prunus.prune`; channel counts given in `widths` are used as they are.
        keep_macs, keep_params, keep_latency: A budget instead of `width` / `widths`: the
            fraction of the dense MACs / parameters / latency KEPT, in (0, 1]. Resolved once, on
            the initial model (in `plan`, i.e. at setup), into channel counts per group by
            `prunus.pruning.plan_widths` (groups C-SGD cannot merge stay whole and are planned
            as such); the counts become `widths` and are part of the state, so a resumed run
            keeps them and the merged model meets the budget. (A resume restores them before
            setup, `load_state_before_setup`: a latency plan is never re-measured into other
            widths, clusters or weight-decay groups than the checkpoint's.)
        runtime, latency_batch: Where a `keep_latency` budget is planned and measured (with the run's threads).
        global_pruning: A budget's channels are ranked across groups (l1) instead of one uniform rate.

    Example:
        >>> m = CentripetalSGD(width=0.5, widths={"layer3.0.conv2": 40}, eps=0.05, cluster="even")
        >>> m.name
        'csgd'
    """

    config_class = CSGDConfig
    #: a resume restores the widths and clusters the run started with instead of re-planning them
    load_state_before_setup = True

    def __init__(self, config: CSGDConfig | None = None, /, **kwargs: Any) -> None:
        self.config = c = build_config(CSGDConfig, config, kwargs, "method 'csgd'")
        self.width = c.width
        #: group key -> ratio or channel count; with a budget, the planned counts (after `plan`)
        self.widths = dict(c.widths or {})
        self.budget = c.budget
        #: the budget's `prunus.pruning.WidthPlan` (on the rank that planned it), else None
        self.width_plan: WidthPlan | None = None
        self._budget_resolved = False
        self.eps = c.eps
        self.tol = c.tol
        self.bn_eps_factor = c.bn_eps_factor
        self.cluster = c.cluster
        self.seed = c.seed
        self.log_every = c.log_every
        self.merge_at_end = c.merge_at_end
        self.ignored_layers = list(c.ignored_layers) if c.ignored_layers is not None else None
        self.filter_fn = c.filter_fn
        self.round_to = resolve_round_to(c.round_to)
        #: group key -> clusters (canonical order); filled by `plan`/`setup` or `load_state_dict`
        self.clusters: dict[str, list[list[int]]] = {}
        #: groups left at full width although `width` asked to narrow them, with the reason
        self.skipped: dict[str, str] = {}
        #: (step, chi, max_dev) every `log_every` steps
        self.trace: list[tuple[int, float, float]] = []
        #: what the last `merge` measured (accuracies, logit difference, MACs/params)
        self.merge_report: dict[str, float] = {}
        self.steps = 0
        self._parts: list[_Part] = []
        self._eps_now = 0.0
        self._auto_eps: float | None = None
        self._pull_after_step = False  # AdamW & co.: mean gradient + weight pull instead of the gradient rule
        #: predicted member difference at the end of the run relative to the start (set at setup)
        self.predicted_residual: float | None = None
        self._model: nn.Module | None = None
        self._groups: dict[str, ChannelGroup] = {}

    # ------------------------------------------------------------------------------ planning
    def plan(
        self, model: nn.Module, example_inputs: Any, *, threads: int | None = None, device: Any = "cpu"
    ) -> dict[str, list[list[int]]]:
        """Cluster every group that must narrow (no training); sets and returns `self.clusters`.

        With a budget, the first call resolves it into `widths` (channel counts) on `model`.

        Raises:
            ConfigError: a `widths` key is not a prunable group, or a width is invalid for its group.

        Example:
            >>> clusters = CentripetalSGD(width=0.5).plan(model, torch.randn(1, 1, 28, 28))  # doctest: +SKIP
        """
        groups = {g.key: g for g in build_groups(model, example_inputs, self.ignored_layers, filter_fn=self.filter_fn)}
        if self.budget is not None and not self._budget_resolved:
            self._resolve_budget(model, example_inputs, groups, threads, device)
        for key in self.widths:
            if key not in groups or not groups[key].prunable:
                valid = ", ".join(k for k, g in groups.items() if g.prunable)
                why = f" ({groups[key].reason})" if key in groups else ""
                raise ConfigError(f"csgd.widths names {key!r}, which is not a prunable group{why}; groups: {valid}")
        clusters, self.skipped = {}, {}
        for key, group in groups.items():
            if not group.prunable:
                continue
            n = group.num_channels
            spec = self.widths.get(key, self.width if self.width is not None else 1.0)
            k = target_width(n, spec, key)
            if not isinstance(spec, int):
                k = round_kept(n, k, self.round_to)
            if k == n:
                continue
            reason = unsupported_reason(group, model)
            if reason is not None:
                if key in self.widths:
                    raise ConfigError(f"C-SGD cannot narrow group {key!r}: {reason}")
                self.skipped[key] = reason
                continue
            if self.cluster == "even":
                clusters[key] = even_clusters(n, k)
            else:
                feats = [per_channel(model, s, n) for s in group.slices if s.role.is_clustered]
                clusters[key] = kmeans(torch.cat(feats, 1), k, seed=self.seed)
        self.clusters, self._groups = clusters, groups
        return clusters

    def _resolve_budget(
        self, model: nn.Module, inputs: Any, groups: dict[str, ChannelGroup], threads: int | None, device: Any
    ) -> None:
        """The budget as channel counts in `widths`; groups C-SGD cannot merge are planned at full width."""
        unmergeable = {k for k, g in groups.items() if g.prunable and unsupported_reason(g, model) is not None}
        filter_fn = self.filter_fn
        if unmergeable:
            base = self.filter_fn or (default_filter(model) if self.ignored_layers is None else None)

            def filter_fn(module: nn.Module, name: str) -> bool:
                return name not in unmergeable and (base is None or base(module, name))

        keys = [k for k, g in groups.items() if g.prunable and k not in unmergeable]
        kept, self.width_plan = plan_budget(
            model,
            inputs,
            self.config,
            keys=keys,
            ignored_layers=self.ignored_layers,
            filter_fn=filter_fn,
            threads=threads,
            device=device,
        )
        self.widths = dict(kept)
        self._budget_resolved = True

    def _bind(self, model: nn.Module, groups: dict[str, ChannelGroup]) -> None:
        """Precompute the per-tensor cluster-id and 1/size tensors the hot path uses."""
        parts, seen = [], set()
        for key, clusters in self.clusters.items():
            group = groups.get(key)
            if group is None or group.num_channels != sum(map(len, clusters)):
                raise ConfigError(f"C-SGD clusters for group {key!r} do not fit this model")
            ids = cluster_ids(clusters, group.num_channels)
            sizes = torch.tensor([len(c) for c in clusters], dtype=torch.float32)
            for s in group.slices:
                if not s.role.is_clustered:
                    continue
                param = s.get(model)
                if not isinstance(param, nn.Parameter) or id(param) in seen:
                    continue
                seen.add(id(param))
                # channel s.channel[i] sits at row s.index[i]; every row is one channel (checked in plan)
                row_ids = torch.empty(len(s.index), dtype=torch.long)
                row_ids[torch.tensor(s.index)] = ids[torch.tensor(s.channel)]
                dev = param.device
                parts.append(_Part(param, row_ids.to(dev), (1.0 / sizes).unsqueeze(1).to(dev), len(clusters), s.role))
        self._parts = parts

    def _share_clusters(self, device: torch.device) -> None:
        """Make every rank use rank 0's clusters (k-means ties could otherwise differ across ranks)."""
        if not (dist.is_available() and dist.is_initialized()):
            return
        for key in sorted(self.clusters):
            clusters = self.clusters[key]
            ids = cluster_ids(clusters, sum(map(len, clusters))).to(device)
            dist.broadcast(ids, src=0)
            ids = ids.cpu()
            self.clusters[key] = canonical([(ids == c).nonzero().flatten().tolist() for c in range(len(clusters))])

    # --------------------------------------------------------------------------------- hooks
    def setup(self, trainer: TrainerView) -> None:
        """Cluster (unless clusters were loaded), bind index tensors, choose the update form and eps."""
        model = trainer.model
        example = example_input(tuple(trainer.data.input_shape), device=trainer.device)
        if self.clusters:  # loaded before setup: keep them
            self._groups = {
                g.key: g for g in build_groups(model, example, self.ignored_layers, filter_fn=self.filter_fn)
            }
        else:
            self.plan(model, example, threads=getattr(trainer.config, "threads", None), device=trainer.device)
        self._share_clusters(trainer.device)
        self._model = model
        self._bind(model, self._groups)
        self._pull_after_step = not isinstance(trainer.optimizer, torch.optim.SGD)
        if not self._pull_after_step:  # the SGD rule contains the decay; AdamW's decoupled decay is kept
            exempt_from_weight_decay(trainer.optimizer, [p.param for p in self._parts])
        self._plan_eps(trainer)
        self._eps_now = self._eps_at(trainer.epoch)

    def _lr_per_step(self, trainer: TrainerView) -> list[float]:
        from prunus.engine.schedule import LRSchedule

        schedule = LRSchedule(trainer.config, steps_per_epoch=len(trainer.data.train))
        return [trainer.config.lr * schedule.factor(t) for t in range(schedule.total_steps)]

    def _plan_eps(self, trainer: TrainerView) -> None:
        """eps="auto": the smallest eps whose predicted residual is below `tol`; else predict and warn."""
        lrs = self._lr_per_step(trainer)
        m, wd = float(trainer.config.momentum), float(trainer.config.weight_decay)
        target = math.log(self.tol)
        if self.eps == "auto":
            self._auto_eps = auto_eps(lrs, m, wd, self.tol, pull=self._pull_after_step)
            eps_steps = [self._auto_eps] * len(lrs)
        else:
            steps = max(len(trainer.data.train), 1)
            eps_steps = [self._eps_at(t // steps) for t in range(len(lrs))]
        log_res = log_residual(eps_steps, lrs, m, wd, pull=self._pull_after_step)
        self.predicted_residual = math.exp(log_res)
        if log_res > target:
            what, advice = f"eps={self.eps!r}", "use eps='auto', more epochs or a larger lr"
            if self.eps == "auto":  # already as strong as is stable: only a longer or hotter schedule helps
                what, advice = (
                    f"eps='auto' (at its largest safe value {self._auto_eps:.3g})",
                    "use more epochs or a larger lr",
                )
            warnings.warn(
                f"C-SGD: with {what}, {len(lrs)} steps and this lr schedule the clustered filters are predicted to "
                f"end {self.predicted_residual:.2g} of their initial distance apart (tol {self.tol:g}), so the "
                f"merge will not be exact; {advice}",
                stacklevel=2,
            )

    def on_epoch_start(self, trainer: TrainerView) -> None:
        """Evaluate the eps schedule for this epoch."""
        self._eps_now = self._eps_at(trainer.epoch)

    @torch.no_grad()
    def after_backward(self, trainer: TrainerView) -> None:
        """Replace the gradients of clustered tensors by the centripetal rule (AdamW: by the cluster mean)."""
        wd = trainer.config.weight_decay
        for part in self._parts:
            g = part.param.grad
            if g is None:
                continue
            if self._pull_after_step:  # identical gradients: Adam moves identical members identically
                a = g.reshape(g.shape[0], -1)
                mean = a.new_zeros(part.k, a.shape[1]).index_add_(0, part.ids, a).mul_(part.inv)
                g.copy_(mean.index_select(0, part.ids).view_as(g))
                continue
            vector = part.role.is_vector  # eps * bn_eps_factor, no weight decay
            eps = self._eps_now * (self.bn_eps_factor if vector else 1.0)
            decay = 0.0 if vector else wd
            w = part.param.detach().reshape(g.shape[0], -1)
            # mean_H(g) - eps * mean_H(W) in one scatter, then + (wd + eps) * W_j
            a = torch.add(g.reshape(w.shape), w, alpha=-eps)
            mean = a.new_zeros(part.k, a.shape[1]).index_add_(0, part.ids, a).mul_(part.inv)
            g.copy_(mean.index_select(0, part.ids).add_(w, alpha=decay + eps).view_as(g))
        self.steps += 1

    @torch.no_grad()
    def on_step_end(self, trainer: TrainerView) -> None:
        """AdamW & co.: pull every member toward its cluster mean; log chi every `log_every` steps."""
        if self._pull_after_step:
            lr = float(trainer.optimizer.param_groups[0]["lr"])
            for part in self._parts:
                vector = part.role.is_vector
                a = min(1.0, lr * self._eps_now * (self.bn_eps_factor if vector else 1.0))
                w = part.param.data.reshape(part.ids.numel(), -1)
                mean = w.new_zeros(part.k, w.shape[1]).index_add_(0, part.ids, w).mul_(part.inv)
                w.sub_(w - mean.index_select(0, part.ids), alpha=a)
        if self._parts and trainer.global_step % self.log_every == 0:
            self._log(trainer)

    def on_epoch_end(self, trainer: TrainerView) -> None:
        """Log chi, eps and the clustered widths."""
        if self._parts:
            self._log(trainer)
        trainer.log_metrics(
            {
                "csgd_eps": self._eps_now,
                "csgd_predicted_residual": self.predicted_residual,
                "csgd_groups": len(self.clusters),
                "csgd_channels": sum(sum(map(len, c)) for c in self.clusters.values()),
                "csgd_clusters": sum(len(c) for c in self.clusters.values()),
            }
        )

    @property
    def measure_fit_end(self) -> tuple[str, str] | None:  # type: ignore[override]
        """The runner logs the test accuracy before/after the merge under these names."""
        return ("csgd_trained_acc", "csgd_merged_acc") if self.merge_at_end and self.clusters else None

    def on_fit_end(self, trainer: TrainerView) -> None:
        """Merge every clustered group (when `merge_at_end`), logging the logit difference and sizes."""
        if self.merge_at_end and self.clusters:
            self.merge(trainer.model, trainer=trainer)

    def state_dict(self) -> dict[str, Any]:
        """Clusters per group key and the step counter; with a budget, also the widths it resolved to."""
        state: dict[str, Any] = {"clusters": {k: [list(c) for c in v] for k, v in self.clusters.items()}}
        state["steps"] = self.steps
        if self.budget is not None and self._budget_resolved:
            state["widths"] = {k: int(v) for k, v in self.widths.items()}
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the clusters (rebinding the index tensors when setup already ran)."""
        clusters = {str(k): canonical(v) for k, v in state["clusters"].items()}
        self.steps = int(state["steps"])
        if self.budget is not None and "widths" in state:  # the widths the run started with
            self.widths = {str(k): int(v) for k, v in state["widths"].items()}
            self._budget_resolved = True
        if self._model is None:
            self.clusters = clusters  # setup will bind them instead of clustering anew
            return
        if set(clusters) != set(self.clusters):
            raise ConfigError(f"checkpoint clusters {sorted(clusters)}, this run clusters {sorted(self.clusters)}")
        self.clusters = clusters
        self._bind(self._model, self._groups)

    # ------------------------------------------------------------------------------- metrics
    @torch.no_grad()
    def deviation(self) -> dict[str, float]:
        """chi (sum of squared kernel-row distances to their cluster means), the largest such
        distance, and the largest |BN gamma/beta - cluster mean|."""
        chi = torch.zeros((), dtype=torch.float64)
        max_dev = torch.zeros((), dtype=torch.float64)
        bn_dev = torch.zeros((), dtype=torch.float64)
        for part in self._parts:
            w = part.param.detach().reshape(part.ids.numel(), -1).double()
            mean = w.new_zeros(part.k, w.shape[1]).index_add_(0, part.ids, w).mul_(part.inv.double())
            dev = w - mean.index_select(0, part.ids)
            if part.role.is_writer:  # rows counted in chi; centripetal eps and weight decay
                chi += dev.pow(2).sum().cpu()
                max_dev = torch.maximum(max_dev, dev.norm(dim=1).max().cpu())
            elif part.role.is_vector:
                bn_dev = torch.maximum(bn_dev, dev.abs().max().cpu())
        return {"csgd_chi": float(chi), "csgd_max_dev": float(max_dev), "csgd_bn_max_dev": float(bn_dev)}

    def _log(self, trainer: TrainerView) -> None:
        d = self.deviation()
        self.trace.append((trainer.global_step, d["csgd_chi"], d["csgd_max_dev"]))
        trainer.log_metrics(d)

    def _eps_at(self, epoch: int) -> float:
        if self.eps == "auto":
            return float(self._auto_eps if self._auto_eps is not None else 0.0)
        value = self.eps(epoch) if callable(self.eps) else self.eps
        check_range(f"csgd.eps at epoch {epoch}", value, 0.0)
        return float(value)

    # --------------------------------------------------------------------------------- merge
    @torch.no_grad()
    def merge(
        self, model: nn.Module, *, trainer: TrainerView | None = None, inputs: torch.Tensor | None = None
    ) -> dict[str, float]:
        """Merge every cluster into its first member (in place) and measure what that changed.

        Records the unmerged model's logits on a fixed batch, merges with
        `prunus.structure.merge_`, then measures again. Members are not snapped to their mean
        first: the logit difference is the honest price of incomplete convergence. (Test-set
        accuracies are the runner's: see `measure_fit_end`.)

        Args:
            model: The trained model (the one the clusters were planned on, or a copy of it).
            trainer: Gives the fixed batch (the first `EVAL_BATCH` training images, unaugmented)
                and receives the metrics.
            inputs: The fixed batch; default: the trainer's training slice, else seeded noise.

        Returns:
            `csgd_max_logit_diff`, `csgd_macs_before/after`, `csgd_params_before/after`; also
            kept as `merge_report`.

        Example:
            >>> report = CentripetalSGD(width=0.5).merge(model, inputs=x)  # doctest: +SKIP
        """
        if not self.clusters:
            raise ConfigError("C-SGD has no clusters to merge; call plan(), or train with the method first")
        device = next(model.parameters()).device
        shape = tuple(trainer.data.input_shape if trainer is not None else get_info(model).input_shape)
        if inputs is None:
            if trainer is not None:
                inputs = training_slice(trainer.data, EVAL_BATCH, device=device)[0]
            elif shape:
                inputs = torch.randn(16, *shape, generator=torch.Generator().manual_seed(self.seed))
            else:
                raise ConfigError(
                    "merge needs `inputs` (or a model whose ModelInfo has an input_shape) to check the logits"
                )
        inputs = inputs.to(device)
        shape = shape or tuple(inputs.shape[1:])
        was_training = model.training
        model.eval()
        report: dict[str, float] = {}
        before = model(inputs).float()
        counts = count(model, shape)
        report.update(csgd_macs_before=counts.macs, csgd_params_before=counts.params)
        groups = {g.key: g for g in build_groups(model, inputs[:1], self.ignored_layers, filter_fn=self.filter_fn)}
        for key, clusters in self.clusters.items():
            if key not in groups or groups[key].num_channels != sum(map(len, clusters)):
                raise ConfigError(f"C-SGD clusters for group {key!r} do not fit this model (already merged?)")
            merge_(model, groups[key], clusters)
        self._parts, self._model, self._groups = [], None, {}  # the old tensors are gone
        after = model(inputs).float()
        counts = count(model, shape)
        report.update(csgd_macs_after=counts.macs, csgd_params_after=counts.params)
        report["csgd_max_logit_diff"] = float((before - after).abs().max())
        if trainer is not None:
            trainer.log_metrics(report)
        model.train(was_training)
        self.merge_report = report
        return report
