"""Every registered model: masked equals compact, and the history rebuilds the pruned shapes."""

from __future__ import annotations

import pytest
import torch

from prunus.models import create_model, list_models
from prunus.models.info import get_info
from prunus.structure import build_groups, get_history, remove_, replay, soft_mask_

X = torch.randn(2, 1, 28, 28, generator=torch.Generator().manual_seed(0))


def _tiny(name, **kw):
    # narrow enough to be quick, wide enough that every group has channels to cut; 28x28, 1 channel
    return create_model(name, num_classes=5, in_channels=1, width_mult=0.5 if "lenet" in name else 0.25, **kw)


def _mask_remove_replay(nets, name, ignored_layers=None, **kw):
    model = nets.randomize_(_tiny(name, **kw)).eval()
    groups = build_groups(model, X, ignored_layers)
    chosen = nets.pick(groups)
    assert chosen, "no prunable group found"
    for g in groups:
        if g.key in chosen:
            soft_mask_(model, g, chosen[g.key])
    masked = model(X)
    before = nets.num_params(model)
    for g in groups:
        if g.key in chosen:
            remove_(model, g, chosen[g.key])
    assert (masked - model(X)).abs().max().item() < 1e-5
    assert nets.num_params(model) < before
    fresh = replay(_tiny(name, **kw).eval(), get_history(model), X[:1])
    fresh.load_state_dict(model.state_dict())
    assert torch.equal(fresh(X), model(X))
    return groups


@pytest.mark.parametrize("name", list_models())
def test_zoo_masked_equals_compact_and_replays(nets, name):
    groups = _mask_remove_replay(nets, name)
    assert {g.key for g in groups if not g.prunable} <= set(get_info(_tiny(name)).ignored)


def test_padding_shortcut_freezes_streams(nets):
    """Option-A shortcuts pad channels with zeros of a fixed width: the stream cannot shrink, so it stays whole."""
    groups = _mask_remove_replay(nets, "resnet20", ignored_layers=("fc",), shortcut="A")
    stem = groups[0]
    assert stem.key == "conv1"
    assert not stem.prunable
    assert "adds them to a tensor that cannot shrink with them" in stem.reason
    assert sum(g.prunable for g in groups) == 9  # every block's inner conv1 group
