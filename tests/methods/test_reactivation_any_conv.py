"""WE and grafting on every conv kind: Conv1d, Conv3d and groups=1 ConvTranspose, with BatchNorm1d/3d.

Both methods edited `nn.Conv2d` only: on a 1-D or 3-D model WE silently evolved nothing and grafting
refused it, and a ConvTranspose2d in a U-Net was never reactivated. The reference for each conv kind
is its 2-D twin: a Conv2d whose weight holds the same filters as rows of the same elements (a Conv1d
kernel k is a (k, 1) kernel; a Conv3d kernel (d, h, w) is (d, h * w); a ConvTranspose's filters are
its weight's columns). Every selection, crossover and blend depends only on those rows, so one pass
over a mixed model must equal the pass over its twin element for element.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn.utils.parametrizations import weight_norm

from prunus.engine import Method, Trainer
from prunus.errors import ConfigError
from prunus.methods import create_method
from prunus.methods._evolution import evolve_
from prunus.methods._filters import editable_convs, filter_rows
from prunus.methods._grafting import graft_units, internal_graft_, invalid_filters, noise_graft_, unit_tensors

from ._tiny import tiny_config, tiny_data


class _Mixed(nn.Module):
    """One of each conv kind (never run: the passes read weights only), plus two left out."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv1d(3, 8, 3)
        self.bn1 = nn.BatchNorm1d(8)
        self.t1 = nn.ConvTranspose1d(8, 6, 3)  # weight (8, 6, 3): 6 filters of (8, 3)
        self.bn2 = nn.BatchNorm1d(6)
        self.c3 = nn.Conv3d(6, 8, (3, 2, 2))
        self.bn3 = nn.BatchNorm3d(8)
        self.pw = nn.Conv1d(8, 8, 1)  # pointwise: blended whole under "kernel-height"
        self.grouped_t = nn.ConvTranspose1d(8, 8, 3, groups=2)  # left out: a column is not a filter
        self.normed = weight_norm(nn.Conv1d(8, 8, 3))  # left out: its weight is recomputed on access


def _as_2d(w: torch.Tensor, transposed: bool = False) -> torch.Tensor:
    """A conv weight's filters as a Conv2d weight of the same rows (see the module docstring)."""
    rows = w.transpose(0, 1) if transposed else w
    return rows.reshape(rows.shape[0], rows.shape[1], rows.shape[2], -1).clone()


class _Twin(nn.Module):
    """`_Mixed` in Conv2d / BatchNorm2d, registered in the same order, without the left-out layers."""

    def __init__(self, mixed: _Mixed) -> None:
        super().__init__()
        for name in ("c1", "t1", "c3", "pw"):
            src = getattr(mixed, name)
            w = _as_2d(src.weight.detach(), src.transposed)
            conv = nn.Conv2d(w.shape[1], w.shape[0], tuple(w.shape[2:]))
            conv.weight.data.copy_(w)
            setattr(self, name, conv)
            bn_name = {"c1": "bn1", "t1": "bn2", "c3": "bn3"}.get(name)
            if bn_name:
                bn = nn.BatchNorm2d(w.shape[0])
                bn.load_state_dict(getattr(mixed, bn_name).state_dict())
                setattr(self, bn_name, bn)

    def same_as(self, mixed: _Mixed) -> None:
        for name in ("c1", "t1", "c3", "pw"):
            src = getattr(mixed, name)
            assert torch.equal(_as_2d(src.weight.detach(), src.transposed), getattr(self, name).weight), name
        for name in ("bn1", "bn2", "bn3"):
            for k, v in getattr(self, name).state_dict().items():
                assert torch.equal(getattr(mixed, name).state_dict()[k], v), f"{name}.{k}"


def _mixed() -> _Mixed:
    torch.manual_seed(0)
    net = _Mixed()
    with torch.no_grad():
        for m in (net.c1, net.c3, net.pw):
            m.weight[:2] *= 1e-3  # two weak filters per layer
        net.t1.weight[:, :2] *= 1e-3  # a transposed conv's filters are columns
        for bn in (net.bn1, net.bn2, net.bn3):
            bn.weight.copy_(torch.linspace(0.001, 1.0, bn.num_features))
            bn.bias.copy_(torch.linspace(1.0, 0.001, bn.num_features))
    return net


def test_the_editable_convs_and_their_filter_rows():
    net = _mixed()
    assert editable_convs(net) == [net.c1, net.t1, net.c3, net.pw]
    rows = filter_rows(net.t1)
    assert rows.shape == (6, 8, 3)
    assert torch.equal(rows[4], net.t1.weight[:, 4])
    assert filter_rows(net.c1).data_ptr() == net.c1.weight.data_ptr()  # a plain conv is edited in place
    with pytest.raises(ValueError, match="no editable filters"):
        filter_rows(net.grouped_t)


