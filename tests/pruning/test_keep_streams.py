"""Residual streams: which groups are one (`ChannelGroup.residual`), and `keep_streams` keeping them whole."""

from __future__ import annotations

import copy
import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import prunus
from prunus.errors import ConfigError
from prunus.models import create_model
from prunus.pruning import PruneConfig, prune
from prunus.structure import build_groups

X = torch.randn(1, 1, 28, 28, generator=torch.Generator().manual_seed(0))

STREAMS = {
    "resnet20": {"conv1", "layer2.0.conv2", "layer3.0.conv2"},
    "resnet56": {"conv1", "layer2.0.conv2", "layer3.0.conv2"},
    "mobilenetv2": {"layers.1.conv3", "layers.3.conv3", "layers.6.conv3", "layers.10.conv3", "layers.13.conv3"},
    "vgg16_bn": set(),
    "lenet5": set(),
}


def _model(name):
    torch.manual_seed(0)
    return create_model(name, num_classes=10, in_channels=1).eval()


@pytest.mark.parametrize("name", sorted(STREAMS))
def test_residual_groups_are_the_streams_blocks_add_into(name):
    groups = build_groups(_model(name), X)
    assert {g.key for g in groups if g.residual} == STREAMS[name]


class _GatedBlock(nn.Module):
    """stem -> expand -> depthwise -> SE gate (mul) -> project, added back to the stem; a bias added by hand."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(1, 16, 3, padding=1)
        self.expand = nn.Conv2d(16, 64, 1)
        self.dw = nn.Conv2d(64, 64, 3, padding=1, groups=64)
        self.se_reduce, self.se_expand = nn.Conv2d(64, 8, 1), nn.Conv2d(8, 64, 1)
        self.project = nn.Conv2d(64, 16, 1)
        self.head = nn.Conv2d(16, 32, 1, bias=False)
        self.head_bias = nn.Parameter(torch.zeros(32))
        self.fc = nn.Linear(32, 10)

    def forward(self, x):
        x = self.stem(x)
        h = F.relu(self.dw(F.relu(self.expand(x))))
        h = h * torch.sigmoid(self.se_expand(F.relu(self.se_reduce(h.mean((2, 3), keepdim=True)))))
        x = x + self.project(h)
        y = self.head(x) + self.head_bias.view(1, -1, 1, 1)
        return self.fc(y.mean((2, 3)))


def test_a_gate_or_a_bias_broadcast_onto_channels_is_not_a_stream():
    groups = {g.key: g for g in build_groups(_GatedBlock().eval(), torch.randn(1, 1, 16, 16))}
    assert groups["stem"].residual  # stem + project: the add of two same-shaped tensors
    assert not groups["expand"].residual  # multiplied by the SE gate, shape (N, 64, 1, 1)
    assert not groups["head"].residual  # plus a (1, 32, 1, 1) bias


def test_keep_streams_cuts_only_inside_the_blocks():
    model = _model("mobilenetv2")
    pruned, report = prune(copy.deepcopy(model), X, remove_channels=0.5, keep_streams=True)
    _, uniform = prune(copy.deepcopy(model), X, remove_channels=0.5)
    for key in STREAMS["mobilenetv2"]:
        assert key not in report.widths
        assert "a residual stream, kept by keep_streams" in report.kept_whole[key]
        assert uniform.widths[key][1] < uniform.widths[key][0]  # the default cuts them
    assert report.widths  # the other groups are cut as the target says
    assert all(kept == full - int(full * 0.5) for full, kept in report.widths.values()), report.widths
    assert report.widths == {k: w for k, w in uniform.widths.items() if k not in STREAMS["mobilenetv2"]}
    dims = {n: m.out_channels for n, m in pruned.named_modules() if isinstance(m, nn.Conv2d)}
    assert dims["layers.1.conv3"] == dims["layers.2.conv3"] == 24  # the stream's width, untouched
    with torch.no_grad():
        assert pruned(torch.randn(2, 1, 28, 28)).shape == (2, 10)


def test_keep_streams_meets_a_macs_budget_inside_the_blocks():
    model = _model("mobilenetv2")
    _, report = prune(copy.deepcopy(model), X, keep_macs=0.3, keep_streams=True)
    assert 0.95 * 0.3 <= report.achieved_macs_ratio <= 0.3
    assert not set(report.widths) & STREAMS["mobilenetv2"]


@pytest.mark.parametrize("bad", ["yes", 1, None])
def test_keep_streams_must_be_a_bool(bad):
    with pytest.raises(ConfigError, match="keep_streams must be true or false"):
        PruneConfig(remove_channels=0.5, keep_streams=bad)


def test_cli_keep_streams(tmp_path, capsys):
    from prunus.cli import main

    src = prunus.save(_model("resnet20"), tmp_path / "m", input_shape=(1, 28, 28))
    out = tmp_path / "o"
    assert main(["prune", str(src), "--remove-channels", "0.5", "--keep-streams", "--out", str(out), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert not set(report["widths"]) & STREAMS["resnet20"]
    assert report["widths"]["layer2.0.conv1"] == [32, 16]
    assert "keep_streams" in report["kept_whole"]["layer2.0.conv2"]
