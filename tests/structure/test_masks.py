"""Soft masks zero whole channels; hard masks keep them at exactly zero through SGD and Adam."""

from __future__ import annotations

import io

import pytest
import torch
from torch import nn

from prunus.structure import MASKED_ROLES, HardMask, StructureError, build_groups, soft_mask_


def _masked_values(model, groups, chosen):
    """Every masked weight entry, concatenated."""
    vals = []
    for g in groups:
        for s in g.slices:
            if g.key in chosen and s.role in MASKED_ROLES:
                vals.append(s.get(model).index_select(s.dim, torch.tensor(s.positions(chosen[g.key]))).flatten())
    return torch.cat(vals)


def test_soft_mask_zeroes_channel_outputs(nets):
    model = nets.randomize_(nets.NETS["residual"]()).eval()
    groups = build_groups(model, nets.X)
    d = {g.key: g for g in groups}["d"]
    soft_mask_(model, d, [1, 4])
    assert model.d.weight[[1, 4]].abs().sum() == 0
    assert model.e.weight[[1, 4]].abs().sum() == 0
    assert model.bnd.weight[[1, 4]].abs().sum() == 0
    assert model.bnd.bias[[1, 4]].abs().sum() == 0
    assert model.bne.bias[[1, 4]].abs().sum() == 0
    assert model.bnd.running_mean[[1, 4]].abs().sum() > 0  # stats untouched: gamma = beta = 0 suffices
    assert model.d.weight[[0, 2, 3, 5]].abs().min() > 0


def test_soft_mask_works_on_a_copy(nets):
    import copy

    model = nets.randomize_(nets.NETS["chain"]())
    group = next(g for g in build_groups(model, nets.X) if g.prunable)
    clone = copy.deepcopy(model)
    soft_mask_(clone, group, [0])
    assert clone.features[3].weight[0].abs().sum() == 0
    assert model.features[3].weight[0].abs().sum() > 0


def _train(model, optimizer, steps, hard=None, seed=0):
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        optimizer.zero_grad()
        for p in model.parameters():
            p.grad = torch.randn(p.shape, generator=gen)
        if hard is not None:
            hard.apply_(model, optimizer)
        optimizer.step()


@pytest.mark.parametrize(
    "make_opt",
    [
        lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4),
        lambda ps: torch.optim.Adam(ps, lr=0.01, weight_decay=1e-4),
    ],
    ids=["sgd-nesterov", "adam"],
)
def test_hard_mask_keeps_zeros(nets, make_opt):
    model = nets.randomize_(nets.NETS["depthwise"]())
    groups = build_groups(model, nets.X)
    chosen = nets.pick(groups)
    hard = HardMask(groups)
    for key, idxs in chosen.items():
        hard.set(key, idxs)
    optimizer = make_opt(model.parameters())
    _train(model, optimizer, 2)  # optimizer state exists and is non-zero before masking starts
    _train(model, optimizer, 4, hard)
    assert torch.count_nonzero(_masked_values(model, groups, chosen)) == 0
    for g in groups:
        for s in g.slices:
            if g.key in chosen and s.role in MASKED_ROLES:
                p = s.get(model)
                idx = torch.tensor(s.positions(chosen[g.key]))
                for buf in optimizer.state[p].values():
                    if torch.is_tensor(buf) and buf.shape == p.shape:
                        assert torch.count_nonzero(buf.index_select(s.dim, idx)) == 0
                kept = [i for i in range(p.shape[s.dim]) if i not in set(idx.tolist())]
                assert torch.count_nonzero(p.index_select(s.dim, torch.tensor(kept))) > 0  # the rest trained


def test_without_hard_mask_momentum_revives(nets):
    model = nets.randomize_(nets.NETS["depthwise"]())
    groups = build_groups(model, nets.X)
    chosen = nets.pick(groups)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4)
    _train(model, optimizer, 2)
    for g in groups:
        if g.key in chosen:
            soft_mask_(model, g, chosen[g.key])
    assert torch.count_nonzero(_masked_values(model, groups, chosen)) == 0
    _train(model, optimizer, 4)
    assert torch.count_nonzero(_masked_values(model, groups, chosen)) == _masked_values(model, groups, chosen).numel()


def test_hard_mask_state_roundtrip(nets):
    model = nets.NETS["residual"]()
    groups = build_groups(model, nets.X)
    hard = HardMask(groups)
    hard.set("d", [0, 3])
    hard.set(groups[1], [2])
    buf = io.BytesIO()
    torch.save(hard.state_dict(), buf)
    buf.seek(0)
    other = HardMask(groups)
    other.load_state_dict(torch.load(buf, weights_only=True))
    assert other.masks == {"d": [0, 3], "a": [2]}
    other.set("d", [])
    assert other.masks == {"a": [2]}
    with pytest.raises(StructureError, match="knows no group 'zz'"):
        other.set("zz", [0])


def test_hard_mask_grads_zeroed(nets):
    model = nets.randomize_(nets.NETS["chain"]())
    groups = build_groups(model, nets.X)
    hard = HardMask(groups)
    hard.set("features.3", [1])
    nn.functional.cross_entropy(model(nets.X), torch.tensor([0, 1])).backward()
    hard.apply_(model)
    assert model.features[3].weight.grad[1].abs().sum() == 0
    assert model.features[4].bias.grad[1] == 0
    assert model.features[3].weight.grad[0].abs().sum() > 0


def test_hard_mask_refuses_stale_indices(nets):
    from prunus.structure import remove_

    model = nets.NETS["residual"]()
    groups = build_groups(model, nets.X)
    hard = HardMask(groups)
    hard.set("d", [0, 3])
    hard.set("a", [1])
    hard.apply_(model)
    remove_(model, {g.key: g for g in groups}["d"], [0, 3])
    with pytest.raises(StructureError, match=r"'d' changed width \(6 -> 4\)"):
        hard.apply_(model)
    hard.clear("d")
    hard.apply_(model)  # the other group's mask is still valid
    assert model.a.weight[1].abs().sum() == 0


def test_bad_example_inputs(nets):
    with pytest.raises(StructureError, match="cannot trace the model on the example inputs"):
        build_groups(nets.NETS["chain"](), torch.randn(1, 5, 8, 8))
