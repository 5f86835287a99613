"""DE search: finds the exhaustive optimum on an enumerable net, beats/equals magnitude, seeded, validated."""

import itertools

import pytest
import torch
from torch import nn

from prunus.compress.search import SearchSettings, kl_per_candidate, magnitude_masks, search
from prunus.errors import ConfigError


def _net(seed: int) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 3)).eval()
    x = torch.randn(64, 4) * torch.tensor([4.0, 1.0, 0.25, 1.0])  # unequal scales: magnitude is not the best criterion
    with torch.no_grad():
        return net, x, net(x)


def _kl(net, x, teacher) -> float:
    with torch.no_grad():
        return float(kl_per_candidate(torch.log_softmax(teacher, -1), net(x))[0])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_search_finds_the_exhaustive_optimum(seed):
    net, x, teacher = _net(seed)
    w0 = net[0].weight.detach().clone()
    k = 4  # remove 4 of the 12 first-layer weights: C(12, 4) = 495 subsets, all enumerated
    best, best_set = float("inf"), None
    for subset in itertools.combinations(range(12), k):
        net[0].weight.data = w0.clone().reshape(-1).index_fill(0, torch.tensor(subset), 0).reshape(3, 4)
        kl = _kl(net, x, teacher)
        if kl < best - 1e-12:
            best, best_set = kl, subset
    net[0].weight.data = w0.clone()
    mag = magnitude_masks(net, {"0": k / 12})["0"]
    net[0].weight.data = w0 * mag
    kl_mag = _kl(net, x, teacher)
    net[0].weight.data = w0.clone()
    # a pool of every survivor, one cycle: the search must find the optimum, not just the magnitude set
    cfg = SearchSettings(population=16, generations=25, elite=4, pool_factor=3.0, cycles=1, seed=seed)
    res = search(net, x, teacher, {"0": k / 12, "2": 0.0}, cfg)
    assert int((~res.masks["0"]).sum()) == k
    assert res.kl == pytest.approx(best, rel=1e-5, abs=1e-9)
    assert set((~res.masks["0"]).reshape(-1).nonzero().squeeze(1).tolist()) == set(best_set)
    assert kl_mag > best * 1.01  # the optimum is not the magnitude set here: the search did the work


def test_search_never_worse_than_magnitude_on_the_rescore_batch():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(20, 16), nn.ReLU(), nn.Linear(16, 5)).eval()
    x, xb = torch.randn(128, 20), torch.randn(512, 20)
    with torch.no_grad():
        t, tb = net(x), net(xb)
    student = type(net)(*[type(m)(m.in_features, m.out_features) if isinstance(m, nn.Linear) else m for m in net])
    student.load_state_dict(net.state_dict())
    res = search(student, x, t, 0.6, SearchSettings(cycles=3, seed=1), x_big=xb, teacher_big=tb)
    for step in res.log:  # every committed step: the chosen set scores <= the magnitude set on the big batch
        assert step["kl"] <= step["kl_magnitude"] + 1e-9
    assert any(step["kl"] < step["kl_magnitude"] for step in res.log)
    for name, mask in res.masks.items():
        layer = dict(student.named_modules())[name]
        assert torch.equal(layer.weight == 0, ~mask) or bool((layer.weight[~mask] == 0).all())
        assert abs((1 - mask.float().mean()) - 0.6) < 1 / mask.numel() + 1e-6


def test_search_is_seeded_and_deterministic():
    runs = []
    for _ in range(2):
        net, x, t = _net(3)
        runs.append(search(net, x, t, 0.5, SearchSettings(cycles=2, seed=7)).masks)
    assert all(torch.equal(runs[0][n], runs[1][n]) for n in runs[0])


def test_global_allocation_meets_the_overall_budget():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(30, 20), nn.ReLU(), nn.Linear(20, 4)).eval()
    x = torch.randn(96, 30)
    with torch.no_grad():
        t = net(x)
    res = search(net, x, t, 0.8, SearchSettings(cycles=3, allocation="global", generations=1))
    kept = sum(int(m.sum()) for m in res.masks.values())
    assert kept == pytest.approx(0.2 * (600 + 80), abs=2)
    sparsities = [1 - float(m.float().mean()) for m in res.masks.values()]
    assert sparsities[0] != pytest.approx(sparsities[1], abs=0.01)  # the budget was allocated, not spread evenly


def test_conv_layers_are_searched():
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 36, 3)
    ).eval()
    x = torch.randn(16, 1, 6, 6)
    with torch.no_grad():
        t = net(x)
    res = search(net, x, t, {"0": 0.5}, SearchSettings(cycles=2, generations=2))
    assert int((net[0].weight == 0).sum()) == 18
    assert int((~res.masks["4"]).sum()) == 0


@pytest.mark.parametrize(
    ("targets", "settings", "match"),
    [
        ({"nope": 0.5}, SearchSettings(), "no conv/Linear layer"),
        ({"0": 1.0}, SearchSettings(), r"\[0, 1\)"),
        (0.5, SearchSettings(allocation="bogus"), "uniform or global"),
        ({"0": 0.5}, SearchSettings(allocation="global"), "one sparsity"),
    ],
)
def test_bad_targets_raise(targets, settings, match):
    net, x, t = _net(0)
    with pytest.raises(ConfigError, match=match):
        search(net, x, t, targets, settings)
