"""Weight Evolution cores (methods.md section 3): pure, vectorised tensor functions.

Selection, as the reference repository does it: every conv filter is scored by
s_f = L1(W_f) / C_in, scores are pooled over the whole network and the global threshold is the
order statistic sorted(scores)[int(n * ratio)] (not an interpolated quantile); each layer then
takes k = min(#below threshold, #below lambda * layer max) weakest filters as inferior, the other
filters as dominant candidates, and pairs them by rank (strongest with strongest) until either
list runs out. BN gamma and beta repeat the procedure on |gamma| and |beta| with their own
thresholds and starvation counters. A loop over layers is the only Python loop; within a layer
everything is one sort, gather and scatter.

Example:
    >>> w = torch.tensor([[3.0, -1.0], [0.5, 0.1]]).view(2, 1, 2, 1).repeat(1, 2, 1, 1)
    >>> crossover_slices_(w, torch.tensor([0]), torch.tensor([1]), mode="paper")
    2
    >>> w[1, 0].flatten().tolist()  # 0.1 (smallest |.|) became (1-a)*3 + a*0.1 with a = 0.1/3.1
    [0.5, 2.906451463699341]
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from prunus.methods._filters import editable_batchnorms, editable_convs, filter_rows, write_back

__all__ = [
    "CROSSOVER_MODES",
    "WHOLE_FILTER_RULES",
    "EvolutionStats",
    "LocalSelection",
    "blend_rows_",
    "crossover_slices_",
    "evolution_ratio",
    "evolve_",
    "filter_scores",
    "global_threshold",
    "local_selection",
    "phase_starts",
    "whole_filter",
]

CROSSOVER_MODES = ("paper", "code")
#: which conv filters are blended whole instead of crossed over per k x k slice:
#: "kernel-height" (the repository's `W[j].shape[1] == 1` on W[j] of shape (C_in/groups, kh, kw):
#: kernels one row high, i.e. 1x1 convs; depthwise 3x3 and greyscale stems get the crossover; a
#: Conv1d's or Conv3d's first kernel dim plays the height: a pointwise Conv1d is blended whole) or
#: "one-input" (C_in/groups == 1: depthwise convs and greyscale stems; prunus's earlier rule)
WHOLE_FILTER_RULES = ("kernel-height", "one-input")


def phase_starts(epochs: int, milestones: Sequence[int] = ()) -> list[int]:
    """First epoch of every phase: 0 and each LR-step milestone (a cosine schedule is one phase)."""
    return [0, *[int(m) for m in milestones if 0 < int(m) < epochs]]


def evolution_ratio(epoch: int, base: float, phases: Sequence[int], epochs: int) -> float:
    """The reference schedule, generalised: in phase p starting at epoch e_p and lasting L_p epochs,
    ratio = base / d_p * sigmoid((epoch - e_p) / (L_p / 4)) with d_0 = 1 and d_p = 2.5 p after.

    With phases [0, 60, 120] over 200 epochs this is the reference's r*sigmoid(e/15),
    (r/2.5)*sigmoid((e-60)/15), (r/5)*sigmoid((e-120)/20): the ratio restarts low after every LR
    drop (the network re-settles) and is divided so later, finer phases evolve fewer filters.

    Example:
        >>> round(evolution_ratio(0, 0.2, [0, 60, 120], 200), 4)  # sigmoid(0) = 1/2
        0.1
        >>> round(evolution_ratio(60, 0.2, [0, 60, 120], 200), 4)  # second phase: r / 2.5 / 2
        0.04
    """
    p = max(i for i, start in enumerate(phases) if start <= epoch)
    end = phases[p + 1] if p + 1 < len(phases) else epochs
    temperature = max(end - phases[p], 1) / 4.0
    divisor = 1.0 if p == 0 else 2.5 * p
    return base / divisor / (1.0 + math.exp(-(epoch - phases[p]) / temperature))


def filter_scores(weight: torch.Tensor) -> torch.Tensor:
    """s_f = L1(W_f) / C_in for a conv weight (N_out, C_in/groups, k, k)."""
    return weight.detach().abs().flatten(1).sum(1) / weight.shape[1]


def global_threshold(scores: torch.Tensor, ratio: float) -> float:
    """The reference's threshold: sorted(scores)[int(n * ratio)] (the last score when that is past the end).

    Example:
        >>> global_threshold(torch.tensor([4.0, 1.0, 3.0, 2.0, 5.0]), 0.5)  # sorted[int(2.5)] = sorted[2]
        3.0
    """
    n = scores.numel()
    return float(torch.sort(scores.detach().flatten().float()).values[min(int(n * ratio), n - 1)])


def whole_filter(weight: torch.Tensor, rule: str) -> bool:
    """Whether a conv weight (N_out, C_in/groups, kh, kw) is blended whole under `rule` (`WHOLE_FILTER_RULES`).

    Example:
        >>> [whole_filter(torch.zeros(8, c, k, k), "kernel-height") for c, k in ((4, 1), (1, 3))]
        [True, False]
        >>> [whole_filter(torch.zeros(8, c, k, k), "one-input") for c, k in ((4, 1), (1, 3))]
        [False, True]
    """
    if rule == "kernel-height":
        return weight.shape[2] == 1
    if rule == "one-input":
        return weight.shape[1] == 1
    raise ValueError(f"whole-filter rule {rule!r}; expected one of {WHOLE_FILTER_RULES}")


@dataclass(frozen=True)
class LocalSelection:
    """One layer's pairs: `dominant[i]` gives to `inferior[i]`, both strongest first."""

    dominant: torch.Tensor
    inferior: torch.Tensor
    forced: bool
    starving: bool


