"""Filter grafting cores (methods.md section 4): layer information, the arctan coefficient,
layer units matched by module type and execution order, the blend, and the internal variants.

A "unit" is one conv (Conv1d/2d/3d or ConvTranspose) plus every parametrised module that runs
after it and before the next conv (its BatchNorm, activations with parameters, and, after the
last conv, the classifier):
they all take the conv's coefficient. Units are found by running one forward pass with hooks,
so the matching never depends on module names (the reference matched names by substring and
grafted the wrong tensors on some architectures).

Example:
    >>> round(layer_entropy(torch.arange(10.0)), 4)  # ten equally filled bins: ln 10
    2.3026
    >>> round(layer_entropy(torch.arange(10.0), binning="half-open"), 4)  # the maximum falls in no bin
    2.0723
    >>> graft_coefficient(1.0, 1.0)
    0.5
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from prunus.methods._filters import editable_convs, filter_rows, write_back
from prunus.structure.parametrized import is_parametrized

__all__ = [
    "BINNINGS",
    "INFORMATION",
    "GraftUnit",
    "blend_unit_",
    "graft_coefficient",
    "graft_weights",
    "graft_units",
    "internal_graft_",
    "invalid_filters",
    "layer_entropy",
    "layer_information",
    "noise_graft_",
    "unit_tensors",
]

INFORMATION = ("entropy", "l1")
#: histogram bins of `layer_entropy`: "closed" (every element counted, the last bin includes the
#: maximum) or "half-open" (the reference repository: bins [lo, hi), so the maximum falls in no bin
#: and the probabilities, still divided by the element count, sum to less than 1)
BINNINGS = ("closed", "half-open")
BINS = 10


def layer_entropy(tensor: torch.Tensor, bins: int = BINS, binning: str = "closed") -> float:
    """Entropy (natural log) of a `bins`-bin equal-width histogram of the whole tensor; 0 if constant.

    `binning` (`BINNINGS`): "closed" (`torch.histc`) or "half-open", the reference's bins
    [min + i s, min + (i + 1) s) with s = (max - min) / bins computed in float32 as it does.
    """
    t = tensor.detach().float().flatten()
    low, high = float(t.min()), float(t.max())
    if not high > low:
        return 0.0
    if binning == "closed":
        counts = torch.histc(t, bins=bins, min=low, max=high)
    elif binning == "half-open":
        lo, scale = t.min(), (t.max() - t.min()) / bins
        edges = [lo + i * scale for i in range(bins + 1)]
        counts = torch.stack([((t >= edges[i]) & (t < edges[i + 1])).sum() for i in range(bins)]).float()
    else:
        raise ValueError(f"histogram binning {binning!r}; expected one of {BINNINGS}")
    p = counts / t.numel()
    p = p[p > 0]
    return float(-(p * p.log()).sum())


def layer_information(tensor: torch.Tensor, criterion: str = "entropy", binning: str = "closed") -> float:
    """A layer's information: `entropy` (see `layer_entropy`, with `binning`) or `l1` (sum of |w|)."""
    if criterion == "entropy":
        return layer_entropy(tensor, binning=binning)
    if criterion == "l1":
        return float(tensor.detach().abs().sum())
    raise ValueError(f"information criterion {criterion!r}; expected one of {INFORMATION}")


def graft_weights(h_own: float, h_other: float, a: float = 0.4, c: float = 500.0) -> tuple[float, float]:
    """(alpha, 1 - alpha) of a graft: alpha = 0.5 + (A / pi) * arctan(c * (H_own - H_other)).

    The second weight is computed as 0.5 - t (t the arctan term), not 1 - alpha, so two networks
    grafting each other compute the same products and end bit-identical. The one formula of the
    method: `blend_unit_` and `graft_coefficient` both call it.

    Example:
        >>> graft_weights(1.0, 1.0)
        (0.5, 0.5)
    """
    t = (a / math.pi) * math.atan(c * (h_own - h_other))
    return 0.5 + t, 0.5 - t


def graft_coefficient(h_own: float, h_other: float, a: float = 0.4, c: float = 500.0) -> float:
    """alpha = 0.5 + (A / pi) * arctan(c * (H_own - H_other)), in (0.5 - A/2, 0.5 + A/2) (`graft_weights`).

    Example:
        >>> round(graft_coefficient(2.0, 1.0), 4), round(graft_coefficient(1.0, 2.0), 4)
        (0.6997, 0.3003)
    """
    return graft_weights(h_own, h_other, a, c)[0]


@dataclass
class GraftUnit:
    """One conv and the parametrised modules that share its coefficient."""

    conv: nn.modules.conv._ConvNd
    followers: list[nn.Module] = field(default_factory=list)


def _leaves_with_state(model: nn.Module) -> list[nn.Module]:
    """Leaf modules that hold tensors, in registration order. A parametrized module (weight_norm,
    spectral_norm) counts as a leaf: its stored tensors sit in child containers (`parametrizations`),
    which are its, not leaves of their own (missed, such a conv was neither grafted nor a unit)."""
    inside = {id(c) for m in model.modules() if is_parametrized(m) for c in m.parametrizations.modules()}
    return [
        m
        for m in model.modules()
        if id(m) not in inside
        and (
            is_parametrized(m)
            or (
                not list(m.children())
                and (any(True for _ in m.parameters(recurse=False)) or list(m.buffers(recurse=False)))
            )
        )
    ]


