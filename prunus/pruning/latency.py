"""Latency budgets: per-layer latency tables measured on the deploy runtime, and a chooser that follows them.

MACs are a poor proxy for latency: a runtime's kernels are fast at some widths and not others, and
cutting a layer that is memory-bound saves less than its MACs say. So a latency budget is planned
from measurements on the runtime that will run the model:

1. **Table** (`latency_table.build_table`): every conv of the model is timed alone on the runtime
   ("torch" eager or "onnxruntime"), at the batch size, thread count and input resolution it will see, on a small
   grid of input x output widths (full, 3/4, 1/2, 1/4 of each side that pruning can change);
   identical layers are timed once. The whole dense model is timed too. Tables are cached on disk
   (`~/.cache/prunus/latency`, or `$PRUNUS_CACHE_DIR`), keyed by the model's layers, the runtime,
   the batch, the threads, the library versions and the machine (`cache_key`).
2. **Estimate**: the dense latency times (summed conv times at the widths a cut leaves) / (summed
   conv times at full width), each interpolated bilinearly in the table (linearly extrapolated
   below the narrowest width timed).
3. **Chooser** (`choose_cut`): starting from the dense model, repeatedly takes the one width step
   (a `round_to` step of one group, or a jump straight to a width the table timed, as runtimes are
   often flat between vector widths) that saves the most estimated time per unit of importance
   lost, until the estimate meets the budget. The importance a step loses is `filters x log(M_before /
   M_after)`, M being the group's kept score mass (see `importance_loss`): scale-free across group
   widths, cheap for the low-scoring channels, unbounded as a group nears zero width, and charged
   once per layer a channel is cut from, so a residual stream coupling many convs is not cut first
   just because one of its channels saves time in all of them.
4. **Measured, not estimated** (`prune(..., keep_latency=)`): the pruned model is timed against
   the dense one side by side; if the measured ratio misses the request by more than 5%, the
   estimate is re-aimed (`next_target`: scaled by requested / measured, then a secant step inside
   the bracket of tries) and the cut chosen again (up to 6 rounds); the report gives the measured
   ratio of the cut that was kept. A budget is refused only when the narrowest cut MEASURES too slow.

Example:
    >>> table = LatencyTable("k", "torch", 64, 1, 10.0, {"conv": {"in": [8, 16], "out": [8, 16],
    ...     "ms": [[1.0, 2.0], [2.0, 4.0]]}})
    >>> table.layer_ms("conv", 12, 16)
    3.0
"""

from __future__ import annotations

import copy
import logging
import os
import warnings
from collections import ChainMap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from prunus.errors import BudgetNotMetWarning, ConfigError
from prunus.pruning.config import LATENCY_RUNTIMES, PruneConfig
from prunus.pruning.costs import CostModel
from prunus.pruning.latency_table import LatencyTable, build_table, cache_key, layer_signatures, machine_id
from prunus.pruning.widths import kept_widths
from prunus.structure import ChannelGroup

log = logging.getLogger(__name__)  # each re-aimed round (INFO); the CLI prints it

__all__ = [
    "LATENCY_RUNTIMES",
    "LatencyPlan",
    "LatencyTable",
    "build_table",
    "cache_key",
    "choose_cut",
    "importance_loss",
    "layer_signatures",
    "machine_id",
    "next_target",
    "plan_latency",
]  # the table's names are re-exported: a latency budget is planned from this module


class _Estimator:
    """Estimated latency of a cut: the dense time scaled by the convs' summed time at the cut widths.

    Scaling (rather than subtracting) lets the non-conv work (activations, adds, pooling: all
    per-channel) shrink with the channels, and makes the estimate independent of any fixed
    per-call overhead of timing a conv alone.
    """

    def __init__(self, table: LatencyTable, costs: CostModel) -> None:
        self.table = table
        self.full = {name: (t["in"][-1], t["out"][-1]) for name, t in table.layers.items()}
        self.base = {name: table.layer_ms(name, *w) for name, w in self.full.items()}

    def layer(self, name: str, removed: Mapping[tuple[str, str], int]) -> float:
        cin, cout = self.full[name]
        cout -= removed.get((name, "out"), 0)
        if self.table.layers[name].get("depthwise"):
            cin = cout
        else:
            cin -= removed.get((name, "in"), 0)
        return self.table.layer_ms(name, cin, cout)

    def total(self, removed: Mapping[tuple[str, str], int]) -> float:
        convs = sum(self.layer(n, removed) for n in self.table.layers)
        return self.table.dense_ms * convs / max(sum(self.base.values()), 1e-12)


