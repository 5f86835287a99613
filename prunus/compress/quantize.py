"""Per-layer scalar quantizers as pure functions: choose a codebook, quantize, dequantize.

A quantizer maps the surviving (non-zero) weights of one layer to `2**bits` codebook entries.
Two kinds, both at 2-8 bits:

- `uniform`: evenly spaced levels between the smallest and largest survivor;
- `kmeans`: 1-D Lloyd iterations (linear initialisation over [min, max], as Deep Compression
  found best), which puts more levels where the weights are dense.

Codebook values are rounded to float16 when chosen, because the .prn file stores them as float16:
the model the search evaluates is then bit for bit the model the file decodes to.

Nothing here touches a module; the DE search and the bit allocation call these on tensors.

Example:
    >>> import torch
    >>> w = torch.tensor([-1.0, -0.5, 0.5, 1.0, 0.9])
    >>> q = choose(w, bits=2, kind="kmeans")
    >>> idx = quantize(w, q)
    >>> dequantize(idx, q).tolist()
    [-1.0, -0.5, 0.5, 0.9501953125, 0.9501953125]
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from prunus.errors import ConfigError

__all__ = ["KINDS", "MAX_BITS", "MIN_BITS", "Quantizer", "choose", "dequantize", "quantize", "quantize_weight"]

KINDS = ("kmeans", "uniform")
MIN_BITS, MAX_BITS = 2, 8
_LLOYD_ITERS = 30  # 1-D Lloyd converges in a few tens of steps; more changes nothing visible in KL


@dataclass(frozen=True)
class Quantizer:
    """A chosen per-layer codebook: `codebook` (float32 tensor, float16-representable, sorted)."""

    kind: str
    bits: int
    codebook: torch.Tensor


def _check(bits: int, kind: str) -> None:
    if kind not in KINDS:
        raise ConfigError(f"quantizer kind {kind!r} is not known; choose from {', '.join(KINDS)}")
    if isinstance(bits, bool) or not isinstance(bits, int) or not MIN_BITS <= bits <= MAX_BITS:
        raise ConfigError(f"bits={bits!r} is not valid; expected an integer from {MIN_BITS} to {MAX_BITS}")


def _to_f16(values: torch.Tensor) -> torch.Tensor:
    # sorted and unique after the float16 rounding, so indices stay monotone in value
    return torch.unique(values.to(torch.float16).to(torch.float32))


def choose(values: torch.Tensor, bits: int, kind: str = "kmeans") -> Quantizer:
    """Choose a codebook of at most `2**bits` float16-representable levels for `values` (1-D, the survivors).

    Args:
        values: the weights to represent (zeros that are pruned must be excluded by the caller).
        bits: 2..8.
        kind: "kmeans" (1-D Lloyd, linear init) or "uniform".

    Returns:
        A `Quantizer`; fewer levels than `2**bits` when the values have fewer distinct float16 values.
    """
    _check(bits, kind)
    v = values.detach().reshape(-1).to(torch.float32)
    if v.numel() == 0:
        return Quantizer(kind, bits, torch.zeros(1))
    lo, hi = float(v.min()), float(v.max())
    levels = 1 << bits
    init = torch.linspace(lo, hi, levels)
    if kind == "uniform" or lo == hi:
        return Quantizer(kind, bits, _to_f16(init))
    centers = init.clone()
    for _ in range(_LLOYD_ITERS):
        assign = _nearest(v, centers)
        sums = torch.zeros(levels).index_add_(0, assign, v)
        counts = torch.zeros(levels).index_add_(0, assign, torch.ones_like(v))
        new = torch.where(counts > 0, sums / counts.clamp_min(1), centers)  # empty clusters keep their place
        if torch.equal(new, centers):
            break
        centers = new
    used = torch.unique(_nearest(v, centers))
    return Quantizer(kind, bits, _to_f16(centers[used]))


def _nearest(v: torch.Tensor, sorted_levels: torch.Tensor) -> torch.Tensor:
    """Index of the nearest level for each value (levels sorted ascending); ties go to the lower level."""
    if sorted_levels.numel() == 1:
        return torch.zeros(v.shape, dtype=torch.long)
    mids = (sorted_levels[1:] + sorted_levels[:-1]) / 2
    return torch.bucketize(v, mids, right=False)


def quantize(values: torch.Tensor, q: Quantizer) -> torch.Tensor:
    """Codebook index (int64) of the nearest level for each value."""
    return _nearest(values.detach().to(torch.float32), q.codebook)


def dequantize(indices: torch.Tensor, q: Quantizer) -> torch.Tensor:
    """The codebook values at `indices` (float32)."""
    return q.codebook[indices]


def quantize_weight(
    weight: torch.Tensor, mask: torch.Tensor, bits: int, kind: str = "kmeans"
) -> tuple[Quantizer, torch.Tensor]:
    """Quantize the survivors of one layer: returns the quantizer and the new weight (pruned stay exactly 0).

    Example:
        >>> w = torch.tensor([[0.0, 0.3], [-0.2, 0.31]])
        >>> q, wq = quantize_weight(w, w != 0, bits=2)
        >>> bool((wq[0, 0] == 0).item()), q.codebook.numel() <= 4
        (True, True)
    """
    alive = weight.detach()[mask]
    q = choose(alive, bits, kind)
    out = torch.zeros_like(weight, dtype=torch.float32)
    out[mask] = dequantize(quantize(alive, q), q)
    return q, out.to(weight.dtype)
