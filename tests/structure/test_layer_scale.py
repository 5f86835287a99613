"""Bare per-channel parameters (ConvNeXt-style layer scale, channel biases) follow their channels.

Torch-Pruning is told about them as unwrapped parameters; the engine gives them the "param" role,
so masks zero them, removal cuts them, and compact == masked holds exactly.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import prunus
from prunus.errors import StructureWarning
from prunus.structure import build_groups, remove_, soft_mask_


class LayerScaleBlock(nn.Module):
    """ConvNeXt-like: depthwise 7x7 -> 1x1 expand -> GELU * hidden scale -> 1x1 project, times gamma, + x."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.dw = nn.Conv2d(c, c, 7, padding=3, groups=c)
        self.norm = nn.BatchNorm2d(c)
        self.pw1 = nn.Conv2d(c, 2 * c, 1)
        self.act = nn.GELU()
        self.hidden_scale = nn.Parameter(torch.rand(2 * c) + 0.5)  # (2c,), used as [None, :, None, None]
        self.pw2 = nn.Conv2d(2 * c, c, 1)
        self.gamma = nn.Parameter(torch.rand(c) + 0.5)  # layer scale, (c,)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.act(self.pw1(self.norm(self.dw(x)))) * self.hidden_scale[None, :, None, None]
        return x + self.pw2(h) * self.gamma[:, None, None]


class ChannelBias(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.beta = nn.Parameter(torch.rand(1, c, 1, 1) - 0.5)  # additive: a mask must zero it

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.beta


class Net(nn.Module):
    def __init__(self, c: int = 8) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, c, 3, padding=1)
        self.blocks = nn.Sequential(LayerScaleBlock(c), LayerScaleBlock(c))
        self.head = nn.Conv2d(c, c, 1)
        self.bias = ChannelBias(c)
        self.fc = nn.Linear(c, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.stem(x))
        return self.fc(torch.relu(self.bias(self.head(x))).mean((2, 3)))


X = torch.randn(2, 1, 10, 10, generator=torch.Generator().manual_seed(0))


def _net() -> Net:
    torch.manual_seed(0)
    net = Net().eval()
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    return net


def test_bare_parameters_are_coupled_with_their_channels():
    groups = {g.key: g for g in build_groups(_net(), X, ignored_layers=["fc"])}
    stream = groups["stem"]  # the residual stream: stem, both pw2, every gamma
    assert stream.prunable
    params = {(s.module, s.tensor, s.dim) for s in stream.slices if s.role == "param"}
    assert params == {("blocks.0", "gamma", 0), ("blocks.1", "gamma", 0)}
    hidden = groups["blocks.0.pw1"]
    assert {(s.module, s.tensor) for s in hidden.slices if s.role == "param"} == {("blocks.0", "hidden_scale")}
    head = groups["head"]
    assert {(s.module, s.tensor, s.dim) for s in head.slices if s.role == "param"} == {("bias", "beta", 1)}


def test_compact_equals_masked_with_layer_scale():
    net = _net()
    groups = [g for g in build_groups(net, X, ignored_layers=["fc"]) if g.prunable]
    cut = {g.key: list(range(0, g.num_channels, 3)) for g in groups}  # every third channel
    masked = copy.deepcopy(net)
    for g in groups:
        soft_mask_(masked, g, cut[g.key])
    for g in groups:
        remove_(net, g, cut[g.key])
    assert net.blocks[0].gamma.shape == (5,)  # 8 - 3
    assert net.blocks[0].hidden_scale.shape == (10,)  # 16 - 6
    assert net.bias.beta.shape == (1, 5, 1, 1)
    with torch.no_grad():
        torch.testing.assert_close(net(X), masked(X), atol=1e-5, rtol=0)


def test_prune_a_layer_scale_model_to_a_macs_budget():
    net = _net()
    net, report = prunus.prune(net, X[:1], keep_macs=0.5, ignored_layers=["fc"])
    assert report.achieved_macs_ratio <= 0.5
    assert report.pruned_params == sum(p.numel() for p in net.parameters())
    with torch.no_grad():
        assert net(X).shape == (2, 5)


class Mixer(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.mix = nn.Parameter(torch.eye(c))  # channel mixing: not per-channel

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.einsum("bchw,cd->bdhw", x, self.mix)


def test_unsupported_parameters_leave_their_group_whole_and_name_the_module():
    net = _net()
    net.bias = Mixer(8)
    with pytest.warns(
        StructureWarning, match=r"group 'head' is left unpruned: einsum in Mixer 'bias' is not supported"
    ):
        groups = {g.key: g for g in build_groups(net, X, ignored_layers=["fc"])}
    assert not groups["head"].prunable
    assert groups["blocks.0.pw1"].prunable
