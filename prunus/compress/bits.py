"""Per-layer bit widths: fixed, or greedy under an accuracy / KL budget.

Greedy allocation (methods.md section 5, step 5): every layer starts at `max_bits`; each round
lowers by one bit the layer whose KL increase per bit saved (one bit per surviving weight) is
smallest, as long as the budget still holds; a layer whose next step would break the budget is
frozen. The quantizers are the pure functions of `quantize`; the model's weights are swapped for
each trial and restored.

Lazy evaluation: re-measuring every layer's next step after each change costs O(layers^2 x bits)
forward passes (about 2,400 for ResNet-20, most of a demo's budget). Costs measured before the
last change are kept in a heap as estimates; only the cheapest is re-measured under the current
bits, and it is lowered if its fresh cost is still no larger than the next estimate, else it goes
back with its fresh cost. About one to three forward passes per bit lowered instead of one per
layer; the choice is the full greedy's whenever a layer's cost does not fall as the others are
quantized (the usual case; an estimate is then a lower bound).

Example:
    >>> import torch
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4)).eval()
    >>> x = torch.randn(256, 8)
    >>> masks = {n: m.weight != 0 for n, m in (("0", net[0]), ("2", net[2]))}
    >>> q = allocate_bits(net, masks, x, net(x).detach(), None, max_kl=1e-3, max_drop=None)
    >>> sorted(q) == ["0", "2"] and all(2 <= v.bits <= 8 for v in q.values())
    True
"""

from __future__ import annotations

import heapq
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from prunus.compress.quantize import KINDS, MAX_BITS, MIN_BITS, Quantizer, choose, dequantize, quantize
from prunus.compress.runner import prunable_layers

__all__ = ["allocate_bits", "best_quantizer", "drop_se", "fixed_bits", "z_score"]


def best_quantizer(values: torch.Tensor, bits: int, kind: str) -> Quantizer:
    """`choose` for one kind, or for kind "best" the kind with the lower squared weight error."""
    if kind != "best":
        return choose(values, bits, kind)
    options = [choose(values, bits, k) for k in KINDS]
    errors = [float(((dequantize(quantize(values, q), q) - values) ** 2).sum()) for q in options]
    return options[min(range(len(options)), key=errors.__getitem__)]


def fixed_bits(
    model: nn.Module, masks: Mapping[str, torch.Tensor], bits: int | Mapping[str, int], kind: str
) -> dict[str, Quantizer]:
    """One quantizer per masked layer at the given bits (a dict may omit layers: they get 8 bits)."""
    layers = prunable_layers(model)
    out = {}
    for name, mask in masks.items():
        b = bits if isinstance(bits, int) else bits.get(name, MAX_BITS)
        out[name] = best_quantizer(layers[name].weight.detach()[mask], b, kind)
    return out


class _Trial:
    """Swap quantized weights into the model, measure KL and accuracy on the budget batch, restore."""

    def __init__(self, model: nn.Module, masks: Mapping[str, torch.Tensor], x: torch.Tensor, teacher: torch.Tensor,
                 labels: torch.Tensor) -> None:  # fmt: skip
        self.model, self.masks, self.x, self.labels = model, masks, x, labels
        self.layers = prunable_layers(model)
        self.teacher_logp = F.log_softmax(teacher.float(), -1)
        self.original = {n: self.layers[n].weight.detach().clone() for n in masks}
        self.teacher_right = (teacher.argmax(1) == labels).float()
        self.teacher_acc = float(self.teacher_right.mean())

    def weight(self, name: str, q: Quantizer) -> torch.Tensor:
        w = self.original[name]
        mask = self.masks[name]
        out = torch.zeros_like(w)
        out[mask] = dequantize(quantize(w[mask], q), q).to(w.dtype)
        return out

    @torch.no_grad()
    def measure(self, quantizers: Mapping[str, Quantizer]) -> tuple[float, float]:
        """(KL, accuracy drop in points) with every layer quantized as given."""
        kl, drop, _ = self.measure_se(quantizers)
        return kl, drop

    @torch.no_grad()
    def measure_se(self, quantizers: Mapping[str, Quantizer]) -> tuple[float, float, float]:
        """(KL, accuracy drop in points, the drop's standard error in points) with every layer quantized as given."""
        try:
            for name, q in quantizers.items():
                self.layers[name].weight.copy_(self.weight(name, q))
            logits = self.model(self.x)
        finally:
            for name, w in self.original.items():
                self.layers[name].weight.copy_(w)
        logp = F.log_softmax(logits.float(), -1)
        kl = float((self.teacher_logp.exp() * (self.teacher_logp - logp)).sum(-1).mean())
        right = (logits.argmax(1) == self.labels).float()
        return kl, 100.0 * (self.teacher_acc - float(right.mean())), drop_se(self.teacher_right, right)


