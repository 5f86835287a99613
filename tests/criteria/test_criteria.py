"""Each criterion ranks hand-made filters as its definition says, and never edits the model."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from prunus.criteria import DataBatch, create_criterion, get_criterion, list_criteria, score
from prunus.errors import ConfigError
from prunus.models.info import update_info
from prunus.structure import ChannelTensors, build_groups, group_weights


def _t(*writers, norms=(), key="g"):
    n = writers[0].shape[0] if writers else norms[0].shape[0]
    return ChannelTensors(key, n, tuple(writers), tuple(norms))


W = torch.tensor([[3.0, -4.0, 0.0], [1.0, 1.0, 1.0], [0.0, 0.0, -0.5], [-2.0, 0.0, 2.0]])


def test_registry_lists_every_criterion():
    assert list_criteria() == ["bn-scale", "dist-l1", "dist-l2", "entropy", "fpgm", "l1", "l2", "random", "taylor"]
    assert get_criterion("fpgm") is get_criterion("dist-l2")


def test_unknown_criterion_lists_choices():
    with pytest.raises(ConfigError, match=r"unknown criterion 'l3'; choose one of: bn-scale, .*, taylor"):
        create_criterion("l3")


def test_bad_reduce():
    with pytest.raises(ConfigError, match="reduce='median' is not valid; choose one of: mean, sum, max, min"):
        create_criterion("l1", reduce="median")


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("l1", [7.0, 3.0, 0.5, 4.0]),
        ("l2", [5.0, math.sqrt(3), 0.5, math.sqrt(8)]),
    ],
)
def test_norms(name, expected):
    assert torch.allclose(create_criterion(name)(_t(W)), torch.tensor(expected))


def test_fpgm_geometric_median_scores_lowest():
    # Four corners of a square and its centre: the centre is the geometric median.
    w = torch.tensor([[1.0, 1.0], [-1.0, 1.0], [0.0, 0.0], [1.0, -1.0], [-1.0, -1.0]])
    s = create_criterion("fpgm")(_t(w))
    assert s.argmin().item() == 2
    assert torch.allclose(s[2], torch.tensor(4 * math.sqrt(2)))
    assert torch.allclose(s[0], torch.tensor(2 + 2 + 2 * math.sqrt(2) + math.sqrt(2)))
    assert torch.equal(s, create_criterion("dist-l2")(_t(w)))


def test_dist_l1():
    w = torch.tensor([[0.0, 0.0], [1.0, 1.0], [3.0, 0.0]])
    assert torch.allclose(create_criterion("dist-l1")(_t(w)), torch.tensor([2.0 + 3.0, 2.0 + 3.0, 3.0 + 3.0]))


def test_bn_scale_follows_abs_gamma():
    gammas = torch.tensor([0.5, -2.0, 0.1, 1.0])
    s = create_criterion("bn-scale")(_t(W, norms=(gammas,)))
    assert torch.equal(s, gammas.abs())
    with pytest.raises(ConfigError, match="needs a BatchNorm in group 'g'"):
        create_criterion("bn-scale")(_t(W))


def test_entropy():
    w = torch.stack(
        [
            torch.full((20,), 0.7),  # constant: one bin -> 0
            torch.linspace(0, 1, 20),  # uniform over the 10 bins: 2 values each -> ln 10
            torch.tensor([0.0] * 10 + [1.0] * 10),  # two bins, half each -> ln 2
        ]
    )
    s = create_criterion("entropy")(_t(w))
    assert torch.allclose(s, torch.tensor([0.0, math.log(10), math.log(2)]), atol=1e-6)


def test_entropy_matches_histc():
    w = torch.randn(5, 27, generator=torch.Generator().manual_seed(1))
    expected = []
    for row in w:
        p = torch.histc(row, bins=10, min=row.min().item(), max=row.max().item()) / row.numel()
        expected.append(-(p[p > 0] * p[p > 0].log()).sum())
    assert torch.allclose(create_criterion("entropy")(_t(w)), torch.stack(expected), atol=1e-6)


def test_random_is_seeded():
    a = create_criterion("random", seed=3)(_t(W))
    assert torch.equal(a, create_criterion("random", seed=3)(_t(W)))
    assert not torch.equal(a, create_criterion("random", seed=4)(_t(W)))
    assert not torch.equal(a, create_criterion("random", seed=3)(_t(W, key="other")))


def test_reduce_across_writers():
    a, b = torch.tensor([[1.0], [4.0]]), torch.tensor([[3.0], [0.0]])
    assert torch.equal(create_criterion("l1")(_t(a, b)), torch.tensor([2.0, 2.0]))
    assert torch.equal(create_criterion("l1", reduce="max")(_t(a, b)), torch.tensor([3.0, 4.0]))
    assert torch.equal(create_criterion("l1", reduce="sum")(_t(a, b)), torch.tensor([4.0, 4.0]))


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.conv, self.bn = nn.Conv2d(4, 6, 3, padding=1), nn.BatchNorm2d(6)
        self.skip, self.bn2 = nn.Conv2d(4, 6, 1), nn.BatchNorm2d(6)
        self.fc = nn.Linear(6, 3)
        update_info(self, stem="stem", classifier="fc")

    def forward(self, x):
        x = torch.relu(self.stem(x))
        return self.fc(torch.relu(self.bn(self.conv(x)) + self.bn2(self.skip(x))).mean((2, 3)))


X = torch.randn(4, 3, 6, 6, generator=torch.Generator().manual_seed(0))
Y = torch.tensor([0, 1, 2, 1])


def _snapshot(model):
    return {k: v.clone() for k, v in model.state_dict().items()}, [p.grad for p in model.parameters()]


@pytest.mark.parametrize("name", list_criteria())
def test_every_criterion_on_a_group_leaves_the_model_alone(name):
    torch.manual_seed(0)
    model = Net().train()
    nn.functional.cross_entropy(model(X), Y).backward()  # existing grads must survive scoring
    group = next(g for g in build_groups(model, X) if g.prunable)
    assert group.key == "conv"
    assert group.modules("out") == ["conv", "skip"]
    state, grads = _snapshot(model)
    grads = [g.clone() for g in grads]
    batch = DataBatch(model, X, Y) if get_criterion(name).needs_data else None
    s = score(model, group, name, batch)
    assert s.shape == (6,)
    assert s.dtype == torch.float32
    assert torch.isfinite(s).all()
    after, after_grads = _snapshot(model)
    assert all(torch.equal(state[k], after[k]) for k in state)
    assert all(torch.equal(a, b) for a, b in zip(grads, after_grads, strict=True))
    assert model.training


def test_taylor_matches_definition():
    torch.manual_seed(0)
    model = Net().eval()
    group = next(g for g in build_groups(model, X) if g.prunable)
    ref = copy.deepcopy(model)
    acts = {}
    ref.conv.register_forward_hook(lambda m, i, o: acts.__setitem__("conv", o))
    ref.skip.register_forward_hook(lambda m, i, o: acts.__setitem__("skip", o))
    loss = nn.functional.cross_entropy(ref(X), Y)
    g_conv, g_skip = torch.autograd.grad(loss, [acts["conv"], acts["skip"]])
    expected = ((acts["conv"] * g_conv).sum((0, 2, 3)).abs() + (acts["skip"] * g_skip).sum((0, 2, 3)).abs()) / 2
    got = score(model, group, "taylor", DataBatch(model, X, Y))
    assert torch.allclose(got, expected.detach(), rtol=1e-5, atol=1e-7)


def test_taylor_needs_data():
    model = Net()
    group = next(g for g in build_groups(model, X) if g.prunable)
    with pytest.raises(ConfigError, match="'taylor' needs a data batch"):
        create_criterion("taylor")(group_weights(model, group))


def test_group_weights_shapes():
    model = Net()
    group = next(g for g in build_groups(model, X) if g.prunable)
    t = group_weights(model, group, consumers=True)
    assert [w.shape for w in t.writers] == [(6, 36), (6, 4)]
    assert [n.shape for n in t.norms] == [(6,), (6,)]
    assert [c.shape for c in t.consumers] == [(6, 3)]
    assert torch.equal(t.writers[0], model.conv.weight.detach().reshape(6, -1))
    assert torch.equal(t.consumers[0], model.fc.weight.detach().T)
