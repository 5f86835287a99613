"""Structure primitives for reactivation and grafting: Role enum, assign_ (twin of channel_values),
per-channel optimizer-state reset, and the positive layer filter filter_fn."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import prunus
from prunus.errors import ConfigError
from prunus.methods import create_method
from prunus.models import create_model, list_models
from prunus.models.info import example_input
from prunus.structure import (
    CLUSTERED_ROLES,
    MASKED_ROLES,
    WRITER_ROLES,
    HardMask,
    Role,
    StructureError,
    assign_,
    build_groups,
    channel_values,
    default_filter,
    reset_optimizer_state_,
    soft_mask_,
)


def test_role_sets_are_the_former_string_tuples():
    # the exact sets the structure engine, masks, criteria and C-SGD used before the enum, plus
    # "param" (bare per-channel parameters of user modules: zeroed by masks)
    assert set(MASKED_ROLES) == {"out", "bias", "dw", "dw_bias", "bn_weight", "bn_bias", "param"}
    assert set(WRITER_ROLES) == {"out", "dw"}
    assert set(CLUSTERED_ROLES) == {"out", "dw", "bias", "dw_bias", "bn_weight", "bn_bias", "prelu", "param"}
    assert {r.value for r in Role} == set(MASKED_ROLES) | {"bn_mean", "bn_var", "prelu", "in", "in_grouped"}
    assert f"{Role.BN_WEIGHT}" == "bn_weight"
    with pytest.raises(ValueError, match="'gamma' is not a valid Role"):
        Role("gamma")


@pytest.mark.parametrize("net", ["chain", "residual", "concat", "depthwise", "grouped", "flatten"])
def test_every_slice_has_a_role(nets, net):
    model = nets.NETS[net]()
    for g in build_groups(model, nets.X):
        assert all(isinstance(s.role, Role) for s in g.slices)


def _state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("name", list_models())
def test_assign_of_what_was_read_changes_nothing(nets, name):
    model = nets.randomize_(create_model(name, num_classes=5, in_channels=1, width_mult=0.25))
    before = _state(model)
    for g in build_groups(model, example_input((1, 28, 28))):
        assign_(model, g, channel_values(model, g))
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


@pytest.mark.parametrize("net", ["chain", "residual", "concat", "depthwise", "grouped", "flatten"])
def test_graft_copies_exactly_the_chosen_channels_of_every_slice(nets, net):
    model = nets.randomize_(nets.NETS[net](), seed=0)
    donor = nets.randomize_(nets.NETS[net](), seed=1)
    before = _state(model)
    groups = [g for g in build_groups(model, nets.X) if g.prunable]
    assert groups
    for g in groups:
        chans = [0, g.num_channels - 1]
        assign_(model, g, channel_values(donor, g), channels=chans)
        for s, got in channel_values(model, g).items():
            assert torch.equal(got[chans], channel_values(donor, g)[s][chans]), (g.key, s)
    # every position belongs to exactly one group slice, so nothing else may have changed: compare
    # with a model where the same grafts are done by hand through the donor's state dict
    expected = copy.deepcopy(model)
    expected.load_state_dict(before)
    for g in groups:
        chans = [0, g.num_channels - 1]
        for s in g.slices:
            if s.role is Role.IN_GROUPED:
                continue
            pos = torch.tensor(s.positions(chans))
            dst = s.get(expected).detach()
            dst.index_copy_(s.dim, pos, s.get(donor).detach().index_select(s.dim, pos))
    assert all(
        torch.equal(a, b) for a, b in zip(expected.state_dict().values(), model.state_dict().values(), strict=True)
    )


def test_assign_zeros_equals_soft_mask(nets):
    a = nets.randomize_(nets.NETS["residual"]())
    b = copy.deepcopy(a)
    g = next(g for g in build_groups(a, nets.X) if g.prunable)
    zeros = {s: torch.zeros_like(v) for s, v in channel_values(a, g, roles=MASKED_ROLES).items()}
    assign_(a, g, zeros, channels=[1, 4])
    soft_mask_(b, g, [1, 4])
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))


def test_assign_refuses_bad_values(nets):
    model = nets.NETS["chain"]()
    g = next(g for g in build_groups(model, nets.X) if g.prunable)
    vals = channel_values(model, g)
    s = next(iter(vals))
    with pytest.raises(StructureError, match=r"has shape \(8, 3\), expected \(8, 72\)"):
        assign_(model, g, {s: torch.zeros(8, 3)})
    with pytest.raises(StructureError, match=r"channel indices must lie in \[0, 8\)"):
        assign_(model, g, vals, channels=[8])
    other = next(h for h in build_groups(model, nets.X) if h.prunable and h.key != g.key)
    with pytest.raises(StructureError, match="has no slice"):
        assign_(model, other, vals)
    with pytest.raises(StructureError, match="grouped-conv inputs"):
        channel_values(model, g, roles=["in_grouped"])


@pytest.mark.parametrize("opt", ["sgd", "adam"])
def test_reset_optimizer_state_clears_exactly_the_channel_rows(nets, opt):
    model = nets.randomize_(nets.NETS["residual"]())
    params = list(model.parameters())
    optimizer = torch.optim.SGD(params, lr=0.1, momentum=0.9) if opt == "sgd" else torch.optim.Adam(params, lr=0.1)
    model(nets.X).square().mean().backward()
    optimizer.step()
    before = {p: {k: v.clone() for k, v in optimizer.state[p].items()} for p in params}
    g = next(g for g in build_groups(model, nets.X) if g.prunable)
    reset_optimizer_state_(optimizer, model, g, [2])
    touched = set()
    for s in g.slices:
        if s.role in (Role.BN_MEAN, Role.BN_VAR):
            continue
        p = s.get(model)
        touched.add(p)
        for name, value in optimizer.state[p].items():
            if value.shape != p.shape:  # Adam's step counter
                assert torch.equal(value, before[p][name])
                continue
            pos = torch.tensor(s.positions([2]))
            assert value.index_select(s.dim, pos).abs().sum() == 0
            keep = torch.tensor([i for i in range(value.shape[s.dim]) if i not in s.positions([2])])
            assert torch.equal(value.index_select(s.dim, keep), before[p][name].index_select(s.dim, keep))
    for p in params:
        if p not in touched:
            assert all(torch.equal(v, before[p][k]) for k, v in optimizer.state[p].items())


def test_hard_mask_still_zeroes_momentum_through_the_shared_helper(nets):
    model = nets.randomize_(nets.NETS["chain"]())
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    groups = build_groups(model, nets.X)
    g = next(g for g in groups if g.prunable)
    hard = HardMask(groups)
    hard.set(g, [0, 3])
    for _ in range(2):
        optimizer.zero_grad()
        model(nets.X).sum().backward()
        hard.apply_(model, optimizer)
        optimizer.step()
    w = model.get_submodule(g.key).weight
    assert w[[0, 3]].abs().sum() == 0
    assert optimizer.state[w]["momentum_buffer"][[0, 3]].abs().sum() == 0


# --- filter_fn ---------------------------------------------------------------------------------


def _prunable(model, x, **kw):
    return {g.key for g in build_groups(model, x, **kw) if g.prunable}


@pytest.mark.parametrize("name", list_models())
def test_default_filter_is_the_default(name):
    model = create_model(name, num_classes=5, in_channels=1, width_mult=0.25)
    x = example_input((1, 28, 28))
    default = _prunable(model, x)
    assert default == _prunable(model, x, filter_fn=default_filter(model))
    assert default == _prunable(model, x, ignored_layers=list(prunus.models.info.get_info(model).ignored))


def test_ignored_layers_is_sugar_for_a_filter_and_both_combine():
    model = create_model("resnet20", num_classes=5, in_channels=1, width_mult=0.25)
    x = example_input((1, 28, 28))
    names = ["conv1", "fc", "layer2.0.conv1"]
    by_names = _prunable(model, x, ignored_layers=names)
    by_filter = _prunable(model, x, filter_fn=lambda m, n: n not in names)
    assert by_names == by_filter
    assert "layer2.0.conv1" not in by_filter
    only_stage3 = _prunable(model, x, filter_fn=lambda m, n: n.startswith("layer3"), ignored_layers=["layer3.0.conv1"])
    assert only_stage3 == {"layer3.0.conv2", "layer3.1.conv1", "layer3.2.conv1"}  # conv2: the stage-3 stream


def test_prune_and_methods_accept_filter_fn():
    model = create_model("resnet20", num_classes=5, in_channels=1, width_mult=0.25)
    widths = {n: m.out_channels for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}
    keep = lambda m, n: n.startswith("layer1")  # noqa: E731
    pruned, report = prunus.prune(model, example_input((1, 28, 28)), remove_channels=0.5, filter_fn=keep)
    changed = {n for n, m in pruned.named_modules() if isinstance(m, nn.Conv2d) and m.out_channels != widths[n]}
    assert changed == {"layer1.0.conv1", "layer1.1.conv1", "layer1.2.conv1"}
    for name in ("sfp", "fpgm", "mfp", "csgd"):
        assert create_method(name, filter_fn=keep).filter_fn is keep


@pytest.mark.parametrize("name", ["sfp", "fpgm", "mfp", "csgd"])
def test_a_filter_that_is_not_callable_is_refused(name):
    with pytest.raises(
        ConfigError, match="filter_fn must be a callable filter_fn\\(module, name\\) -> bool, got 'conv1'"
    ):
        create_method(name, filter_fn="conv1")


def test_build_groups_refuses_a_non_callable_filter(nets):
    with pytest.raises(ConfigError, match="filter_fn must be a callable"):
        build_groups(nets.NETS["chain"](), nets.X, filter_fn=["0"])


def test_custom_layer_probe_copies_without_hooks_and_restores_them():
    # the tracer's hooks hold the whole model: a probe copy that kept them deep-copied the model
    from prunus.structure._layers import _bare_copy

    class Doubled(nn.Conv2d):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return super().forward(x) * 2

    torch.manual_seed(0)
    layer = Doubled(2, 4, 1)
    seen = []
    layer.register_forward_hook(lambda mod, args, out: seen.append(mod))
    layer.register_forward_pre_hook(lambda mod, args: None)
    copy_ = _bare_copy(layer)
    assert (len(copy_._forward_hooks), len(copy_._forward_pre_hooks)) == (0, 0)
    assert (len(layer._forward_hooks), len(layer._forward_pre_hooks)) == (1, 1)
    x = torch.randn(1, 2, 3, 3)
    assert torch.equal(copy_(x), layer(x))
    assert seen == [layer]  # only the original's hook ran
    assert copy_.weight is not layer.weight
    assert torch.equal(copy_.weight, layer.weight)


@pytest.mark.parametrize("enabled", [True, False])
def test_pruning_leaves_the_garbage_collector_as_it_found_it(enabled):
    """The engine pauses Python's cyclic collector while it works (`structure._gc`): on after, when it was on;
    still off when the user had turned it off."""
    import gc

    model, x = create_model("resnet20"), torch.randn(1, 3, 32, 32)
    was = gc.isenabled()
    try:
        gc.enable() if enabled else gc.disable()
        seen = []
        hook = model.register_forward_pre_hook(lambda *_: seen.append(gc.isenabled()))
        prunus.prune(model, x, remove_channels=0.3)
        hook.remove()
        assert seen
        assert not any(seen)  # paused while it traced
        assert gc.isenabled() is enabled
    finally:
        gc.enable() if was else gc.disable()


def test_a_channel_whose_positions_interleave_with_others_gets_its_own_columns():
    """Channels-last flatten: channel c owns Linear columns c, c + C, c + 2C, ... (interleaved, not a block).
    `group_weights` gives channel c exactly those columns, in position order."""
    from prunus.structure import group_weights

    class ChannelsLast(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem, self.conv, self.fc = nn.Conv2d(3, 3, 1), nn.Conv2d(3, 4, 1), nn.Linear(4 * 2 * 2, 5)

        def forward(self, x):
            return self.fc(self.conv(self.stem(x)).permute(0, 2, 3, 1).flatten(1))

    torch.manual_seed(0)
    model = ChannelsLast()
    group = next(g for g in build_groups(model, torch.randn(1, 3, 2, 2), ["stem", "fc"]) if g.key == "conv")
    (cons,) = group_weights(model, group, consumers=True).consumers
    w = model.fc.weight.detach()
    for c in range(4):
        expected = torch.cat([w[:, p] for p in range(c, 16, 4)])
        torch.testing.assert_close(cons[c], expected, rtol=0, atol=0)
