"""Weight Evolution and grafting cores on hand-made tensors: counts, pairing, values, guards."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from prunus.methods._evolution import (
    blend_rows_,
    crossover_slices_,
    evolution_ratio,
    evolve_,
    filter_scores,
    local_selection,
    phase_starts,
)
from prunus.methods._grafting import (
    blend_unit_,
    graft_coefficient,
    graft_units,
    internal_graft_,
    invalid_filters,
    layer_entropy,
    layer_information,
    noise_graft_,
    unit_tensors,
)

# ------------------------------------------------------------------------------ WE selection


def test_ratio_schedule_reproduces_the_reference_phases():
    phases = phase_starts(200, (60, 120))
    assert phases == [0, 60, 120]
    sig = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    for e, expected in ((0, 0.2 * 0.5), (30, 0.2 * sig(2)), (90, 0.2 / 2.5 * sig(2)), (150, 0.2 / 5 * sig(30 / 20))):
        assert evolution_ratio(e, 0.2, phases, 200) == pytest.approx(expected)
    # a cosine schedule has one phase: temperature = epochs / 4
    assert evolution_ratio(5, 0.2, phase_starts(10), 10) == pytest.approx(0.2 * sig(2))


def test_local_selection_counts_and_rank_matching():
    scores = torch.tensor([5.0, 0.1, 4.0, 0.2, 3.0, 0.05])
    sel, counter = local_selection(scores, threshold=1.0, lam=0.1, starvation=0, patience=3)
    # n_low = 3 (0.1, 0.2, 0.05), n_loc = #(s <= 0.5) = 3 -> k = 3
    assert sel.dominant.tolist() == [0, 2, 4]  # strongest first
    assert sel.inferior.tolist() == [3, 1, 5]  # strongest inferior first: 0.2, 0.1, 0.05
    assert counter == 0
    assert not sel.forced
    # lambda limits k: only 0.05 is <= 0.1 * 5 * 0.12
    sel, _ = local_selection(scores, 1.0, 0.012, 0, 3)
    assert sel.inferior.tolist() == [5]
    assert sel.dominant.tolist() == [0]
    # nothing under the global threshold: the layer is skipped
    assert local_selection(scores, 0.01, 0.1, 2, 3) == (None, 2)


def test_starvation_counter_forces_one_evolution_then_resets():
    scores = torch.tensor([1.0, 0.9, 0.8, 0.95])  # all under th=2 but none under 0.1 * max
    sel, c = local_selection(scores, 2.0, 0.1, 0, patience=2)
    assert sel is None
    assert c == 1
    sel, c = local_selection(scores, 2.0, 0.1, c, patience=2)
    assert sel.forced
    assert c == 0
    assert sel.inferior.tolist() == [2]
    assert sel.dominant.tolist() == [0]


# ------------------------------------------------------------------------------ WE crossover


def _slices(values_dom, values_inf):
    w = torch.tensor([values_dom, values_inf], dtype=torch.float32).view(2, 1, 2, 1)
    return w


def test_crossover_values_in_both_modes():
    # dominant slice [3, -1] -> l = 3; inferior slice [0.5, -0.2] -> s = -0.2 at position 1
    w = _slices([3.0, -1.0], [0.5, -0.2])
    assert crossover_slices_(w, torch.tensor([0]), torch.tensor([1]), "paper") == 1
    a = 0.2 / 3.2
    assert w[1].flatten().tolist() == pytest.approx([0.5, (1 - a) * 3 + a * -0.2])  # 2.8
    assert w[0].flatten().tolist() == [3.0, -1.0]  # the donor is untouched
    w = _slices([3.0, -1.0], [0.5, -0.2])
    crossover_slices_(w, torch.tensor([0]), torch.tensor([1]), "code")
    assert w[1].flatten().tolist() == pytest.approx([0.5, 2 * -0.2 * 3 / (3 - 0.2)])  # a*l + (1-a)*s = 2sl/(s+l)
    # zero denominators leave s alone (code: s = -l; paper: both zero)
    w = _slices([3.0, 0.0], [-3.0, 5.0])
    crossover_slices_(w, torch.tensor([0]), torch.tensor([1]), "code")
    assert w[1].flatten().tolist() == [-3.0, 5.0]
    w = _slices([0.0, 0.0], [0.5, 0.0])
    crossover_slices_(w, torch.tensor([0]), torch.tensor([1]), "paper")
    assert w[1].flatten().tolist() == [0.5, 0.0]


@pytest.mark.parametrize("mode", ["paper", "code"])
def test_vectorised_crossover_equals_element_loop(mode):
    g = torch.Generator().manual_seed(1)
    w = torch.randn(6, 3, 3, 3, generator=g)
    ref = w.clone()
    dom, inf = torch.tensor([4, 0, 2]), torch.tensor([1, 5, 3])
    assert crossover_slices_(w, dom, inf, mode) == 9
    for i, j in zip(dom.tolist(), inf.tolist()):
        for h in range(3):
            d, x = ref[i, h].flatten(), ref[j, h].flatten()
            big, pos = d[d.abs().argmax()], int(x.abs().argmin())
            s = x[pos]
            if mode == "paper":
                a = s.abs() / (s.abs() + big.abs())
                new = (1 - a) * big + a * s
            else:
                a = s / (s + big)
                new = a * big + (1 - a) * s
            x = x.clone()
            x[pos] = new
            ref[j, h] = x.view(3, 3)
    torch.testing.assert_close(w, ref)


def test_whole_row_blend_for_depthwise_and_bn():
    w = torch.tensor([[1.0, -1.0], [0.1, 0.1], [4.0, 0.0]]).view(3, 1, 2, 1)
    assert blend_rows_(w, torch.tensor([2]), torch.tensor([1])) == 1
    a = 0.2 / (0.2 + 4.0)
    assert w[1].flatten().tolist() == pytest.approx([a * 0.1 + (1 - a) * 4.0, a * 0.1])
    gamma = torch.tensor([2.0, -0.5, 0.0])
    blend_rows_(gamma, torch.tensor([0]), torch.tensor([2]))
    assert gamma.tolist() == pytest.approx([2.0, -0.5, 2.0])  # |gamma_j| = 0 -> alpha 0 -> takes gamma_i


class _Net(nn.Module):
    """Greyscale 3x3 stem, a depthwise 3x3 conv, a full conv (all crossed over per slice), BN, Linear."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(1, 8, 3, padding=1, bias=True)
        self.bn1 = nn.BatchNorm2d(8)
        self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False)
        self.conv = nn.Conv2d(8, 8, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8, 3)

    def forward(self, x):
        x = torch.relu(self.bn1(self.stem(x)))
        x = torch.relu(self.bn2(self.conv(self.dw(x))))
        return self.fc(x.mean((2, 3)))


