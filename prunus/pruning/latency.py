"""Latency budgets: per-layer latency tables measured on the deploy runtime, and a chooser that follows them.

MACs are a poor proxy for latency: a runtime's kernels are fast at some widths and not others, and
cutting a layer that is memory-bound saves less than its MACs say. So a latency budget is planned
from measurements on the runtime that will run the model:

1. **Table** (`build_table`): every conv of the model is timed alone on the runtime ("torch" eager
   or "onnxruntime"), at the batch size, thread count and input resolution it will see, on a small
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
4. **Measured, not estimated** (`prune(..., latency_ratio=)`): the pruned model is timed against
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
import hashlib
import json
import os
import platform
import warnings
from collections import ChainMap
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from prunus._atomic import write_json
from prunus.errors import BudgetNotMetWarning, ConfigError
from prunus.pruning.costs import CostModel
from prunus.pruning.widths import kept_widths
from prunus.structure import ChannelGroup

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
]

LATENCY_RUNTIMES = ("torch", "onnxruntime")
GRID = (1.0, 0.75, 0.5, 0.25)  # fractions of a layer's width timed on each side pruning can change
TABLE_VERSION = 1

Measure = Callable[[nn.Module, tuple[int, ...], str, int, "int | None"], float]


@dataclass(frozen=True)
class LatencyTable:
    """Measured latencies of one model's convs on one runtime, batch and thread count.

    Attributes:
        key: `cache_key` of what was measured.
        runtime, batch, threads: How it was measured.
        dense_ms: Median latency of the whole dense model.
        layers: Layer name -> {"in": input widths, "out": output widths, "ms": [[ms per in x out]]};
            a depthwise conv has "in" == "out" and a diagonal grid (only ms[i][i] is used).
    """

    key: str
    runtime: str
    batch: int
    threads: int | None
    dense_ms: float
    layers: dict[str, dict[str, Any]]

    def layer_ms(self, name: str, cin: int, cout: int) -> float:
        """Interpolated latency of layer `name` with `cin` inputs and `cout` outputs (bilinear; clamped)."""
        t = self.layers[name]
        ins, outs, ms = t["in"], t["out"], np.asarray(t["ms"], dtype=float)
        if t.get("depthwise"):
            return _interp(cout, outs, list(np.diagonal(ms)))
        col = [_interp(cout, outs, list(row)) for row in ms]  # one value per input width
        return _interp(cin, ins, col)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict (what the cache file holds, with a version)."""
        return {"version": TABLE_VERSION, **asdict(self)}


def _read_cached(path: Path, key: str) -> LatencyTable | None:
    """The cached table at `path`, or None when it is missing, torn, foreign or of another version.

    The cache is disposable: a file that is not what we wrote (a killed writer from an older
    prunus, a hand edit, a FIFO) is measured again and replaced, never a traceback.
    """
    from prunus._safeio import MAX_JSON_BYTES, read_json
    from prunus.errors import CorruptFileError

    if not os.path.lexists(path):
        return None
    try:
        data = read_json(path, MAX_JSON_BYTES, "latency table")
        if not isinstance(data, dict) or data.pop("version", None) != TABLE_VERSION or data.get("key") != key:
            return None
        table = LatencyTable(**data)
    except (CorruptFileError, TypeError):
        return None
    if not isinstance(table.layers, dict) or not isinstance(table.dense_ms, (int, float)):
        return None
    return table


def _interp(x: float, xs: Sequence[int], ys: Sequence[float]) -> float:
    """Piecewise linear; below the narrowest width timed, extrapolated along the last segment (>= 0)."""
    if len(xs) > 1 and x < xs[0]:
        slope = (ys[1] - ys[0]) / (xs[1] - xs[0])
        return max(0.0, ys[0] + slope * (x - xs[0]))
    return float(np.interp(x, xs, ys))


def layer_signatures(model: nn.Module, example_inputs: torch.Tensor) -> dict[str, dict[str, Any]]:
    """Every Conv2d that runs in the forward: its hyper-parameters and input resolution, in call order."""
    sigs: dict[str, dict[str, Any]] = {}
    names = {m: n for n, m in model.named_modules()}

    def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], _out: Any) -> None:
        x = inputs[0]
        sigs.setdefault(
            names[module],
            {
                "in": module.in_channels,
                "out": module.out_channels,
                "kernel": list(module.kernel_size),
                "stride": list(module.stride),
                "padding": list(module.padding) if not isinstance(module.padding, str) else module.padding,
                "dilation": list(module.dilation),
                "groups": module.groups,
                "bias": module.bias is not None,
                "hw": [int(x.shape[-2]), int(x.shape[-1])],
            },
        )

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.Conv2d)]
    was = model.training
    try:
        with torch.no_grad():
            model.eval()(example_inputs[:1])
    finally:
        model.train(was)
        for h in handles:
            h.remove()
    return sigs


