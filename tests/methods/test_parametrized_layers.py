"""Methods on a model with a weight_norm conv: a computed weight is never edited in place for nothing.

WE's crossover, grafting's internal/noise variants and C-SGD's centripetal update edit a conv's
weight tensor in place (or its gradient). A parametrized weight is computed from stored tensors on
every access, so those edits changed nothing while the stats counted them. Such layers are now left
out (C-SGD says why); the plain layers of the same model are edited as before.
"""

from __future__ import annotations

import torch
from torch import nn

from prunus.methods._clustering import group_widths, unsupported_reason
from prunus.methods._evolution import evolve_
from prunus.methods._grafting import internal_graft_, invalid_filters, noise_graft_
from prunus.structure import build_groups

X = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))


def _net() -> nn.Sequential:
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.utils.parametrizations.weight_norm(nn.Conv2d(8, 8, 3, padding=1)), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4),
    )  # fmt: skip
    with torch.no_grad():  # weak filters in both the plain conv 6 and the weight-normed conv 3
        net[6].weight[:3] *= 1e-4
        net[3].parametrizations.weight.original0[:3] *= 1e-4
    return net


def _stored(net: nn.Module) -> list[torch.Tensor]:
    return [t.detach().clone() for t in net[3].parametrizations.weight.parameters()]


def test_internal_and_noise_grafting_count_only_filters_they_edit():
    for graft in (lambda n: internal_graft_(n, threshold=0.05),
                  lambda n: noise_graft_(n, std=0.1, threshold=0.05, generator=torch.Generator().manual_seed(1))):  # fmt: skip
        net = _net()
        before, plain = _stored(net), net[6].weight.detach().clone()
        assert graft(net) == 3  # conv 6's three weak filters; conv 3's are not counted as grown
        assert not torch.equal(net[6].weight, plain)
        assert all(torch.equal(a, b) for a, b in zip(_stored(net), before, strict=True))
    assert invalid_filters(_net(), (0.05,)) == {0.05: 3}


def test_weight_evolution_leaves_a_weight_normed_conv_out_of_its_stats():
    net = _net()
    before = _stored(net)
    stats = evolve_(net, (0.5, 0.0, 0.0), lam=0.1)
    assert 0 < stats.filters <= 16  # filters of the two plain convs (8 + 8) only
    assert all(torch.equal(a, b) for a, b in zip(_stored(net), before, strict=True))


def test_csgd_does_not_cluster_a_weight_normed_conv():
    net = _net()
    groups = {g.key: g for g in build_groups(net, X)}
    assert unsupported_reason(groups["3"], net) == (
        "3's weight is parametrized (e.g. weight_norm), which clustering does not support"
    )
    assert unsupported_reason(groups["6"], net) is None
    assert "3" not in group_widths(net, X)
    assert group_widths(net, X)["6"] == 8


def test_weight_evolution_of_a_model_whose_only_conv_is_weight_normed_evolves_no_filter():
    torch.manual_seed(0)
    net = nn.Sequential(nn.utils.parametrizations.weight_norm(nn.Conv2d(3, 8, 3)), nn.BatchNorm2d(8), nn.ReLU())
    with torch.no_grad():
        net[0].parametrizations.weight.original0[:4] *= 1e-4
    before = [t.detach().clone() for t in net[0].parametrizations.weight.parameters()]
    stats = evolve_(net, (0.5, 0.0, 0.0), lam=0.1)
    assert (stats.filters, stats.slices) == (0, 0)
    assert all(torch.equal(a, b) for a, b in zip(net[0].parametrizations.weight.parameters(), before, strict=True))


def test_a_two_network_ring_grafts_parametrized_convs_as_units_of_their_own():
    """A weight_norm / spectral_norm conv keeps its tensors in child containers: it used to be no unit and
    no leaf, so its g, v and bias were never grafted and its BN took the previous conv's coefficient."""
    from prunus.methods._grafting import blend_unit_, graft_units, layer_entropy, unit_tensors

    def net(seed: int) -> nn.Sequential:
        torch.manual_seed(seed)
        return nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
            nn.utils.parametrizations.weight_norm(nn.Conv2d(8, 8, 3, padding=1)), nn.BatchNorm2d(8), nn.ReLU(),
            nn.utils.parametrizations.spectral_norm(nn.Conv2d(8, 8, 3, padding=1)),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4),
        ).eval()  # fmt: skip

    nets = [net(0), net(1)]
    units = [graft_units(n, X) for n in nets]
    assert [type(u.conv).__name__ for u in units[0]] == ["Conv2d", "ParametrizedConv2d", "ParametrizedConv2d"]
    assert [len(u.followers) for u in units[0]] == [1, 1, 1]  # each BN with its own conv, the classifier last
    covered = {t.data_ptr() for u in units[0] for t in unit_tensors(u)}
    assert all(p.data_ptr() in covered for p in nets[0].parameters())  # every parameter is grafted
    pre = [[[t.clone() for t in unit_tensors(u)] for u in us] for us in units]
    info = [[layer_entropy(u.conv.weight) for u in us] for us in units]
    for k in range(2):
        for i, u in enumerate(units[k]):
            blend_unit_(unit_tensors(u), pre[1 - k][i], info[k][i], info[1 - k][i], 0.4, 500.0)
    a, b = nets[0].state_dict(), nets[1].state_dict()
    assert [k for k in a if not torch.equal(a[k], b[k])] == []  # a ring of two ends bit-identical, g and v too
    assert not torch.equal(a["3.parametrizations.weight.original1"], pre[0][1][2])  # and they were blended
