"""Compact equals masked: soft-masking channels then removing them leaves the logits unchanged."""

from __future__ import annotations

import pytest
import torch

from prunus.structure import build_groups, get_history, group_weights, remove_, soft_mask_

# (prunable group keys, unprunable keys) expected for each hand-made net
EXPECTED = {
    "chain": (["features.3", "features.6"], ["features.0", "fc"]),
    "residual": (["a", "c", "d"], ["stem", "fc"]),
    "concat": (["b", "c", "f"], ["stem", "fc"]),
    "depthwise": (["expand", "head"], ["stem", "fc"]),
    "grouped": (["p", "g", "q"], ["stem", "fc"]),
    "flatten": (["conv", "fc1"], ["stem", "fc2"]),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_groups_found(nets, name):
    model = nets.NETS[name]()
    groups = build_groups(model, nets.X)
    prunable, fixed = EXPECTED[name]
    assert [g.key for g in groups if g.prunable] == prunable
    assert [g.key for g in groups if not g.prunable] == fixed
    # every tensor slice belongs to exactly one group: no (module, tensor, index) twice
    seen = set()
    for g in groups:
        for s in g.slices:
            for i in s.index:
                assert (s.module, s.tensor, s.dim, i) not in seen
                seen.add((s.module, s.tensor, s.dim, i))


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_masked_equals_compact(nets, name):
    model = nets.randomize_(nets.NETS[name]()).eval()
    groups = build_groups(model, nets.X)
    chosen = nets.pick(groups)
    assert chosen
    assert all(chosen.values())
    for g in groups:
        if g.key in chosen:
            soft_mask_(model, g, chosen[g.key])
    masked = model(nets.X)
    before = nets.num_params(model)
    widths = {g.key: g.num_channels for g in groups}
    for g in groups:
        if g.key in chosen:
            remove_(model, g, chosen[g.key])
    compact = model(nets.X)
    assert (masked - compact).abs().max().item() < 1e-5
    assert nets.num_params(model) < before
    for g in groups:  # groups are live views: widths follow the removals
        assert g.num_channels == widths[g.key] - len(chosen.get(g.key, []))
    assert [e["group"] for e in get_history(model)] == list(chosen)


def test_residual_group_has_both_writers(nets):
    model = nets.NETS["residual"]()
    group = {g.key: g for g in build_groups(model, nets.X)}["d"]
    assert group.modules("out") == ["d", "e"]
    assert group.modules("bn_weight") == ["bnd", "bne"]
    assert group.modules("in") == ["fc"]


def test_concat_offsets(nets):
    model = nets.NETS["concat"]()
    group = {g.key: g for g in build_groups(model, nets.X)}["c"]
    bn = next(s for s in group.slices if s.role == "bn_weight")
    consumer = next(s for s in group.slices if s.role == "in")
    assert bn.index == consumer.index == tuple(range(6, 11))
    assert bn.channel == tuple(range(5))


def test_depthwise_follows_group(nets):
    model = nets.NETS["depthwise"]()
    group = {g.key: g for g in build_groups(model, nets.X)}["expand"]
    assert group.modules("dw") == ["dw"]
    assert group.modules("dw_bias") == ["dw"]
    assert group.modules("bn_weight") == ["bn1", "bn2"]
    assert group.modules("in") == ["project"]


def test_flatten_blocks(nets):
    model = nets.NETS["flatten"]()
    group = {g.key: g for g in build_groups(model, nets.X)}["conv"]
    consumer = next(s for s in group.slices if s.role == "in")
    assert consumer.module == "fc1"
    assert consumer.index == tuple(range(96))
    assert consumer.channel == tuple(c for c in range(6) for _ in range(16))
    t = group_weights(model, group, consumers=True)
    assert t.consumers[0].shape == (6, 16 * 10)  # channel 1 owns inputs 16..31 of all 10 outputs
    assert torch.equal(t.consumers[0][1], model.fc1.weight.detach()[:, 16:32].T.reshape(-1))
    model = nets.randomize_(model).eval()
    remove_(model, group, [1, 4])
    assert model.fc1.in_features == 64


def test_grouped_conv_blocks(nets):
    from prunus.structure import StructureError, lowest_channels

    model = nets.randomize_(nets.NETS["grouped"]()).eval()
    groups = {g.key: g for g in build_groups(model, nets.X)}
    assert groups["p"].blocks == 2
    assert groups["g"].blocks == 2
    assert groups["q"].blocks == 1
    with pytest.raises(StructureError, match="same offsets"):
        soft_mask_(model, groups["p"], [1, 6])
    idxs = lowest_channels(groups["p"], torch.tensor([5.0, 0.0, 5, 5, 5, 1, 5, 5]), 3)
    assert idxs == [1, 5]  # offset 1 is lowest on average; 3 rounds down to one offset per block
    remove_(model, groups["p"], idxs)
    assert (model.g.in_channels, model.g.weight.shape[1], model.g.groups) == (6, 3, 2)


def test_sequential_removals_in_one_group(nets):
    model = nets.randomize_(nets.NETS["residual"]()).eval()
    group = {g.key: g for g in build_groups(model, nets.X)}["d"]
    remove_(model, group, [0, 5])
    remove_(model, group, [1])
    assert group.num_channels == 3
    assert model.d.out_channels == model.e.out_channels == model.bnd.num_features == model.fc.in_features == 3
    assert get_history(model) == [
        {"op": "remove", "group": "d", "width": 6, "idxs": [0, 5]},
        {"op": "remove", "group": "d", "width": 4, "idxs": [1]},
    ]


def test_train_mode_is_kept(nets):
    model = nets.NETS["chain"]().train()
    build_groups(model, nets.X)
    assert all(m.training for m in model.modules())