def local_selection(
    scores: torch.Tensor, threshold: float, lam: float, starvation: int, patience: float
) -> tuple[LocalSelection | None, int]:
    """Pick the layer's inferior filters and their rank-matched dominant partners (the reference's rules).

    n_low = #(s < threshold); n_loc = #(s <= lam * max s); k = min(n_low, n_loc) weakest filters
    are inferior, the other n - k dominant; pairs go strongest with strongest until either list
    runs out (min(k, n - k) pairs). A layer with n_low > 0 but n_loc = 0 is "starving": the shared
    `starvation` counter grows, and when it reaches `patience` this layer is forced to k = 1 and
    the counter resets; a layer with n_low > 0 and local candidates resets it too. Returns
    (selection or None, new counter).

    Example:
        >>> sel, c = local_selection(torch.tensor([5.0, 0.1, 4.0, 0.2]), 1.0, 0.1, 0, 2)
        >>> sel.dominant.tolist(), sel.inferior.tolist(), c
        ([0, 2], [3, 1], 0)
    """
    n_low = int((scores < threshold).sum())
    if n_low == 0:
        return None, starvation
    n_loc = int((scores <= lam * scores.max()).sum())
    forced = False
    starving = n_loc == 0
    if starving:
        starvation += 1
        if starvation < patience:
            return None, starvation
        forced, starvation, n_loc = True, 0, 1
    else:
        starvation = 0
    k = min(n_low, n_loc)
    n = scores.numel()
    pairs = min(k, n - k)
    if pairs == 0:
        return None, starvation
    order = torch.sort(scores, descending=True, stable=True).indices  # strongest first
    dominant = order[:pairs]
    inferior = order[n - k : n - k + pairs]  # the strongest inferiors first
    return LocalSelection(dominant, inferior, forced, starving), starvation


@torch.no_grad()
def crossover_slices_(weight: torch.Tensor, dominant: torch.Tensor, inferior: torch.Tensor, mode: str = "paper") -> int:
    """Per pair (i, j) and input-channel slice h: the smallest-|.| element s of W[j, h] is replaced
    by a blend with the largest-|.| element l of W[i, h]; returns the number of slices evolved.

    `paper`: a = |s| / (|s| + |l|), new = (1 - a) l + a s (close to l: the weak slice inherits
    the strong one's largest weight). `code` (the reference repository): a = s / (s + l) signed,
    new = a l + (1 - a) s (close to 2s). A zero denominator leaves s as it is.
    """
    k = dominant.numel()
    if k == 0:
        return 0
    flat = weight.view(weight.shape[0], weight.shape[1], -1)
    dom = flat[dominant]  # (k, C, kk)
    inf = flat[inferior]
    pos = inf.abs().argmin(-1, keepdim=True)
    s = inf.gather(-1, pos)
    big = dom.gather(-1, dom.abs().argmax(-1, keepdim=True))
    if mode == "paper":
        den = s.abs() + big.abs()
        a = s.abs() / torch.where(den == 0, torch.ones_like(den), den)
        new = (1 - a) * big + a * s
    elif mode == "code":
        den = s + big
        a = s / torch.where(den == 0, torch.ones_like(den), den)
        new = torch.where(den == 0, s, a * big + (1 - a) * s)
    else:
        raise ValueError(f"crossover mode {mode!r}; expected one of {CROSSOVER_MODES}")
    flat[inferior] = inf.scatter(-1, pos, new)
    return k * weight.shape[1]


