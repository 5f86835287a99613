"""WE `code` mode == a plain-loop re-implementation of the reference repository's rules.

The re-implementation below is written from the project's spec (../shared/docs/methods.md,
section 3, with its 2026-12-04 correction), element by element in Python floats, and shares no
code with `prunus.methods._evolution`: scores, the global threshold sorted(scores)[int(n r)],
the local selection with the starvation counter (patience = #conv layers / 2, reset when a
layer has local candidates), rank pairing of the k weakest with the n - k others, the
whole-filter branch taken when the kernel is one row high (`W[j].shape[1] == 1` on W[j] of
shape (C_in/groups, k, k)), the per-slice crossover a = s / (s + l), new = a l + (1 - a) s
written where the slice holds s, and the BN blends. The model has every layer type the rule
separates: a greyscale 3x3 stem, a 1x1 conv, a depthwise 3x3 and an ordinary 3x3.
"""

from __future__ import annotations

import math
import types

import pytest
import torch
from torch import nn

from prunus.engine import TrainConfig
from prunus.methods import create_method
from prunus.methods._evolution import global_threshold


class _Mixed(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, 8, 3, padding=1, bias=False)  # greyscale stem: (1, 3, 3) filters
        self.bn1 = nn.BatchNorm2d(8)
        self.expand = nn.Conv2d(8, 16, 1, bias=False)  # 1x1: (8, 1, 1) filters
        self.bn2 = nn.BatchNorm2d(16)
        self.dw = nn.Conv2d(16, 16, 3, padding=1, groups=16, bias=False)  # depthwise: (1, 3, 3)
        self.bn3 = nn.BatchNorm2d(16)
        self.conv = nn.Conv2d(16, 12, 3, padding=1, bias=False)  # ordinary: (16, 3, 3)
        self.bn4 = nn.BatchNorm2d(12)
        self.fc = nn.Linear(12, 3)

    def forward(self, x):
        x = torch.relu(self.bn1(self.stem(x)))
        x = torch.relu(self.bn2(self.expand(x)))
        x = torch.relu(self.bn3(self.dw(x)))
        x = torch.relu(self.bn4(self.conv(x)))
        return self.fc(x.mean((2, 3)))


def _model(seed: int) -> _Mixed:
    """Weak filters in some layers (local candidates), one layer of uniformly middling filters
    (under the global threshold with no local candidate: it starves), BN entries spread out."""
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)  # the Linear's initialisation
    net = _Mixed()
    with torch.no_grad():
        for m in (net.stem, net.expand, net.dw, net.conv):
            m.weight.copy_(torch.randn(m.weight.shape, generator=gen))
        net.stem.weight[[1, 5]] *= 0.01
        net.expand.weight[[0, 3, 9]] *= 0.02
        net.dw.weight.mul_(0.05)  # every depthwise filter under the threshold, none under 0.1 * max
        net.dw.weight.add_(0.02 * torch.sign(net.dw.weight))
        net.conv.weight[[2, 7]] *= 0.03
        for bn in (net.bn1, net.bn2, net.bn3, net.bn4):
            bn.weight.copy_(torch.rand(bn.weight.shape, generator=gen) * 2 - 0.5)
            bn.bias.copy_(torch.randn(bn.bias.shape, generator=gen))
        net.bn2.weight[4] = 1e-3
        net.bn4.bias[1] = -2e-3
    return net


# --------------------------------------------------------------------- the reference, as loops


def _reference_layer(w: list, scores: list[float], th: float, lam: float, counter: int, patience: float, blend):
    """One layer's selection and evolution; `w` is a list of per-filter values, edited in place."""
    n = len(scores)
    n_low = sum(1 for s in scores if s < th)
    if n_low == 0:
        return counter, 0
    top = max(abs(s) for s in scores)
    n_loc = sum(1 for s in scores if abs(s) <= top * lam)
    forced = 0
    if n_loc == 0:
        counter += 1
        if counter >= patience:
            n_loc, counter, forced = 1, 0, 1
    else:
        counter = 0
    k = min(n_loc, n_low)
    order = sorted(range(n), key=lambda f: -scores[f])  # strongest first
    high, low = order[: n - k], order[n - k :]
    for i, j in zip(high, low):  # pairs by rank until one list runs out
        blend(w, i, j)
    return counter, forced