def _weak_net():
    torch.manual_seed(0)
    net = _Net()
    with torch.no_grad():
        for m in (net.stem, net.dw, net.conv):
            m.weight[:2] *= 1e-3  # two weak filters per layer
        for bn in (net.bn1, net.bn2):
            bn.weight.copy_(torch.linspace(0.001, 1.0, 8))
            bn.bias.copy_(torch.linspace(1.0, 0.001, 8))
            bn.running_mean.uniform_()
            bn.running_var.uniform_(0.5, 1.5)
    return net


def test_evolve_touches_only_conv_weights_and_bn_affine():
    net = _weak_net()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    stats = evolve_(net, ratios=(0.3, 0.2, 0.2), lam=0.1, mode="paper", counters={})
    after = net.state_dict()
    # pooled 24 filter scores, sorted[int(24 * 0.3)] = sorted[7]: the 6 weak ones are under it and under 0.1 * max
    assert stats.filters == 6
    # 3x3 kernels: one slice per stem and depthwise filter (2 each), the full conv 2 filters x 8 slices
    assert stats.slices == 2 + 2 + 16
    assert stats.bn_channels > 0
    assert stats.forced == 0
    for k in ("stem.bias", "fc.weight", "fc.bias", "bn1.running_mean", "bn1.running_var", "bn2.running_var"):
        assert torch.equal(before[k], after[k]), k
    for k in ("stem.weight", "dw.weight", "conv.weight", "bn1.weight", "bn2.bias"):
        assert not torch.equal(before[k], after[k]), k
    # strong filters are donors only
    assert torch.equal(before["conv.weight"][2:], after["conv.weight"][2:])
    # each inferior filter changed exactly one element per 3x3 slice (the stem and depthwise too)
    for name in ("stem.weight", "dw.weight", "conv.weight"):
        changed = (before[name][:2] != after[name][:2]).flatten(2).sum(-1)
        assert changed.eq(1).all(), name