def importance_loss(scores: torch.Tensor, order: Sequence[int], filters: int) -> list[float]:
    """Importance lost by removing the first k channels of `order`, for k = 0..N: `filters x log(M_0 / M_k)`.

    M_k is the score mass the group keeps after losing its first k channels, each score taken
    relative to the group's mean (plus 1e-3, so dead channels still weigh something and M_k never
    reaches zero). Why this form (a first version used the plain score sum, measured below):

    - relative to the group's own mass, so a 16- and a 64-channel group lose the same for the same
      fraction of their importance, whatever their widths or score scales;
    - the log makes each further halving cost as much as the first: a group's last channels are
      never cheap, and a group is not cut to one channel because its time per channel is large;
    - `filters` (the number of layers whose output channels the group's channels are: 1 for a
      plain conv, one per block for a residual stream) charges a coupled channel once per filter
      it removes, as its time saved is also counted in every layer it touches.

    With the plain score sum, the ResNet-56 latency budget of 0.5 cut stage 1's inner convs and the
    stage-3 residual stream to one channel and lost 45 points against MACs pruning at the same
    latency (benchmarks/results/history/accuracy_latency_budget_resnet56_plain_sum.json).

    Example:
        >>> [round(v, 3) for v in importance_loss(torch.tensor([1.0, 1.0, 2.0, 4.0]), [0, 1, 2, 3], 2)]
        [0.0, 0.267, 0.576, 1.387, 30.406]
    """
    s = scores.detach().double().cpu()
    mean = float(s.mean())
    rel = (s / mean if mean > 0 else torch.zeros_like(s)) + 1e-3
    ordered = rel[list(order)]
    kept_mass = torch.flip(torch.cumsum(torch.flip(ordered, [0]), 0), [0]).tolist() + [0.0]  # M_k, k = 0..N
    floor = 1e-3 * 1e-3  # M_N = 0: a finite stand-in; kept widths never reach zero anyway
    return [filters * float(np.log(kept_mass[0] / max(m, floor))) for m in kept_mass]


def _filters(costs: CostModel, key: str) -> int:
    """Layers (convs, linears) whose OUTPUT channels group `key` is; at least 1."""
    return max(1, sum(1 for (_, side), _ in costs.layer_cuts(key) if side == "out"))


def _table_widths(table: LatencyTable, costs: CostModel, key: str) -> set[int]:
    """Widths at which the table timed a layer that group `key` cuts (where its latency curve can bend)."""
    out: set[int] = set()
    for (name, side), _ in costs.layer_cuts(key):
        if name in table.layers:
            out.update(int(w) for w in table.layers[name]["out" if side == "out" else "in"])
    return out


def _candidate_widths(allowed: Sequence[int], kept: int, knees: set[int]) -> list[int]:
    """The next narrower allowed width, plus the widest allowed width at or below each timed width.

    One step at a time is blind on a runtime whose time is flat between vector widths (onnxruntime
    blocks channels by 8 or 16: cutting 32 -> 31 saves nothing, 32 -> 16 saves half): so each
    round also weighs jumping straight to each width the table timed.
    """
    smaller = [w for w in allowed if w < kept]
    if not smaller:
        return []
    out = {smaller[-1]}
    for knee in knees:
        fit = [w for w in smaller if w <= knee]
        if fit:
            out.add(fit[-1])
    return sorted(out, reverse=True)