def _conv_blend(kernel_height: int):
    def blend(w, i, j):
        if kernel_height == 1:  # the reference's W[j].shape[1] == 1: the whole filter
            l1_j = sum(abs(v) for sl in w[j] for v in sl)
            l1_i = sum(abs(v) for sl in w[i] for v in sl)
            a = l1_j / (l1_j + l1_i)
            w[j] = [[a * vj + (1 - a) * vi for vj, vi in zip(sj, si)] for sj, si in zip(w[j], w[i])]
            return
        for h in range(len(w[j])):  # every input-channel slice of k x k elements
            large = max(w[i][h], key=abs)
            small = min(w[j][h], key=abs)
            a = small / (small + large)
            new = large * a + small * (1 - a)
            w[j][h] = [new if v == small else v for v in w[j][h]]

    return blend


def _bn_blend(w, i, j):
    a = abs(w[j]) / (abs(w[j]) + abs(w[i]))
    w[j] = w[j] * a + w[i] * (1 - a)


def _reference_evolve(net: nn.Module, ratios: tuple[float, float, float], lam: float, counters: dict) -> dict:
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    bns = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    patience = len(convs) / 2
    filters = {id(m): [[sl.flatten().tolist() for sl in f] for f in m.weight.detach()] for m in convs}
    conv_scores = {id(m): [sum(abs(v) for sl in f for v in sl) / m.weight.shape[1] for f in filters[id(m)]]
                   for m in convs}  # fmt: skip
    gammas = {id(m): m.weight.detach().tolist() for m in bns}
    betas = {id(m): m.bias.detach().tolist() for m in bns}
    forced = 0

    def threshold(values: list[float], r: float) -> float:
        pooled = sorted(values)
        return pooled[int(len(pooled) * r)]

    th = threshold([s for m in convs for s in conv_scores[id(m)]], ratios[0])
    for m in convs:
        counters["conv"], f = _reference_layer(
            filters[id(m)], conv_scores[id(m)], th, lam, counters["conv"], patience, _conv_blend(m.weight.shape[2])
        )
        forced += f
    for key, ratio, values in (("gamma", ratios[1], gammas), ("beta", ratios[2], betas)):
        th = threshold([abs(v) for m in bns for v in values[id(m)]], ratio)
        for m in bns:
            counters[key], f = _reference_layer(
                values[id(m)], [abs(v) for v in values[id(m)]], th, lam, counters[key], patience, _bn_blend
            )
            forced += f
    with torch.no_grad():
        for m in convs:
            m.weight.copy_(torch.tensor(filters[id(m)], dtype=torch.float64).view(m.weight.shape))
        for m in bns:
            m.weight.copy_(torch.tensor(gammas[id(m)], dtype=torch.float64))
            m.bias.copy_(torch.tensor(betas[id(m)], dtype=torch.float64))
    return {"forced": forced}


def _reference_ratio(epoch: int, base: float) -> float:
    """The spec's schedule for 200 epochs with LR steps at 60 and 120 (temperature = phase length / 4)."""
    phases, ends = (0, 60, 120), (60, 120, 200)
    p = max(i for i, s in enumerate(phases) if s <= epoch)
    divisor = (1.0, 2.5, 5.0)[p]
    return base / divisor / (1 + math.exp(-(epoch - phases[p]) / ((ends[p] - phases[p]) / 4)))


# ------------------------------------------------------------------------------------ the tests


def _fake_trainer(model: nn.Module, epoch: int):
    cfg = TrainConfig(epochs=200, schedule="step", milestones=(60, 120), lr=0.1)
    return types.SimpleNamespace(model=model, config=cfg, epoch=epoch, optimizer=None, log_metrics=lambda m: None)


