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

Fisher order (`order="fisher"`, for big nets): on MobileNetV2 (52 layers) the costs of 8 -> 7 bits are
noise-sized and reshuffle after every change, so the lazy heap re-measures nearly every layer per
bit lowered (about 90 s each on 2 cores; hours in all). There each step's KL is predicted from the
diagonal Fisher instead (`fisher_steps`, no forward pass), and only the budget is measured: a
bisection along that order, a few dozen passes in all (`_fisher_descent`).

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

__all__ = ["allocate_bits", "best_quantizer", "drop_se", "fisher_steps", "fixed_bits", "z_score"]


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
    order: str = "measured",
    max_passes: int | None = None,
    progress: Any = None,
) -> dict[str, Quantizer]:
    """Greedy per-layer bits under the budget (KL and/or accuracy drop in points vs the teacher).

    `labels` None: accuracy = agreement with the teacher's top-1. The budget is checked on `x`:
    the drop plus `z` standard errors of it (`z_score(confidence)`) must stay within `max_drop`, so
    the greedy descent does not spend the batch's sampling noise as if it were budget.
    `order`: "measured" (each candidate's KL measured by a forward pass, the lazy heap above) or
    "fisher" (each candidate's KL predicted from the diagonal Fisher; only the budget is measured,
    by bisection along the predicted order: tens of passes where "measured" needs thousands on a
    50-layer net; see `_fisher_descent`). `max_passes`: the Fisher descent's forward passes
    (None: twice the layers, at least 16); the result is always one it measured within budget.
    `progress`: a `CompressProgress`; the descent advances its bar per bit lowered and prints a
    line every 10 (minutes on a conv net's budget batch).
    """
    if order not in ("measured", "fisher"):
        raise ValueError(f"allocate_bits: order={order!r}; expected 'measured' or 'fisher'")
    labels = teacher_logits.argmax(1) if labels is None else labels
    trial = _Trial(model, masks, x, teacher_logits, labels)
    cache: dict[tuple[str, int], Quantizer] = {}

    def q(name: str, b: int) -> Quantizer:
        if (name, b) not in cache:
            cache[(name, b)] = best_quantizer(trial.original[name][masks[name]], b, kind)
        return cache[(name, b)]

    def within(kl: float, drop: float, se: float) -> bool:
        return (max_kl is None or kl <= max_kl) and (max_drop is None or drop + z * se <= max_drop)

    if order == "fisher":
        passes = max(16, 2 * len(masks)) if max_passes is None else max_passes
        return _fisher_descent(trial, q, within, min_bits, max_bits, passes, progress)
    bits = dict.fromkeys(masks, max_bits)
    current = {n: q(n, b) for n, b in bits.items()}
    kl_now, _ = trial.measure(current)
    rank = {n: i for i, n in enumerate(masks)}  # ties go to the earlier layer, as in a plain scan
    version = 0  # bumped whenever a layer is lowered: heap entries from older versions are estimates
    heap: list[tuple[float, int, str, int, float]] = []  # (cost, order, name, version measured, kl)

    def offer(name: str) -> None:
        """Measure `name` one bit lower under the current bits; queue it, or freeze it if over budget."""
        if int(masks[name].sum()) == 0 or bits[name] <= min_bits:
            return
        kl, drop, se = trial.measure_se({**current, name: q(name, bits[name] - 1)})
        if within(kl, drop, se):
            cost = max(kl - kl_now, 0.0) / max(1, int(masks[name].sum()))
            heapq.heappush(heap, (cost, rank[name], name, version, kl))

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