def machine_id() -> dict[str, Any]:
    """What makes latencies of one machine incomparable with another's: CPU model, cores, versions."""
    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    versions = {"torch": torch.__version__}
    try:
        import onnxruntime

        versions["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        pass
    return {"node": platform.node(), "arch": platform.machine(), "cpu": cpu, "cores": os.cpu_count(), **versions}


def cache_key(
    signatures: Mapping[str, Any],
    runtime: str,
    batch: int,
    threads: int | None,
    machine: Mapping[str, Any],
    variable: Sequence[tuple[str, str]] = (),
) -> str:
    """Hex digest naming one table: the model's convs, runtime, batch, threads, machine, timed sides."""
    blob = {
        "v": TABLE_VERSION,
        "layers": signatures,
        "runtime": runtime,
        "batch": batch,
        "threads": threads,
        "machine": dict(machine),
        "variable": sorted(f"{n}:{side}" for n, side in variable),
    }
    return hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()[:20]


def default_cache_dir() -> Path:
    """$PRUNUS_CACHE_DIR/latency, else ~/.cache/prunus/latency."""
    root = os.environ.get("PRUNUS_CACHE_DIR")
    return Path(root) / "latency" if root else Path.home() / ".cache" / "prunus" / "latency"


def measure_ms(module: nn.Module, input_shape: tuple[int, ...], runtime: str, batch: int, threads: int | None) -> float:
    """Median latency (ms) of one forward of `module` at `batch` on `runtime` (few repeats: tables are many)."""
    from prunus.deploy.bench import measure_latency

    rows = measure_latency(
        module, input_shape, batch_sizes=(batch,), runtimes=(runtime,), warmup=2, repeats=7, threads=threads
    )
    return rows[0].median_ms


def _grid(width: int, variable: bool) -> list[int]:
    return sorted({max(1, round(width * f)) for f in GRID}) if variable else [width]


def _conv(sig: Mapping[str, Any], cin: int, cout: int) -> nn.Conv2d:
    depthwise = sig["groups"] > 1 and sig["groups"] == sig["in"]
    groups = cin if depthwise else sig["groups"]
    return nn.Conv2d(
        cin, cout, sig["kernel"], sig["stride"], sig["padding"], sig["dilation"], groups, sig["bias"]
    ).eval()


def _monotone(ms: np.ndarray) -> np.ndarray:
    """Running maximum along both axes: more channels never measure as faster (timer noise otherwise)."""
    return np.maximum.accumulate(np.maximum.accumulate(ms, axis=0), axis=1)


def build_table(
    model: nn.Module,
    example_inputs: torch.Tensor,
    variable: Sequence[tuple[str, str]],
    *,
    runtime: str,
    batch: int,
    threads: int | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    measure: Measure = measure_ms,
) -> LatencyTable:
    """The latency table of `model`'s convs, loaded from the cache or measured and cached.

    Args:
        model: The dense model.
        example_inputs: A batch it accepts (one sample is used).
        variable: (layer, "in" | "out") sides that pruning may narrow; only they get a grid.
        runtime: "torch" or "onnxruntime".
        batch: Batch size the model will run at.
        threads: Intra-op threads (None: the runtime's default).
        cache_dir: Where tables live; default `default_cache_dir()`.
        measure: `(module, (C, H, W), runtime, batch, threads) -> ms`; the default times it for real.

    Example:
        >>> table = build_table(model, x, [("layer1.0.conv1", "out")], runtime="torch", batch=64)  # doctest: +SKIP
    """
    if runtime not in LATENCY_RUNTIMES:
        raise ConfigError(f"runtime={runtime!r} is not valid for a latency budget; choose one of: onnxruntime, torch")
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise ConfigError(f"latency batch must be an integer >= 1, got {batch!r}")
    sigs = layer_signatures(model, example_inputs)
    var = {(n, s) for n, s in variable if n in sigs}
    key = cache_key(sigs, runtime, batch, threads, machine_id(), sorted(var))
    path = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    path = path / f"{key}.json"
    cached = _read_cached(path, key)
    if cached is not None:
        return cached
    shape = tuple(int(s) for s in example_inputs.shape[1:])
    layers: dict[str, dict[str, Any]] = {}
    timed: dict[str, float] = {}  # identical (signature, widths) are timed once
    for name, sig in sigs.items():
        depthwise = sig["groups"] > 1 and sig["groups"] == sig["in"]
        ins = _grid(sig["in"], (name, "in") in var or (depthwise and (name, "out") in var))
        outs = _grid(sig["out"], (name, "out") in var)
        if depthwise:
            ins = outs = sorted(set(ins) | set(outs))
        ms = np.zeros((len(ins), len(outs)))
        for i, cin in enumerate(ins):
            for j, cout in enumerate(outs):
                if depthwise and cin != cout:
                    continue
                k = json.dumps([sig, cin, cout], sort_keys=True)
                if k not in timed:
                    timed[k] = measure(_conv(sig, cin, cout), (cin, *sig["hw"]), runtime, batch, threads)
                ms[i, j] = timed[k]
        if depthwise:
            d = np.maximum.accumulate(np.diagonal(ms))
            ms = np.diag(d) if len(d) > 1 else ms
        else:
            ms = _monotone(ms)
        layers[name] = {"in": ins, "out": outs, "ms": ms.tolist(), "depthwise": depthwise}
    dense_ms = measure(model, shape, runtime, batch, threads)
    table = LatencyTable(key, runtime, batch, threads, float(dense_ms), layers)
    write_json(path, table.to_dict())
    return table


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
) -> tuple[dict[str, int] | None, float]:
    """Greedy cut whose estimated latency is <= `target_ms`: the most time saved per importance lost first.

    Importance lost is `importance_loss` over each group's removal order (`costs.order`).

    Returns:
        (cut, estimated ms), or (None, the lowest estimate reachable) when the budget is out of reach.

    Example:
        >>> cut, est = choose_cut(groups, costs, scores, table, 0.5 * table.dense_ms)  # doctest: +SKIP
    """
    est = _Estimator(table, costs)
    loss = {g.key: importance_loss(scores[g.key], costs.order[g.key], _filters(costs, g.key)) for g in groups}
    widths = {g.key: kept_widths(g.num_channels, round_to, g.blocks) for g in groups}
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
    removed: dict[tuple[str, str], int] = {}

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
    from prunus.structure import build_groups, remove_

    pruned = copy.deepcopy(model)
    for g in build_groups(pruned, example_inputs, ignored_layers, filter_fn=filter_fn):
        if cut.get(g.key):
            remove_(pruned, g, costs.channels(g.key, cut[g.key]))
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
    ratio: float,
    *,
    runtime: str,
    batch: int,
    threads: int | None,
    round_to: int,
    ignored_layers: Sequence[str] | None,
    filter_fn: Any = None,
    table: LatencyTable | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    rounds: int = 6,
    tolerance: float = 0.05,
) -> LatencyPlan:
    """Choose a cut for `ratio` of the dense latency; re-aim until the MEASURED ratio is within `tolerance`.

    Each round aims the table's estimate at `next_target` and measures the cut side by side. When
    an aim is below what the table can reach, the narrowest cut is measured instead (once): the
    table's estimate of it can be pessimistic. Of the rounds tried, the cut whose measured ratio is
    closest to `ratio` is returned.

    Raises:
        ConfigError: even the narrowest widths MEASURE slower than the budget (beyond `tolerance`).

    Warns:
        BudgetNotMetWarning: the closest cut found is still more than `tolerance` off.
    """
    if table is None:
        variable = sorted({t for g in groups for t, _ in costs.layer_cuts(g.key)})
        table = build_table(
            model, example_inputs, variable, runtime=runtime, batch=batch, threads=threads, cache_dir=cache_dir
        )

    def measure(cut: dict[str, int]) -> float:
        return measured_ratio(model, example_inputs, cut, costs, ignored_layers, runtime=runtime, batch=batch,
                              threads=threads, filter_fn=filter_fn)  # fmt: skip

    aim = ratio
    tries: list[tuple[float, float]] = []
    best: LatencyPlan | None = None
    floor_measured: float | None = None
    for i in range(rounds):
        cut, est = choose_cut(groups, costs, scores, table, aim * table.dense_ms, round_to)
        if cut is None:  # below the table's reach: measure the narrowest cut, once
            if floor_measured is not None:
                break
            cut = {g.key: g.num_channels - kept_widths(g.num_channels, round_to, g.blocks)[0] for g in groups}
            est = _Estimator(table, costs).total(costs.removed(cut))
            aim = est / table.dense_ms
            floor_measured = achieved = measure(cut)
        else:
            achieved = measure(cut)
        tries.append((aim, achieved))
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
            f"latency_ratio={ratio} cannot be reached on {runtime}: the narrowest widths measure "
            f"{floor_measured:.3f} of the dense latency (the ignored layers are never cut)"
        )
    if abs(best.measured_ratio / ratio - 1) > tolerance:
        warnings.warn(
            BudgetNotMetWarning(
                f"latency_ratio={ratio}: the closest cut of {len(tries)} measured {best.measured_ratio:.3f} on "
                f"{runtime} (more than {tolerance:.0%} off; the runtime's speed jumps between neighbouring widths). "
                "Try round_to=8 or 16, or a slightly different latency_ratio"
            ),
            stacklevel=2,
        )
    return best