def choose_cut(
    groups: Sequence[ChannelGroup],
    costs: CostModel,
    scores: Mapping[str, torch.Tensor],
    table: LatencyTable,
    target_ms: float,
    round_to: int = 1,
    *,
    start: Mapping[str, int] | None = None,
) -> tuple[dict[str, int] | None, float]:
    """Greedy cut whose estimated latency is <= `target_ms`: the most time saved per importance lost first.

    Importance lost is `importance_loss` over each group's removal order (`costs.order`). `start`:
    channels already removed from groups outside `groups` (fixed per-layer ratios); the returned
    cut covers `groups` only.

    Returns:
        (cut, estimated ms), or (None, the lowest estimate reachable) when the budget is out of reach.

    Example:
        >>> cut, est = choose_cut(groups, costs, scores, table, 0.5 * table.dense_ms)  # doctest: +SKIP
    """
    est = _Estimator(table, costs)
    loss = {g.key: importance_loss(scores[g.key], costs.order[g.key], _filters(costs, g.key)) for g in groups}
    widths = {g.key: kept_widths(g.num_channels, round_to, g.blocks, g.min_channels) for g in groups}
    knees = {g.key: _table_widths(table, costs, g.key) for g in groups}
    names = {g.key: {t[0] for t, _ in costs.layer_cuts(g.key) if t[0] in table.layers} for g in groups}
    # a step of one group changes the estimate of its own layers only: after it, just the groups
    # sharing one of those layers need their best step recomputed (the rest keep theirs)
    sharing: dict[str, set[str]] = {}
    for g in groups:
        for n in names[g.key]:
            sharing.setdefault(n, set()).add(g.key)
    neighbours = {g.key: {h for n in names[g.key] for h in sharing[n]} for g in groups}
    cut = {g.key: 0 for g in groups}
    removed: dict[tuple[str, str], int] = dict(costs.removed(start)) if start else {}

    def best_step(g: ChannelGroup) -> tuple[tuple[float, float], int, dict[tuple[str, str], int]] | None:
        """(priority, channels removed after the step, per-layer-side removals it adds) of g's best step."""
        best = None
        for width in _candidate_widths(widths[g.key], g.num_channels - cut[g.key], knees[g.key]):
            k_new = g.num_channels - width
            delta: dict[tuple[str, str], int] = {}
            for target, cum in costs.layer_cuts(g.key):
                delta[target] = delta.get(target, 0) + cum[k_new] - cum[cut[g.key]]
            trial = ChainMap({t: removed.get(t, 0) + d for t, d in delta.items()}, removed)
            saved = sum(est.layer(n, removed) - est.layer(n, trial) for n in names[g.key])  # conv ms; same ranking
            lost = loss[g.key][k_new] - loss[g.key][cut[g.key]]
            priority = (max(saved, 0.0) / (lost + 1e-12), -lost)
            if best is None or priority > best[0]:
                best = (priority, k_new, delta)
        return best

    steps = {g.key: best_step(g) for g in groups}
    current = est.total(removed)
    while current > target_ms:
        best_key = None
        for g in groups:  # in group order, first wins a tie
            step = steps[g.key]
            if step is not None and (best_key is None or step[0] > steps[best_key][0]):  # type: ignore[index]
                best_key = g.key
        if best_key is None:
            return None, current
        _, k_new, delta = steps[best_key]  # type: ignore[misc]
        for target, d in delta.items():
            removed[target] = removed.get(target, 0) + d
        cut[best_key] = k_new
        for g in groups:
            if g.key in neighbours[best_key]:
                steps[g.key] = best_step(g)
        current = est.total(removed)
    return cut, current


def measured_ratio(
    model: nn.Module,
    example_inputs: torch.Tensor,
    cut: Mapping[str, int],
    costs: CostModel,
    ignored_layers: Sequence[str] | None,
    *,
    runtime: str,
    batch: int,
    threads: int | None,
    repeats: int = 15,
    filter_fn: Any = None,
) -> float:
    """Pruned / dense latency of `cut`, measured side by side on a pruned copy (the model is untouched)."""
    from prunus.deploy.bench import compare_latency
    from prunus.structure import build_groups, remove_many_

    pruned = copy.deepcopy(model)
    groups = build_groups(pruned, example_inputs, ignored_layers, filter_fn=filter_fn)
    remove_many_(pruned, [(g, costs.channels(g.key, cut[g.key])) for g in groups if cut.get(g.key)])
    shape = tuple(int(s) for s in example_inputs.shape[1:])
    cmp = compare_latency(
        model, pruned, shape, batch_sizes=(batch,), runtimes=(runtime,), warmup=3, repeats=repeats, threads=threads
    )
    return 1.0 / cmp.rows[0].speedup


@dataclass(frozen=True)
class LatencyPlan:
    """The cut a latency budget chose, with its measured and estimated latency ratios."""

    cut: dict[str, int]
    measured_ratio: float
    estimated_ratio: float
    rounds: int


def next_target(tries: Sequence[tuple[float, float]], ratio: float) -> float:
    """The estimate to aim at next, from (aimed estimate, measured ratio) pairs of earlier rounds.

    Runtimes do not follow the table smoothly (onnxruntime's channel blocking makes the measured
    ratio jump between neighbouring cuts), so one correction by requested / measured can overshoot
    back and forth. Once one try landed below `ratio` and one above, the next aim interpolates
    between the closest such pair (a secant step that stays inside the bracket); before that, the
    last aim is scaled by requested / measured.

    Example:
        >>> round(next_target([(0.5, 0.63)], 0.5), 3)
        0.397
        >>> round(next_target([(0.5, 0.63), (0.4, 0.55), (0.36, 0.43)], 0.5), 3)
        0.383
    """
    below = [t for t in tries if t[1] <= ratio]
    above = [t for t in tries if t[1] > ratio]
    if below and above:
        lo = max(below, key=lambda t: t[1])  # the fastest-but-too-slow and slowest-but-fast-enough tries
        hi = min(above, key=lambda t: t[1])
        frac = (ratio - lo[1]) / max(hi[1] - lo[1], 1e-12)
        return lo[0] + frac * (hi[0] - lo[0])
    aim, measured = tries[-1]
    return aim * ratio / measured