@pytest.mark.parametrize("mode", ["paper", "code"])
@pytest.mark.parametrize("whole", ["kernel-height", "one-input"])
def test_we_on_1d_3d_and_transposed_convs_equals_we_on_their_2d_twins(mode, whole):
    net = _mixed()
    twin = _Twin(net)
    left_out = {k: v.clone() for k, v in net.state_dict().items() if k.startswith(("grouped_t", "normed"))}
    before = {k: v.clone() for k, v in net.state_dict().items()}
    counters, twin_counters = {}, {}
    for _ in range(2):  # two passes: the starvation counters carry over the same way
        stats = evolve_(net, (0.3, 0.2, 0.2), lam=0.1, mode=mode, counters=counters, whole=whole)
        twin_stats = evolve_(twin, (0.3, 0.2, 0.2), lam=0.1, mode=mode, counters=twin_counters, whole=whole)
        assert stats == twin_stats
        assert counters == twin_counters
        twin.same_as(net)
    assert stats.filters > 0
    assert stats.bn_channels > 0
    for k in ("c1.weight", "t1.weight", "c3.weight", "pw.weight", "bn1.weight", "bn2.bias", "bn3.weight"):
        assert not torch.equal(before[k], net.state_dict()[k]), k  # every kind was evolved
    assert torch.equal(before["t1.weight"][:, 2:], net.t1.weight[:, 2:])  # strong columns only donate
    for k, v in left_out.items():
        assert torch.equal(v, net.state_dict()[k]), k


def test_internal_grafts_and_invalid_counts_on_1d_3d_and_transposed_convs_equal_their_2d_twins():
    net = _mixed()
    twin = _Twin(net)
    assert invalid_filters(net) == invalid_filters(twin)
    assert invalid_filters(net)[0.1] == 8  # two weak filters in each of the four editable convs
    assert internal_graft_(net, 0.1) == internal_graft_(twin, 0.1) == 8
    twin.same_as(net)
    net, twin = _mixed(), _Twin(_mixed())
    n = noise_graft_(net, 0.5, 0.1, torch.Generator().manual_seed(0))
    assert n == noise_graft_(twin, 0.5, 0.1, torch.Generator().manual_seed(0)) == 8
    twin.same_as(net)
    assert invalid_filters(net)[0.1] < 8


class _Net1d(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.bn_a = nn.Conv1d(1, 4, 3), nn.BatchNorm1d(4)
        self.up, self.bn_up = nn.ConvTranspose1d(4, 4, 2, stride=2), nn.BatchNorm1d(4)
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        return self.fc(self.bn_up(self.up(self.bn_a(self.a(x)))).mean(2))


def test_grafting_units_start_at_every_conv_kind_and_a_1d_ring_of_two_ends_bit_identical():
    torch.manual_seed(0)
    nets = [_Net1d(), _Net1d()]
    x = torch.randn(2, 1, 10)
    units = [graft_units(n, x) for n in nets]
    assert [u.conv for u in units[0]] == [nets[0].a, nets[0].up]  # the ConvTranspose1d is a unit of its own
    assert units[0][1].followers == [nets[0].bn_up, nets[0].fc]
    from prunus.methods._grafting import blend_unit_, layer_entropy

    pre = [[[t.clone() for t in unit_tensors(u)] for u in us] for us in units]
    info = [[layer_entropy(u.conv.weight) for u in us] for us in units]
    for k in range(2):
        for i, u in enumerate(units[k]):
            blend_unit_(unit_tensors(u), pre[1 - k][i], info[k][i], info[1 - k][i], 0.4, 500.0)
    for key, value in nets[0].state_dict().items():
        assert torch.equal(value, nets[1].state_dict()[key]), key


def test_grafting_refuses_a_model_without_any_conv():
    with pytest.raises(ValueError, match="at least one conv layer"):
        graft_units(nn.Sequential(nn.Flatten(), nn.Linear(4, 2)), torch.zeros(1, 4))


def test_we_refuses_a_model_it_cannot_evolve_instead_of_training_it_unchanged():
    data = tiny_data()
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(data.input_shape[0] * data.input_shape[1] * data.input_shape[2], 10))
    with pytest.raises(ConfigError, match="no conv layer whose filters Weight Evolution can evolve"):
        Trainer(mlp, data, tiny_config(epochs=2), [create_method("we")], progress=False).fit()


def test_we_resets_the_momentum_of_exactly_the_evolved_columns_of_a_transposed_conv():
    from .test_transposed import TinyUNet

    data = tiny_data()
    torch.manual_seed(0)
    model = TinyUNet(data.in_channels, data.num_classes)
    seen: dict[str, torch.Tensor] = {}

    class Snap(Method):
        name = "snap"

        def on_epoch_start(self, t):
            if t.epoch == 1:
                seen["before"] = t.model.up.weight.detach().clone()

    class Rows(Method):
        name = "rows"

        def on_epoch_start(self, t):
            if t.epoch == 1:
                w = t.model.up.weight.detach()
                seen["changed"] = (w != seen["before"]).transpose(0, 1).flatten(1).any(1)
                momentum = t.optimizer.state[t.model.up.weight]["momentum_buffer"]
                seen["zero"] = momentum.transpose(0, 1).flatten(1).abs().sum(1) == 0

    we = create_method("we", ratio_conv=0.5, lam=1.0, reset_momentum=True)
    Trainer(model, data, tiny_config(epochs=2), [Snap(), we, Rows()], progress=False).fit()
    assert 0 < int(seen["changed"].sum()) < seen["changed"].numel()
    assert torch.equal(seen["changed"], seen["zero"])  # per filter (column), not per input row