def test_gamma_and_beta_have_their_own_selection_and_counters():
    net = _weak_net()
    counters: dict[str, int] = {}
    g_before, b_before = net.bn1.weight.clone(), net.bn1.bias.clone()
    evolve_(net, ratios=(0.0, 0.2, 0.0), counters=counters)
    assert not torch.equal(net.bn1.weight, g_before)
    assert torch.equal(net.bn1.bias, b_before)
    assert set(counters) == {"conv", "gamma", "beta"}
    # gamma is small at the start of the channel axis, beta at the end: different inferior rows
    net = _weak_net()
    evolve_(net, ratios=(0.0, 0.0, 0.2), counters=counters)
    changed = (net.bn1.bias != b_before).nonzero().flatten().tolist()
    assert changed
    assert min(changed) >= 4


def test_filter_scores_divide_by_input_channels():
    w = torch.ones(2, 4, 3, 3)
    assert filter_scores(w).tolist() == [9.0, 9.0]


# ------------------------------------------------------------------------------ grafting


def test_entropy_and_l1_information_of_known_tensors():
    assert layer_entropy(torch.arange(10.0)) == pytest.approx(math.log(10))
    # half-open bins (the reference): the maximum falls in no bin, p still divides by the 10 elements
    assert layer_entropy(torch.arange(10.0), binning="half-open") == pytest.approx(-0.9 * math.log(0.1))
    assert layer_entropy(torch.tensor([0.0, 0.0, 0.0, 1.0]), binning="half-open") == pytest.approx(
        -0.75 * math.log(0.75)
    )
    assert layer_entropy(torch.full((3,), 2.0), binning="half-open") == 0.0
    with pytest.raises(ValueError, match="half-open"):
        layer_entropy(torch.arange(3.0), binning="open")
    assert layer_entropy(torch.full((5, 5), 3.0)) == 0.0
    assert layer_entropy(torch.tensor([0.0, 0.0, 0.0, 1.0])) == pytest.approx(
        -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    )
    assert layer_entropy(torch.tensor([0.0, 1.0])) == pytest.approx(math.log(2))
    assert layer_information(torch.tensor([-1.0, 2.0]), "l1") == 3.0
    with pytest.raises(ValueError, match="entropy"):
        layer_information(torch.ones(1), "l3")


def test_arctan_coefficient_values():
    assert graft_coefficient(1.0, 1.0) == 0.5
    assert graft_coefficient(1.2, 1.0) == pytest.approx(0.5 + 0.4 / math.pi * math.atan(100.0))
    assert graft_coefficient(1.0, 1.2) == pytest.approx(0.5 - 0.4 / math.pi * math.atan(100.0))
    assert graft_coefficient(1.0, 0.999) == pytest.approx(0.5 + 0.4 / math.pi * math.atan(0.5))
    assert graft_coefficient(9.0, 0.0) == pytest.approx(0.7, abs=1e-4)
    assert graft_coefficient(0.0, 9.0, a=0.2) == pytest.approx(0.4, abs=1e-4)
    assert graft_coefficient(2.0, 1.0) + graft_coefficient(1.0, 2.0) == pytest.approx(1.0)