def drop_se(reference_right: torch.Tensor, right: torch.Tensor) -> float:
    """Standard error, in points, of an accuracy drop measured on one batch: the spread of the paired
    per-image differences (reference right minus model right) over sqrt(images); 0 for one image.

    Example:
        >>> round(drop_se(torch.tensor([1.0, 1.0, 1.0, 1.0]), torch.tensor([1.0, 0.0, 1.0, 1.0])), 1)
        25.0
    """
    paired = reference_right.float() - right.float()
    return 100.0 * float(paired.std() / paired.numel() ** 0.5) if paired.numel() > 1 else 0.0


def z_score(confidence: float) -> float:
    """The one-sided normal quantile of `confidence` (0.5 -> 0, 0.95 -> 1.645).

    Example:
        >>> round(z_score(0.95), 3)
        1.645
    """
    return float(torch.distributions.Normal(0.0, 1.0).icdf(torch.tensor(float(confidence), dtype=torch.float64)))


def allocate_bits(
    model: nn.Module,
    masks: Mapping[str, torch.Tensor],
    x: torch.Tensor,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor | None,
    *,
    max_kl: float | None,
    max_drop: float | None,
    kind: str = "kmeans",
    min_bits: int = MIN_BITS,
    max_bits: int = MAX_BITS,
    z: float = 0.0,
    progress: Any = None,
) -> dict[str, Quantizer]:
    """Greedy per-layer bits under the budget (KL and/or accuracy drop in points vs the teacher).

    `labels` None: accuracy = agreement with the teacher's top-1. The budget is checked on `x`:
    the drop plus `z` standard errors of it (`z_score(confidence)`) must stay within `max_drop`, so
    the greedy descent does not spend the batch's sampling noise as if it were budget.
    `progress`: a `CompressProgress`; the descent advances its bar per bit lowered and prints a
    line every 10 (minutes on a conv net's budget batch).
    """
    labels = teacher_logits.argmax(1) if labels is None else labels
    trial = _Trial(model, masks, x, teacher_logits, labels)
    cache: dict[tuple[str, int], Quantizer] = {}

    def q(name: str, b: int) -> Quantizer:
        if (name, b) not in cache:
            cache[(name, b)] = best_quantizer(trial.original[name][masks[name]], b, kind)
        return cache[(name, b)]

    def within(kl: float, drop: float, se: float) -> bool:
        return (max_kl is None or kl <= max_kl) and (max_drop is None or drop + z * se <= max_drop)

    bits = dict.fromkeys(masks, max_bits)
    current = {n: q(n, b) for n, b in bits.items()}
    kl_now, _ = trial.measure(current)
    order = {n: i for i, n in enumerate(masks)}  # ties go to the earlier layer, as in a plain scan
    version = 0  # bumped whenever a layer is lowered: heap entries from older versions are estimates
    heap: list[tuple[float, int, str, int, float]] = []  # (cost, order, name, version measured, kl)

    def offer(name: str) -> None:
        """Measure `name` one bit lower under the current bits; queue it, or freeze it if over budget."""
        if int(masks[name].sum()) == 0 or bits[name] <= min_bits:
            return
        kl, drop, se = trial.measure_se({**current, name: q(name, bits[name] - 1)})
        if within(kl, drop, se):
            cost = max(kl - kl_now, 0.0) / max(1, int(masks[name].sum()))
            heapq.heappush(heap, (cost, order[name], name, version, kl))

    bar = progress
    if bar is not None:
        bar.start("bit allocation", len(masks) * max(0, max_bits - min_bits))
    lowered = 0
    for name in masks:
        offer(name)
    while heap:
        _, _, name, measured_at, kl = heapq.heappop(heap)
        if measured_at != version:  # an estimate: measure again under the current bits
            offer(name)
            if not heap or heap[0][2] != name or heap[0][3] != version:
                continue  # over budget now (frozen), or no longer the cheapest: the heap decides again
            _, _, name, _, kl = heapq.heappop(heap)
        bits[name] -= 1
        current[name] = q(name, bits[name])
        kl_now, version = kl, version + 1
        lowered += 1
        if bar is not None:
            text = f"bit allocation: {name} -> {bits[name]} bits, KL {kl:.4g}"
            bar.advance(text)
            if lowered % 10 == 0:
                bar.line(f"{text} (mean {sum(bits.values()) / len(bits):.2f} bits, {lowered} bits lowered)")
        offer(name)
    if bar is not None:
        bar.stop()
    return current