@torch.no_grad()
def blend_rows_(tensor: torch.Tensor, dominant: torch.Tensor, inferior: torch.Tensor) -> int:
    """Whole-row blend: T_j <- a T_j + (1 - a) T_i with a = L1(T_j) / (L1(T_j) + L1(T_i)).

    Rows are conv filters blended whole (`whole_filter`) or single BN entries; returns the number
    of rows evolved.
    """
    k = dominant.numel()
    if k == 0:
        return 0
    rows = tensor.view(tensor.shape[0], -1)
    dom, inf = rows[dominant], rows[inferior]
    l1_j, l1_i = inf.abs().sum(1, keepdim=True), dom.abs().sum(1, keepdim=True)
    den = l1_j + l1_i
    a = torch.where(den == 0, torch.ones_like(den), l1_j / torch.where(den == 0, torch.ones_like(den), den))
    rows[inferior] = a * inf + (1 - a) * dom
    return k


@dataclass
class EvolutionStats:
    """What one evolution did (the method logs these per epoch)."""

    filters: int = 0  # conv filters that received a crossover
    slices: int = 0  # k x k slices changed (one element each); a filter blended whole counts one
    bn_channels: int = 0  # gamma entries + beta entries evolved
    forced: int = 0  # evolutions forced by the starvation counters


def _evolve_kind(
    tensors: list[torch.Tensor],
    scores: list[torch.Tensor],
    ratio: float,
    lam: float,
    counter: int,
    patience: float,
    apply,
) -> tuple[int, int, int]:
    """Global threshold over the pooled `scores`, then local selection and `apply` per tensor."""
    if not tensors or ratio <= 0:
        return 0, 0, counter
    threshold = global_threshold(torch.cat(scores), ratio)
    evolved = forced = 0
    for tensor, score in zip(tensors, scores):
        sel, counter = local_selection(score, threshold, lam, counter, patience)
        if sel is None:
            continue
        evolved += apply(tensor, sel)
        forced += int(sel.forced)
    return evolved, forced, counter


def evolve_(
    model: nn.Module,
    ratios: tuple[float, float, float],
    lam: float = 0.1,
    mode: str = "paper",
    counters: dict[str, int] | None = None,
    whole: str = "kernel-height",
) -> EvolutionStats:
    """One Weight Evolution pass over every conv's filters and every BatchNorm's gamma/beta, in place.

    Convs: Conv1d/2d/3d and groups=1 ConvTranspose (filters on weight dim 1); BatchNorm1d/2d/3d
    (`prunus.methods._filters` says which layers are left out and why).

    Args:
        model: the network; Linear layers, conv biases and BN running statistics are not touched.
        ratios: (conv, gamma, beta) global ratios for this epoch (see `evolution_ratio`, `global_threshold`).
        lam: local threshold factor lambda.
        mode: crossover rule, "paper" or "code" (see `crossover_slices_`).
        counters: starvation counters {"conv", "gamma", "beta"}, updated in place; each forces one
            evolution after (number of conv layers) / 2 starving layers in a row (the reference's rule).
        whole: which conv filters are blended whole (`WHOLE_FILTER_RULES`, see `whole_filter`).
    """
    counters = counters if counters is not None else {}
    stats = EvolutionStats()
    layers = editable_convs(model)
    convs = [filter_rows(m) for m in layers]  # one filter per row (a transposed conv's: a copy, written back)
    bns = editable_batchnorms(model)

    def conv_apply(weight: torch.Tensor, sel: LocalSelection) -> int:
        stats.filters += sel.dominant.numel()
        if whole_filter(weight, whole):
            stats.slices += blend_rows_(weight.data, sel.dominant, sel.inferior)
        else:
            stats.slices += crossover_slices_(weight.data, sel.dominant, sel.inferior, mode)
        return sel.dominant.numel()

    def bn_apply(tensor: torch.Tensor, sel: LocalSelection) -> int:
        return blend_rows_(tensor.data, sel.dominant, sel.inferior)

    patience = len(convs) / 2  # the reference's (number of conv layers) / 2, for BN counters too
    _, forced, counters["conv"] = _evolve_kind(
        convs, [filter_scores(w) for w in convs], ratios[0], lam, counters.get("conv", 0), patience, conv_apply
    )
    stats.forced += forced
    for layer, rows in zip(layers, convs):
        write_back(layer, rows)
    for kind, ratio, tensors in (
        ("gamma", ratios[1], [m.weight for m in bns]),
        ("beta", ratios[2], [m.bias for m in bns]),
    ):
        n, forced, counters[kind] = _evolve_kind(
            tensors, [t.detach().abs() for t in tensors], ratio, lam, counters.get(kind, 0), patience, bn_apply
        )
        stats.bn_channels += n
        stats.forced += forced
    return stats
