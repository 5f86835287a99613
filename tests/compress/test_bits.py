"""Greedy bit allocation: the lazy heap picks what the plain greedy scan picks, in fewer passes."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn

from prunus.compress import bits as bits_mod


def _net(seed: int) -> tuple[nn.Module, torch.Tensor, dict[str, torch.Tensor]]:
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(64, 48), nn.ReLU(), nn.Linear(48, 32), nn.ReLU(), nn.Linear(32, 24), nn.ReLU(),
                        nn.Linear(24, 10)).eval()  # fmt: skip
    with torch.no_grad():  # some pruned weights, as after the DE search
        for m in net:
            if isinstance(m, nn.Linear):
                m.weight.mul_((torch.rand_like(m.weight) > 0.3).float())
    masks = {n: m.weight != 0 for n, m in net.named_modules() if isinstance(m, nn.Linear)}
    return net, torch.randn(512, 64), masks


def _plain_greedy(net, masks, x, teacher, max_kl, max_drop):
    """The textbook scan: every round re-measures every layer's next step and lowers the cheapest."""
    trial = bits_mod._Trial(net, masks, x, teacher, teacher.argmax(1))

    def q(n, b):
        return bits_mod.best_quantizer(trial.original[n][masks[n]], b, "kmeans")

    bits = dict.fromkeys(masks, 8)
    current = {n: q(n, 8) for n in masks}
    kl_now, _ = trial.measure(current)
    frozen: set[str] = set()
    while True:
        best, best_cost, best_kl = None, float("inf"), kl_now
        for n in masks:
            if n in frozen or bits[n] <= 2:
                continue
            kl, drop = trial.measure({**current, n: q(n, bits[n] - 1)})
            if (max_kl is not None and kl > max_kl) or (max_drop is not None and drop > max_drop):
                frozen.add(n)
                continue
            cost = max(kl - kl_now, 0.0) / int(masks[n].sum())
            if cost < best_cost:
                best, best_cost, best_kl = n, cost, kl
        if best is None:
            return bits, kl_now
        bits[best] -= 1
        current[best] = q(best, bits[best])
        kl_now = best_kl


@pytest.mark.parametrize(("max_kl", "seed"), list(itertools.product((1e-5, 1e-4, 5e-4), range(3))))
def test_lazy_greedy_chooses_the_plain_greedy_bits_within_the_budget(max_kl, seed, monkeypatch):
    net, x, masks = _net(seed)
    teacher = net(x).detach()
    calls = []
    measure = bits_mod._Trial.measure
    monkeypatch.setattr(bits_mod._Trial, "measure", lambda self, qs: calls.append(1) or measure(self, qs))
    lazy = bits_mod.allocate_bits(net, masks, x, teacher, None, max_kl=max_kl, max_drop=None)
    monkeypatch.undo()
    plain_bits, plain_kl = _plain_greedy(net, masks, x, teacher, max_kl, None)
    assert {n: q.bits for n, q in lazy.items()} == plain_bits
    kl, _ = bits_mod._Trial(net, masks, x, teacher, teacher.argmax(1)).measure(lazy)
    assert kl <= max_kl
    assert kl == pytest.approx(plain_kl, rel=1e-6)
    # at most: one pass for the start, one per layer, and three per bit lowered
    lowered = sum(8 - b for b in plain_bits.values())
    assert len(calls) <= 1 + len(masks) + 3 * lowered


def test_accuracy_budget_is_respected_and_only_moves_within_it_are_taken():
    net, x, masks = _net(0)
    teacher = net(x).detach()
    labels = teacher.argmax(1)
    trial = bits_mod._Trial(net, masks, x, teacher, labels)
    _, start_drop = trial.measure(bits_mod.fixed_bits(net, masks, 8, "kmeans"))
    assert start_drop > 0  # 8-bit k-means already flips a few of these 512 predictions
    strict = bits_mod.allocate_bits(net, masks, x, teacher, labels, max_kl=None, max_drop=start_drop / 2)
    if any(q.bits < 8 for q in strict.values()):  # a step may undo the 8-bit flips; only such steps are taken
        assert trial.measure(strict)[1] <= start_drop / 2
    chosen = bits_mod.allocate_bits(net, masks, x, teacher, labels, max_kl=None, max_drop=2.0)
    assert trial.measure(chosen)[1] <= 2.0
    assert sum(q.bits for q in chosen.values()) < 8 * len(masks)
    loose = bits_mod.allocate_bits(net, masks, x, teacher, labels, max_kl=None, max_drop=100.0)
    assert all(q.bits == 2 for q in loose.values())  # no budget to speak of: every layer to min_bits


def test_the_drop_budget_holds_at_the_confidence_asked_not_on_the_measured_drop_alone():
    """With z > 0 the greedy keeps drop + z * s.e. within max_drop on the batch; with z = 0 the same budget
    lets it spend the noise (its result breaks the bound). The s.e. is the paired per-image spread."""
    net, x, masks = _net(0)
    teacher = net(x).detach()
    labels = teacher.argmax(1)
    trial = bits_mod._Trial(net, masks, x, teacher, labels)
    z = bits_mod.z_score(0.95)
    plain = bits_mod.allocate_bits(net, masks, x, teacher, labels, max_kl=None, max_drop=2.0)
    kl, drop, se = trial.measure_se(plain)
    assert drop <= 2.0
    assert drop + z * se > 2.0  # the point estimate alone used the noise as budget
    right = (net(x).argmax(1) == labels).float()  # unquantized: no drop at all
    assert bits_mod.drop_se(right, right) == 0.0
    sure = bits_mod.allocate_bits(net, masks, x, teacher, labels, max_kl=None, max_drop=2.0, z=z)
    _, drop_sure, se_sure = trial.measure_se(sure)
    assert drop_sure + z * se_sure <= 2.0
    assert sum(q.bits for q in sure.values()) > sum(q.bits for q in plain.values())
    # the s.e. by hand: paired differences of per-image correctness, sample std / sqrt(n), in points
    with torch.no_grad():
        for name, q in sure.items():
            trial.layers[name].weight.copy_(trial.weight(name, q))
        student_right = (net(x).argmax(1) == labels).float()
        for name, w in trial.original.items():
            trial.layers[name].weight.copy_(w)
    d = (labels == labels).float() - student_right
    n = d.numel()
    by_hand = 100 * (((d - d.mean()) ** 2).sum() / (n - 1)).sqrt().item() / n**0.5
    assert se_sure == pytest.approx(by_hand)


@pytest.mark.parametrize(("confidence", "z"), [(0.5, 0.0), (0.95, 1.6448536), (0.99, 2.3263479)])
def test_z_score_is_the_one_sided_normal_quantile(confidence, z):
    assert bits_mod.z_score(confidence) == pytest.approx(z, abs=1e-6)