@torch.no_grad()
def graft_units(model: nn.Module, example_inputs: torch.Tensor | None = None) -> list[GraftUnit]:
    """Group the model's parametrised leaf modules into units, in execution order.

    With `example_inputs`, the order is the order modules run in one forward pass (so a BN
    registered far from its conv still follows it); otherwise it is registration order. Modules
    before the first conv join the first unit; modules never run join the last.
    """
    leaves = _leaves_with_state(model)
    order = leaves
    if example_inputs is not None:
        seen: list[nn.Module] = []
        handles = [m.register_forward_hook(lambda mod, *_: seen.append(mod)) for m in leaves]
        was_training = model.training
        model.eval()  # no BN statistic moves
        try:
            model(example_inputs)
        finally:
            model.train(was_training)
            for h in handles:
                h.remove()
        ran = list(dict.fromkeys(seen))
        order = ran + [m for m in leaves if m not in ran]
    units: list[GraftUnit] = []
    leading: list[nn.Module] = []
    for m in order:
        if isinstance(m, nn.modules.conv._ConvNd):  # 1-D, 2-D, 3-D, transposed: the blend is shape-blind
            units.append(GraftUnit(m))
        elif units:
            units[-1].followers.append(m)
        else:
            leading.append(m)
    if not units:
        raise ValueError("grafting needs at least one conv layer (Conv1d/2d/3d or ConvTranspose)")
    units[0].followers[:0] = leading
    return units


def unit_tensors(unit: GraftUnit) -> list[torch.Tensor]:
    """Every float parameter and buffer of the unit (running stats included), in a fixed order; for a
    parametrized module its stored tensors (weight_norm's g and v, spectral_norm's weight and vectors)."""
    out: list[torch.Tensor] = []
    for m in (unit.conv, *unit.followers):
        out.extend(p.data for p in m.parameters(recurse=False))
        out.extend(b for b in m.buffers(recurse=False) if b.is_floating_point())
        if is_parametrized(m):
            out.extend(p.data for p in m.parametrizations.parameters())
            out.extend(b for b in m.parametrizations.buffers() if b.is_floating_point())
    return out


@torch.no_grad()
def blend_unit_(
    own: Sequence[torch.Tensor], other: Sequence[torch.Tensor], h_own: float, h_other: float, a: float, c: float
) -> float:
    """own <- alpha own + (1 - alpha) other for every tensor of a unit, the weights from `graft_weights`
    (the other network's is 0.5 - t, so a ring of two ends bit-identical); returns alpha."""
    alpha, rest = graft_weights(h_own, h_other, a, c)
    for mine, theirs in zip(own, other):
        mine.copy_(alpha * mine + rest * theirs.to(mine.device, mine.dtype))
    return alpha


def _filter_rows(model: nn.Module) -> list[tuple[nn.Module, torch.Tensor]]:
    """Every conv the internal variants edit, with its filters as rows (`prunus.methods._filters`: a
    transposed conv's are a copy to `write_back`; a parametrized conv, whose weight is computed from
    stored tensors on each access, and a grouped transposed one are left out)."""
    return [(m, filter_rows(m)) for m in editable_convs(model)]


def invalid_filters(model: nn.Module, thresholds: Sequence[float] = (0.1, 0.01)) -> dict[float, int]:
    """Number of conv filters whose L1 norm is below each threshold (grafting's "invalid" filters)."""
    l1 = [w.detach().abs().flatten(1).sum(1) for _, w in _filter_rows(model)]
    pooled = torch.cat(l1) if l1 else torch.zeros(0)
    return {t: int((pooled < t).sum()) for t in thresholds}


@torch.no_grad()
def noise_graft_(model: nn.Module, std: float, threshold: float, generator: torch.Generator) -> int:
    """`noise` variant: add N(0, std^2) to every conv filter with L1 < threshold; returns how many."""
    touched = 0
    for conv, w in _filter_rows(model):
        weak = w.abs().flatten(1).sum(1) < threshold
        n = int(weak.sum())
        if n:
            noise = torch.randn((n, *w.shape[1:]), generator=generator).to(w.device, w.dtype)
            w[weak] += std * noise
            write_back(conv, w)  # noise on a transposed conv's columns lands in its weight
            touched += n
    return touched


@torch.no_grad()
def internal_graft_(model: nn.Module, threshold: float) -> int:
    """`internal` variant: per conv, the j-th weakest filter under `threshold` receives (+=) the
    j-th strongest filter's weights (at most half the layer); returns how many filters grew."""
    touched = 0
    for conv, w in _filter_rows(model):
        l1 = w.abs().flatten(1).sum(1)
        n = min(int((l1 < threshold).sum()), w.shape[0] // 2)
        if n:
            order = torch.argsort(l1, stable=True)
            w[order[:n]] += w[order.flip(0)[:n]]
            write_back(conv, w)  # the grown filters of a transposed conv land in its weight
            touched += n
    return touched