class _Shuffled(nn.Module):
    """BN registered before its conv, classifier registered first: names and order mislead."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 2)
        self.bn_b = nn.BatchNorm2d(4)
        self.bn_a = nn.BatchNorm2d(3)
        self.b = nn.Conv2d(3, 4, 3)
        self.a = nn.Conv2d(1, 3, 3)

    def forward(self, x):
        return self.fc(self.bn_b(self.b(self.bn_a(self.a(x)))).mean((2, 3)))


def test_units_follow_execution_order_not_names():
    net = _Shuffled()
    units = graft_units(net, torch.zeros(1, 1, 8, 8))
    assert [u.conv for u in units] == [net.a, net.b]
    assert units[0].followers == [net.bn_a]
    assert units[1].followers == [net.bn_b, net.fc]  # the classifier takes the last conv's alpha
    # BN running stats are blended, num_batches_tracked is not
    assert len(unit_tensors(units[0])) == 2 + 4


def _pair():
    torch.manual_seed(0)
    a, b = _Net(), _Net()
    for net in (a, b):
        net.train()
        net(torch.randn(4, 1, 6, 6))  # move the running stats apart
    return a, b


@pytest.mark.parametrize("binning", ["closed", "half-open"])
def test_two_network_ring_ends_bit_identical(binning):
    nets = _pair()
    x = torch.zeros(1, 1, 6, 6)
    units = [graft_units(n, x) for n in nets]
    pre = [[[t.clone() for t in unit_tensors(u)] for u in us] for us in units]
    info = [[layer_entropy(u.conv.weight, binning=binning) for u in us] for us in units]
    alphas = []
    for k in range(2):
        other = (k - 1) % 2
        alphas.append(
            [
                blend_unit_(unit_tensors(u), pre[other][i], info[k][i], info[other][i], 0.4, 500.0)
                for i, u in enumerate(units[k])
            ]
        )
    sa, sb = nets[0].state_dict(), nets[1].state_dict()
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key
    assert all(x + y == pytest.approx(1.0) for x, y in zip(*alphas))
    # the blend used the PRE-graft neighbour and the spec's alpha, computed here from the entropies
    w0, w1 = pre[0][0][0], pre[1][0][0]
    alpha = 0.5 + 0.4 / math.pi * math.atan(500.0 * (info[0][0] - info[1][0]))
    assert abs(alpha - 0.5) > 0.05
    torch.testing.assert_close(units[0][0].conv.weight, alpha * w0 + (1 - alpha) * w1)


def test_invalid_filter_counts_and_internal_variants():
    net = _weak_net()
    with torch.no_grad():
        net.conv.weight[0].zero_()
    counts = invalid_filters(net)
    l1 = torch.cat([m.weight.abs().flatten(1).sum(1) for m in (net.stem, net.dw, net.conv)])
    assert counts == {0.1: int((l1 < 0.1).sum()), 0.01: int((l1 < 0.01).sum())}
    assert counts[0.01] >= 1
    before = net.conv.weight.clone()
    grown = internal_graft_(net, threshold=0.1)
    assert grown == counts[0.1]
    strongest = int(before.abs().flatten(1).sum(1).argmax())
    assert torch.equal(net.conv.weight[0], before[0] + before[strongest])
    net = _weak_net()
    stem_before = net.stem.weight.clone()
    n = noise_graft_(net, std=0.5, threshold=0.1, generator=torch.Generator().manual_seed(0))
    assert n == counts[0.1]
    assert not torch.equal(net.stem.weight[:2], stem_before[:2])
    assert torch.equal(net.stem.weight[2:], stem_before[2:])
