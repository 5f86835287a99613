"""Bad requests fail loudly, with messages that name the group or module and the way out."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from prunus.errors import StructureWarning
from prunus.structure import StructureError, build_groups, merge_, remove_, soft_mask_


class Scale(nn.Module):
    """A custom op mixing channels with a bare matrix: not a per-channel vector, so not followed."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.gain = nn.Parameter(torch.eye(channels))

    def forward(self, x):
        return torch.einsum("bchw,cd->bdhw", x, self.gain)


class WithCustom(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 6, 3, padding=1)
        self.conv = nn.Conv2d(6, 6, 3, padding=1)
        self.scale = Scale(6)
        self.conv2 = nn.Conv2d(6, 4, 3, padding=1)
        self.fc = nn.Linear(4, 5)

    def forward(self, x):
        x = torch.relu(self.scale(self.conv(torch.relu(self.stem(x)))))
        return self.fc(torch.relu(self.conv2(x)).mean((2, 3)))


X = torch.randn(1, 3, 8, 8)


def test_unsupported_module_leaves_its_group_whole_with_one_warning_naming_it():
    with pytest.warns(StructureWarning) as caught:
        groups = {g.key: g for g in build_groups(WithCustom(), X)}
    assert [str(w.message) for w in caught] == [
        "group 'conv' is left unpruned: einsum in Scale 'scale' is not supported"
    ]
    assert not groups["conv"].prunable
    assert groups["conv2"].prunable  # the rest of the model is still pruned


def test_ignored_unsupported_module_freezes_its_channels():
    groups = {g.key: g for g in build_groups(WithCustom(), X, ignored_layers=["stem", "fc", "scale"])}
    assert not groups["conv"].prunable
    assert "scale" in groups["conv"].reason
    assert groups["conv2"].prunable


def test_never_to_zero(nets):
    model = nets.NETS["chain"]()
    group = next(g for g in build_groups(model, nets.X) if g.prunable)
    with pytest.raises(StructureError, match="cannot remove all 8 channels"):
        remove_(model, group, range(8))
    assert model.features[3].out_channels == 8
    merge_(model, group, [list(range(8))])  # one cluster keeps its first member: never zero
    assert model.features[3].out_channels == 1


def test_bad_clusters(nets):
    model = nets.NETS["chain"]()
    group = next(g for g in build_groups(model, nets.X) if g.prunable)
    with pytest.raises(StructureError, match="more than one cluster"):
        merge_(model, group, [[0, 1], [1, 2]])
    with pytest.raises(StructureError, match="must not be empty"):
        merge_(model, group, [[]])


@pytest.mark.parametrize(
    ("idxs", "match"),
    [([8], r"must lie in \[0, 8\)"), ([-1], r"must lie in"), ([1, 1], "repeat")],
)
def test_bad_indices(nets, idxs, match):
    model = nets.NETS["chain"]()
    group = next(g for g in build_groups(model, nets.X) if g.prunable)
    with pytest.raises(StructureError, match=match):
        soft_mask_(model, group, idxs)


def test_unprunable_group_refuses(nets):
    model = nets.NETS["chain"]()
    stem = build_groups(model, nets.X)[0]
    with pytest.raises(StructureError, match=r"'features.0' cannot be pruned: it is written by ignored layer"):
        remove_(model, stem, [0])


def test_classifier_output_never_pruned(nets):
    model = nets.NETS["chain"]()
    fc = {g.key: g for g in build_groups(model, nets.X, ignored_layers=())}["fc"]
    assert not fc.prunable
    assert "model output" in fc.reason


def test_unknown_ignored_layer(nets):
    with pytest.raises(StructureError, match="'nope' is not a module"):
        build_groups(nets.NETS["chain"](), nets.X, ignored_layers=["nope"])


def test_group_from_other_model(nets):
    group = next(g for g in build_groups(nets.NETS["chain"](), nets.X) if g.prunable)
    with pytest.raises(StructureError, match="built on another model"):
        remove_(nets.NETS["chain"](), group, [0])