def test_code_mode_equals_the_reference_loops_on_every_layer_type():
    ours, ref = _model(0), _model(0)
    we = create_method("we", mode="code", ratio_conv=0.5, ratio_bn=0.3, ratio_bias=0.3)
    counters = {"conv": 0, "gamma": 0, "beta": 0}
    forced = 0
    gen = torch.Generator().manual_seed(1)
    touched: dict[str, bool] = {}
    for epoch in (0, 1, 2, 3, 10, 30, 59, 60, 61, 90):  # the evolution after `epoch` runs as epoch + 1 starts
        before = {k: v.clone() for k, v in ref.state_dict().items()}
        we.on_epoch_start(_fake_trainer(ours, epoch + 1))
        ratios = tuple(_reference_ratio(epoch, r) for r in (0.5, 0.3, 0.3))
        forced += _reference_evolve(ref, ratios, 0.1, counters)["forced"]
        for (name, a), b in zip(ours.state_dict().items(), ref.state_dict().values()):
            torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7, msg=f"epoch {epoch}: {name}")
        for name, v in ref.state_dict().items():
            touched[name] = touched.get(name, False) or not torch.equal(v, before[name])
        assert we.counters == counters
        with torch.no_grad():  # "training" between evolutions: both models move the same way
            for (_, a), (_, b) in zip(ours.named_parameters(), ref.named_parameters()):
                step = 0.05 * torch.randn(a.shape, generator=gen)
                a.add_(step)
                b.add_(step)
    # the comparison covered every layer type and both starvation paths
    for name in ("stem.weight", "expand.weight", "dw.weight", "conv.weight", "bn2.weight", "bn4.bias"):
        assert touched[name], name
    assert forced > 0


def test_code_mode_rewrites_one_element_of_a_depthwise_filter_and_all_of_a_1x1_filter():
    net = _model(0)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    create_method("we", mode="code", ratio_conv=0.5, ratio_bn=0.0, ratio_bias=0.0).on_epoch_start(
        _fake_trainer(net, 11)
    )
    after = net.state_dict()
    changed_expand = (after["expand.weight"] != before["expand.weight"]).flatten(1).sum(1)
    assert sorted(changed_expand[changed_expand > 0].tolist()) == [8, 8, 8]  # 1x1: three filters blended whole
    for name, per_filter in (("stem.weight", 9), ("conv.weight", 16 * 9)):
        changed = (after[name] != before[name]).flatten(1).sum(1)
        assert changed.max() <= per_filter // 9  # one element per k x k slice
    dw = (after["dw.weight"] != before["dw.weight"]).flatten(1).sum(1)
    assert set(dw.tolist()) <= {0, 1}  # depthwise 3x3: the element crossover, never the 9-element blend


@pytest.mark.parametrize(("n", "ratio"), [(5, 0.5), (10, 0.25), (7, 0.999), (3, 0.0), (40, 0.2)])
def test_global_threshold_is_the_sorted_scores_at_int_n_r(n, ratio):
    scores = torch.randperm(n).float() + 1
    assert global_threshold(scores, ratio) == sorted(scores.tolist())[int(n * ratio)]


def test_local_selection_pairs_and_counters_equal_the_reference_on_random_layers():
    from prunus.methods._evolution import local_selection

    gen = torch.Generator().manual_seed(3)
    counter_ours = counter_ref = 0
    short = 0  # layers whose inferior candidates outnumber their dominant partners
    for trial in range(300):
        n = int(torch.randint(2, 12, (1,), generator=gen))
        # many near-zero filters in some layers (k > n / 2: fewer dominant than inferior filters)
        scores = torch.rand(n, generator=gen) * torch.where(torch.rand(n, generator=gen) < 0.6, 0.05, 1.0)
        th = float(torch.rand(1, generator=gen)) * 0.8
        lam = (0.1, 0.5, 0.9)[trial % 3]
        pairs: list[tuple[int, int]] = []
        counter_ref, _ = _reference_layer(
            [0.0] * n, scores.tolist(), th, lam, counter_ref, 2.5, lambda w, i, j: pairs.append((i, j))
        )
        sel, counter_ours = local_selection(scores, th, lam, counter_ours, 2.5)
        got = [] if sel is None else list(zip(sel.dominant.tolist(), sel.inferior.tolist()))
        assert got == pairs, (scores.tolist(), th, lam)
        assert counter_ours == counter_ref
        values = scores.tolist()
        k = min(sum(s < th for s in values), sum(s <= lam * max(values) for s in values))
        short += 0 < len(pairs) < k
    assert short > 0