def fisher_steps(
    fisher: Mapping[str, torch.Tensor],
    weights: Mapping[str, torch.Tensor],
    masks: Mapping[str, torch.Tensor],
    quantizer: Any,
    min_bits: int,
    max_bits: int,
) -> list[str]:
    """The greedy descent replayed on predicted costs: the layer lowered by one bit at each step, in order.

    A layer's predicted KL at b bits is 1/2 * sum F_ii * (w_i - q_b(w_i))^2 over its survivors (the
    second-order expansion of the KL, `prunus.compress.fisher`); a step's cost is the KL it adds per
    bit saved (the increase over the layer's survivors), as the measured greedy's. Predicted costs of
    different layers do not interact, so one heap gives the exact greedy order with no forward pass.
    `quantizer(name, bits)` gives the layer's `Quantizer`; layers with no survivors take no steps.

    Example:
        >>> w = {"a": torch.linspace(-1, 1, 64), "b": torch.linspace(-1, 1, 64)}
        >>> f = {"a": torch.full((64,), 100.0), "b": torch.ones(64)}  # "a" is the sensitive one
        >>> m = {n: torch.ones(64, dtype=torch.bool) for n in w}
        >>> fisher_steps(f, w, m, lambda n, b: best_quantizer(w[n], b, "uniform"), 2, 4)
        ['b', 'b', 'a', 'a']
    """
    rank = {n: i for i, n in enumerate(masks)}  # ties go to the earlier layer
    live = [n for n in masks if int(masks[n].sum()) > 0]

    def predicted(name: str, b: int) -> float:
        w, qq = weights[name][masks[name]], quantizer(name, b)
        return 0.5 * float((fisher[name][masks[name]] * (dequantize(quantize(w, qq), qq) - w) ** 2).sum())

    now = {n: predicted(n, max_bits) for n in live}  # each layer's predicted KL at its current bits
    below: dict[str, float] = {}  # ... and one bit lower, for when that step is taken
    bits = dict.fromkeys(live, max_bits)
    heap: list[tuple[float, int, str]] = []

    def push(name: str) -> None:
        if bits[name] > min_bits:
            below[name] = predicted(name, bits[name] - 1)
            heapq.heappush(heap, (max(below[name] - now[name], 0.0) / int(masks[name].sum()), rank[name], name))

    for n in live:
        push(n)
    steps = []
    while heap:
        _, _, name = heapq.heappop(heap)
        steps.append(name)
        bits[name] -= 1
        now[name] = below[name]
        push(name)
    return steps


def _fisher_descent(trial: _Trial, q: Any, within: Any, min_bits: int, max_bits: int, passes: int,
                    progress: Any, gallop: bool = True) -> dict[str, Quantizer]:  # fmt: skip
    """Bits along the Fisher-predicted greedy order (`fisher_steps`), as far as the measured budget allows.

    The longest prefix of the order within budget is found by bisection on measured passes (the
    budget is measured, never predicted). The step that broke it freezes its layer: the layer's later
    steps leave the order and the search goes on past it, while `passes` remain. The state returned
    is always one measured within budget (all `max_bits` when even that is not).

    After a freeze the search gallops (`gallop`, the default): it tries 1, 2, 4 ... steps past the
    last good prefix before bisecting. At the budget's edge the next break is usually a step or two
    away, found in one or two passes where a bisection over the rest of the order spends about
    log2(steps) (8-9 on MobileNetV2); `gallop=False` is that bisection, kept for comparison.
    """
    from prunus.compress.fisher import fisher_diagonal

    masks = trial.masks
    fisher = fisher_diagonal(trial.model, [n for n in masks if int(masks[n].sum()) > 0], trial.x)
    steps = fisher_steps(fisher, trial.original, masks, q, min_bits, max_bits)

    def state(k: int) -> dict[str, Quantizer]:
        bits = dict.fromkeys(masks, max_bits)
        for name in steps[:k]:
            bits[name] -= 1
        return {n: q(n, b) for n, b in bits.items()}

    bar = progress
    if bar is not None:
        bar.start("bit allocation (Fisher order, measured budget)", passes)
    used = 0

    def ok(k: int) -> bool:
        nonlocal used
        used += 1
        quantizers = state(k)
        good = within(*trial.measure_se(quantizers))
        if bar is not None:
            mean = sum(v.bits for v in quantizers.values()) / max(1, len(quantizers))
            bar.advance(f"bit allocation: {k} of {len(steps)} steps {'within' if good else 'over'} budget "
                        f"(mean {mean:.2f} bits)")  # fmt: skip
        return good

    lo, hi = 0, len(steps) + 1  # steps[:lo] measured within budget; steps[:hi] over it (hi past the end: unmeasured)
    stride = 0  # > 0 while galloping: the next prefix tried is lo + stride
    if not ok(0):
        steps = []
    while used < passes and lo < len(steps):
        if stride and lo + stride < hi:
            if ok(lo + stride):
                lo, stride = lo + stride, 2 * stride
            else:
                hi, stride = lo + stride, 0
            continue
        stride = 0
        if hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (mid, hi) if ok(mid) else (lo, mid)
            continue
        # steps[:lo + 1] broke the budget: its last step's layer keeps its bits, the order goes on without it
        frozen = steps[lo]
        steps = steps[:lo] + [n for n in steps[lo + 1 :] if n != frozen]
        hi, stride = len(steps) + 1, (1 if gallop else 0)
    if bar is not None:
        bar.stop()
    return state(lo)