def plan_latency(
    model: nn.Module,
    example_inputs: torch.Tensor,
    groups: Sequence[ChannelGroup],
    costs: CostModel,
    scores: Mapping[str, torch.Tensor],
    config: PruneConfig,
    *,
    threads: int | None,
    filter_fn: Any = None,
    table: LatencyTable | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    fixed: Mapping[str, int] | None = None,
    rounds: int = 6,
    tolerance: float = 0.05,
) -> LatencyPlan:
    """A cut for `config.keep_latency` of the dense latency, re-aimed until the MEASURED ratio is within `tolerance`.

    Each round aims the table's estimate at `next_target` and measures the cut side by side. When
    an aim is below what the table can reach, the narrowest cut is measured instead (once): the
    table's estimate of it can be pessimistic. Of the rounds tried, the cut whose measured ratio is
    closest to the request is returned. `groups` are the groups the chooser may cut; `fixed`
    (group key -> channels removed, from per-layer ratios) is cut as given in every try.

    Raises:
        ConfigError: even the narrowest widths MEASURE slower than the budget (beyond `tolerance`).

    Warns:
        BudgetNotMetWarning: the closest cut found is still more than `tolerance` off.
    """
    ratio = float(config.keep_latency)  # type: ignore[arg-type]
    runtime, batch, round_to = config.runtime, config.latency_batch, config.round_to
    ignored_layers = list(config.ignore) or None
    fixed = dict(fixed or {})
    if table is None:
        variable = sorted({t for key in [*(g.key for g in groups), *fixed] for t, _ in costs.layer_cuts(key)})
        table = build_table(
            model, example_inputs, variable, runtime=runtime, batch=batch, threads=threads, cache_dir=cache_dir
        )

    def measure(cut: dict[str, int]) -> float:
        return measured_ratio(model, example_inputs, {**fixed, **cut}, costs, ignored_layers, runtime=runtime,
                              batch=batch, threads=threads, filter_fn=filter_fn)  # fmt: skip

    aim = ratio
    tries: list[tuple[float, float]] = []
    best: LatencyPlan | None = None
    floor_measured: float | None = None
    for i in range(rounds):
        cut, est = choose_cut(groups, costs, scores, table, aim * table.dense_ms, round_to, start=fixed)
        if cut is None:  # below the table's reach: measure the narrowest cut, once
            if floor_measured is not None:
                break
            cut = {
                g.key: g.num_channels - kept_widths(g.num_channels, round_to, g.blocks, g.min_channels)[0]
                for g in groups
            }
            est = _Estimator(table, costs).total(costs.removed({**fixed, **cut}))
            aim = est / table.dense_ms
            floor_measured = achieved = measure(cut)
        else:
            achieved = measure(cut)
        tries.append((aim, achieved))
        log.info("latency budget %s: round %d/%d measured %.3f of the dense latency on %s", ratio, i + 1, rounds,
                 achieved, runtime)  # fmt: skip
        plan = LatencyPlan(cut, achieved, est / table.dense_ms, i + 1)
        if best is None or abs(achieved / ratio - 1) < abs(best.measured_ratio / ratio - 1):
            best = plan
        if abs(achieved / ratio - 1) <= tolerance:
            break
        if floor_measured is not None and floor_measured > ratio:
            break  # the narrowest cut is already too slow: nothing left to try
        aim = next_target(tries, ratio)
    assert best is not None
    if floor_measured is not None and best.measured_ratio > ratio * (1 + tolerance):
        raise ConfigError(
            f"keep_latency={ratio} cannot be reached on {runtime}: the narrowest widths measure "
            f"{floor_measured:.3f} of the dense latency (the ignored layers are never cut)"
        )
    if abs(best.measured_ratio / ratio - 1) > tolerance:
        warnings.warn(
            BudgetNotMetWarning(
                f"keep_latency={ratio}: the closest cut of {len(tries)} measured {best.measured_ratio:.3f} on "
                f"{runtime} (more than {tolerance:.0%} off; the runtime's speed jumps between neighbouring widths). "
                "Try round_to=8 or 16, or a slightly different keep_latency"
            ),
            stacklevel=2,
        )
    return best
