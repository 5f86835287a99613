"""Merging identical cluster members is exact: merged logits equal unmerged logits."""

from __future__ import annotations

import pytest
import torch

from prunus.structure import StructureError, build_groups, merge_

ROW_ROLES = ("out", "bias", "dw", "dw_bias", "bn_weight", "bn_bias", "bn_mean", "bn_var", "prelu")


def _make_identical_(model, group, clusters):
    """Copy the survivor's writer-side entries onto every other member (what C-SGD converges to)."""
    with torch.no_grad():
        for s in group.slices:
            if s.role not in ROW_ROLES:
                continue
            t = s.get(model)
            for c in clusters:
                src = t.index_select(s.dim, torch.tensor(s.positions([c[0]])))
                for other in c[1:]:
                    t.index_copy_(s.dim, torch.tensor(s.positions([other])), src)


def _clusters(n):
    """Pairs from both ends plus a triple: [[0, n-1], [1, n-2, 2]], leaving the rest alone."""
    return [[0, n - 1], [1, n - 2, 2]] if n >= 5 else [[0, n - 1]]


@pytest.mark.parametrize("name", ["chain", "residual", "concat", "depthwise", "flatten"])
def test_merge_is_exact(nets, name):
    model = nets.randomize_(nets.NETS[name]()).eval()
    groups = [g for g in build_groups(model, nets.X) if g.prunable]
    plan = {g.key: _clusters(g.num_channels) for g in groups}
    for g in groups:
        _make_identical_(model, g, plan[g.key])
    before, params = model(nets.X), nets.num_params(model)
    widths = {g.key: g.num_channels for g in groups}
    for g in groups:
        merge_(model, g, plan[g.key])
    after = model(nets.X)
    assert (before - after).abs().max().item() < 1e-5
    assert nets.num_params(model) < params
    for g in groups:
        assert g.num_channels == widths[g.key] - sum(len(c) - 1 for c in plan[g.key])


def test_merge_without_identity_differs(nets):
    """Sanity check of the test above: merging non-identical members changes the output."""
    model = nets.randomize_(nets.NETS["residual"]()).eval()
    group = {g.key: g for g in build_groups(model, nets.X)}["d"]
    before = model(nets.X)
    merge_(model, group, [[0, 5]])
    assert (before - model(nets.X)).abs().max().item() > 1e-3


def test_merge_sums_flatten_blocks(nets):
    model = nets.randomize_(nets.NETS["flatten"]()).eval()
    group = {g.key: g for g in build_groups(model, nets.X)}["conv"]
    w = model.fc1.weight.detach().clone()
    merge_(model, group, [[1, 4]])
    expected = torch.cat([w[:, 0:16], w[:, 16:32] + w[:, 64:80], w[:, 32:64], w[:, 80:96]], 1)
    assert torch.equal(model.fc1.weight, expected)


def test_merge_refuses_grouped_consumer(nets):
    model = nets.NETS["grouped"]()
    group = {g.key: g for g in build_groups(model, nets.X)}["p"]
    with pytest.raises(StructureError, match="grouped conv"):
        merge_(model, group, [[0, 1], [4, 5]])
