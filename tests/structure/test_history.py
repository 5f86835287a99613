"""The pruning history is JSON and rebuilds pruned shapes on a fresh dense model."""

from __future__ import annotations

import json

import pytest
import torch

from prunus.errors import CorruptFileError
from prunus.structure import StructureError, build_groups, get_history, merge_, remove_, replay


@pytest.mark.parametrize("name", ["residual", "concat", "depthwise", "grouped", "flatten"])
def test_replay_rebuilds_pruned_model(nets, name):
    model = nets.randomize_(nets.NETS[name]()).eval()
    groups = build_groups(model, nets.X)
    for g in groups:  # two rounds: the second round's indices refer to the narrowed widths
        if g.prunable:
            remove_(model, g, nets.pick([g], 0.3, seed=2)[g.key])
    for g in groups:
        if g.prunable and g.num_channels > g.blocks:
            remove_(model, g, nets.pick([g], 0.3, seed=3)[g.key])
    history = json.loads(json.dumps(get_history(model)))  # what model.json stores
    assert len(history) >= 2
    fresh = replay(nets.NETS[name]().eval(), history, nets.X)
    fresh.load_state_dict(model.state_dict())
    assert torch.equal(fresh(nets.X), model(nets.X))
    assert get_history(fresh) == history


def test_merge_entry_replays(nets):
    model = nets.randomize_(nets.NETS["flatten"]()).eval()
    group = {g.key: g for g in build_groups(model, nets.X)}["conv"]
    merge_(model, group, [[0, 3], [1, 2, 5]])
    (entry,) = get_history(model)
    assert entry == {"op": "merge", "group": "conv", "width": 6, "idxs": [2, 3, 5], "clusters": [[0, 3], [1, 2, 5]]}
    fresh = replay(nets.NETS["flatten"]().eval(), [entry], nets.X)
    fresh.load_state_dict(model.state_dict())
    assert torch.equal(fresh(nets.X), model(nets.X))


@pytest.mark.parametrize(
    ("entry", "match"),
    [
        ({"op": "grow", "group": "d", "width": 6, "idxs": [0]}, "malformed"),
        ({"op": "remove", "group": "d", "width": 6, "idxs": "0"}, "malformed"),
        ({"op": "remove", "group": "zz", "width": 6, "idxs": [0]}, "not a module"),
        ({"op": "remove", "group": "d", "width": 7, "idxs": [0]}, "has 6 channels, the history expects 7"),
        ({"op": "remove", "group": "d", "width": 6, "idxs": [6]}, "invalid indices"),
        ({"op": "remove", "group": "d", "width": 6, "idxs": list(range(6))}, "invalid indices"),
    ],
)
def test_bad_history(nets, entry, match):
    with pytest.raises(CorruptFileError, match=match):
        replay(nets.NETS["residual"](), [entry], nets.X)


def test_replay_needs_fresh_model(nets):
    model = nets.NETS["residual"]()
    remove_(model, {g.key: g for g in build_groups(model, nets.X)}["a"], [0])
    with pytest.raises(StructureError, match="freshly built"):
        replay(model, get_history(model), nets.X)
