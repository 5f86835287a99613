"""Every structure class that broke pruning on other people's CNNs (issue 29), on a tiny hand-made model each.

For each: the pruned model computes exactly what the dense model computes with the removed
channels masked, it trains, it saves and loads to the same outputs, no layer is left without
channels; where a structure cannot be cut exactly, its group is left whole with one warning naming
the module and the reason, and the rest of the model is still pruned.
"""

from __future__ import annotations

import copy
import re
import sys
import warnings

import pytest
import torch
from torch import nn

import prunus
from prunus.errors import StructureWarning
from prunus.structure import StructureError, build_groups, get_history, remove_, remove_many_, soft_mask_

from . import families as fam
from .conftest import pick, randomize_

# group keys that must be prunable, and the warnings building the groups must give (exactly)
EXPECTED = {
    "mixnet": (["pw", "mid.0", "a", "b"], []),
    "res2net": (["block.conv1", "block.convs.1"], []),
    "cspnet": (["conv_exp.0", "blocks.0", "conv_transition.0"], []),
    "dpn": (["proj", "b1.a.0", "b1.b.0", "b2.a.0", "b2.b.0"], []),
    "sknet": (["pre.0", "sk.paths.0.0", "sk.fc_reduce", "conv"], []),
    "nfnet": (
        ["a", "b", "c", "e"],
        [
            "group 'd' is left unpruned: StdConv 'c' changes its other outputs when an input channel goes "
            "(e.g. it standardises its weight over its inputs)"
        ],
    ),
    "groupnorm": (["c1", "c2", "c3"], []),
    "conv1d": (["c1", "c3"], []),
    "conv3d": (["c1", "c3"], []),
    "tuple_io": (["c1", "c2"], []),
    "dict_io": (["c1", "c2"], []),
    "attention": (
        ["c2.0", "gc.fc1"],
        [
            "group 'c1.0' is left unpruned: Conv1d 'eca.conv' reads positions of different channels along one "
            "input channel (after a pixel_shuffle, or ECA attention's conv over the channels)"
        ],
    ),
    "shuffle": (["g", "c", "pre.0", "post"], []),
    "scalar_args": (["a", "b", "c"], []),
    "constant_channels": (
        ["fc1", "lin1"],
        ["group 'c3' is left unpruned: its masked channels are not zero where 'c4' reads them (e.g. after a sigmoid)"],
    ),
    "qk_attention": (["q", "v"], []),
    "spatial_reads": (["a", "b"], []),
    "fused_qkv": (["qkv", "mlp1"], []),
    "stat_norms": (
        ["a", "lin1", "c"],
        ["group 'e' is left unpruned: mean in CenteredNorm 'centered' mixes the channels with each other"],
    ),
    "mixed_pointwise": (
        ["s"],
        [
            "group 'expand' is left unpruned: the model fails once it is cut (RuntimeError: split_with_sizes "
            "expects split_sizes to sum exactly to 10 (input tensor's size at dimension 1), but got "
            "split_sizes=[6, 6])"
        ],
    ),
    "tcn": (["blocks.0.0", "blocks.1.0", "blocks.2.0"], []),
    "pixel_shuffle": (["a", "to_space", "after"], []),
    "shuffle_after_sigmoid": (
        ["after"],
        [
            "group 'a' is left unpruned: its masked channels are not zero where 'after' reads them (e.g. after a sigmoid)"
        ],
    ),
    "parametrized": (
        ["wn", "last"],
        [
            f"group '{key}' is left unpruned: ParametrizedConv2d 'sn' has its weight parametrized by _SpectralNorm, "
            "whose own tensors are shaped by the whole weight"
            for key in ("scaled", "sn")
        ],
    ),
    "unet": (["down", "up"], ["group 'fuse' is left unpruned: ConvTranspose2d 'refine' is not supported (grouped)"]),
    "decoder1d": (["enc", "up1", "up2", "out"], []),
    "input_shift": (
        ["b"],
        [
            "group 'a' is left unpruned: its masked channels reach 'b' as values that depend on the input or the "
            "position, not one constant to fold into its bias"
        ],
    ),
}
# groups left whole, and the one warning that says why
LEFT_WHOLE = {
    "dpn_literal": ("proj", r"^group 'proj' is left unpruned: the model fails once it is cut \(RuntimeError: "),
    "groupnorm_one": (
        "c2",
        r"^group 'c2' is left unpruned: GroupNorm in GroupNorm 'gn2' normalises all its 8 channels together$",
    ),
    "nfnet": ("d", r"^group 'd' is left unpruned: StdConv 'c' changes its other outputs when an input channel goes"),
    "attention": ("c1.0", r"^group 'c1.0' is left unpruned: Conv1d 'eca.conv' reads positions of different channels"),
    "constant_channels": (
        "c3",
        r"^group 'c3' is left unpruned: its masked channels are not zero where 'c4' reads them",
    ),
    "input_shift": (
        "a",
        r"^group 'a' is left unpruned: its masked channels reach 'b' as values that depend on the input",
    ),
    "stat_norms": (
        "e",
        r"^group 'e' is left unpruned: mean in CenteredNorm 'centered' mixes the channels with each other$",
    ),
    "split_piece": ("s", r"^group 's' is left unpruned: the model fails once it is cut \(RuntimeError: "),
    "shuffle_after_sigmoid": (
        "a",
        r"^group 'a' is left unpruned: its masked channels are not zero where 'after' reads",
    ),
    "parametrized": ("sn", r"^group 'sn' is left unpruned: ParametrizedConv2d 'sn' has its weight parametrized by "),
    "unet": ("fuse", r"^group 'fuse' is left unpruned: ConvTranspose2d 'refine' is not supported \(grouped\)$"),
    "fused_qkv_odd": (
        "qkv",
        r"^group 'qkv' is left unpruned: its channels must go in units of unequal sizes \[1, 2\]$",
    ),
}


def _dense(name: str, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return randomize_(fam.build(name), seed).eval()


def _groups(model: nn.Module, x) -> tuple[list, list[str]]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        groups = build_groups(model, x)
    return groups, [str(w.message) for w in caught if issubclass(w.category, StructureWarning)]


def _no_zero_width(model: nn.Module) -> None:
    for name, m in model.named_modules():
        for attr in ("in_channels", "out_channels", "in_features", "out_features", "num_features", "num_groups"):
            if hasattr(m, attr):
                assert getattr(m, attr) > 0, f"{name}.{attr} is 0"
    for name, p in model.named_parameters():
        assert p.numel() > 0, f"{name} is empty"


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_pruned_equals_masked(name):
    model, x = _dense(name), fam.inputs(name)
    groups, warned = _groups(model, x)
    prunable, expected_warnings = EXPECTED[name]
    assert [g.key for g in groups if g.prunable] == prunable
    assert warned == expected_warnings
    chosen = pick(groups, 0.4, seed=3)
    masked = copy.deepcopy(model)
    for g in groups:
        if g.key in chosen:
            soft_mask_(masked, g, chosen[g.key])
    widths = {g.key: g.num_channels for g in groups}
    for g in groups:
        if g.key in chosen:
            remove_(model, g, chosen[g.key])
    assert all(chosen.values())
    for g in groups:
        assert g.num_channels == widths[g.key] - len(chosen.get(g.key, []))
    with torch.no_grad():
        torch.testing.assert_close(fam.outputs(fam.run(model, x)), fam.outputs(fam.run(masked, x)), rtol=0, atol=1e-5)
    _no_zero_width(model)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_prune_trains_and_saves_and_loads_to_the_same_outputs(name, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "prunus_test_families", fam)
    model, x = _dense(name), fam.inputs(name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", StructureWarning)
        model, report = prunus.prune(model, x, remove_channels=0.4)
    assert report.pruned_params < report.dense_params
    assert all(after >= 1 for _, after in report.widths.values())
    _no_zero_width(model)
    # one training step at another batch size: the loss goes back through every cut layer
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    layers = {n: m for n, m in model.named_modules() if isinstance(m, (nn.modules.conv._ConvNd, nn.Linear))}
    before = {n: m.weight.detach().clone() for n, m in layers.items()}  # read again after the step: a
    # parametrized weight is computed from its originals on every access
    out = fam.run(model, fam.inputs(name, batch=3, seed=1))
    loss = sum(o.square().mean() for o in ((out,) if isinstance(out, torch.Tensor) else out))
    loss.backward()
    opt.step()
    assert torch.isfinite(loss)
    assert all(p.grad is not None for p in model.parameters())
    assert [n for n, m in layers.items() if torch.equal(m.weight, before[n])] == []  # every conv and linear learns
    # save -> load rebuilds the pruned shapes by replaying the history on the recorded input shape(s)
    model.eval()
    prunus.save(model, tmp_path / "m")
    loaded = prunus.load(tmp_path / "m", trust_factory=True)
    with torch.no_grad():
        assert torch.equal(fam.outputs(fam.run(loaded, x)), fam.outputs(fam.run(model, x)))
    assert [tuple(p.shape) for p in loaded.parameters()] == [tuple(p.shape) for p in model.parameters()]


@pytest.mark.parametrize("name", sorted(LEFT_WHOLE))
def test_a_structure_that_cannot_be_cut_is_left_whole_with_one_warning(name):
    key, message = LEFT_WHOLE[name]
    model, x = _dense(name), fam.inputs(name)
    dense_width = {f"{n}.weight": m.weight.shape for n, m in model.named_modules()
                   if isinstance(getattr(m, "weight", None), torch.Tensor)}  # fmt: skip
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model, report = prunus.prune(model, x, remove_channels=0.4)
    mine = [str(w.message) for w in caught
            if issubclass(w.category, StructureWarning) and str(w.message).startswith(f"group '{key}'")]  # fmt: skip
    assert len(mine) == 1
    assert re.match(message, mine[0]), mine[0]
    assert key not in report.widths  # left whole ...
    assert model.get_submodule(key).weight.shape[0] == dense_width[f"{key}.weight"][0]
    assert report.achieved_ratio > 0  # ... and the rest is pruned
    with torch.no_grad():
        fam.run(model, x)
    _no_zero_width(model)


def test_explicit_split_sizes_follow_the_cut():
    model, x = _dense("mixnet"), fam.inputs("mixnet")
    group = {g.key: g for g in build_groups(model, x)}["pw"]
    assert group.segments == ((0, 1, 2, 3), (4, 5, 6, 7, 8, 9, 10, 11))  # the two pieces of split([4, 8])
    remove_(model, group, [1, 2, 5, 6, 7])
    assert model.mix.splits == [2, 5]
    assert [c.in_channels for c in model.mix.convs] == [2, 5]
    with pytest.raises(StructureError, match="would empty a piece of a split"):
        remove_(model, group, [0, 1])  # the whole first piece


def test_equal_split_width_and_slice_bounds_follow_the_cut():
    model, x = _dense("res2net"), fam.inputs("res2net")
    group = {g.key: g for g in build_groups(model, x)}["block.conv1"]
    assert group.blocks == 3  # split(width=4) into 3 pieces: one offset of every piece goes at once
    with pytest.raises(StructureError, match="whole units of 3 channels"):
        remove_(model, group, [0])
    remove_(model, group, [0, 4, 8])
    assert model.block.width == 3
    csp = _dense("cspnet")
    expand = {g.key: g for g in build_groups(csp, fam.inputs("cspnet"))}["conv_exp.0"]
    remove_(csp, expand, [1, 5])  # one offset of both halves
    assert csp.expand_chs == 6  # the attribute the split size is computed from
    dpn = _dense("dpn")
    proj = {g.key: g for g in build_groups(dpn, fam.inputs("dpn"))}["proj"]
    remove_(dpn, proj, [0, 7])  # one residual channel, one dense channel of the stream
    assert (dpn.resid, dpn.b1.r, dpn.b2.r) == (5, 5, 5)


def test_groupnorm_loses_whole_groups():
    model, x = _dense("groupnorm"), fam.inputs("groupnorm")
    group = {g.key: g for g in build_groups(model, x)}["c1"]
    assert (group.blocks, group.units[1]) == (3, (3, 4, 5))
    remove_(model, group, [3, 4, 5, 9, 10, 11])
    assert (model.gn1.num_groups, model.gn1.num_channels, model.c1.out_channels) == (2, 6, 6)


def test_prune_never_empties_a_group_or_a_piece_even_at_ratio_0_99():
    for name in ("mixnet", "dpn", "res2net", "groupnorm", "sknet"):
        model, x = _dense(name), fam.inputs(name)
        model, report = prunus.prune(model, x, remove_channels=0.99)
        assert all(after >= 1 for _, after in report.widths.values())
        if name == "mixnet":
            assert model.mix.splits == [1, 1]
        _no_zero_width(model)
        with torch.no_grad():
            fam.run(model, x)


@pytest.mark.parametrize("name", ["conv1d", "conv3d"])
def test_conv1d_and_conv3d_count_and_export(name, tmp_path):
    pytest.importorskip("onnxruntime")
    from prunus.deploy.export import export_onnx

    model, x = _dense(name), fam.inputs(name)
    shape = tuple(x.shape[1:])
    dense = prunus.count(model, shape)
    model, report = prunus.prune(model, x, keep_macs=0.6)
    counted = prunus.count(model, shape)
    assert counted.macs == report.pruned_macs < dense.macs
    assert counted.params == report.pruned_params
    assert prunus.count(model, (1, *shape)) == counted  # with the batch dimension too
    k = 3 if name == "conv1d" else 27
    c1 = model.c1
    assert counted.layers["c1"].macs == c1.out_channels * c1.in_channels * k * (16 if name == "conv1d" else 216)
    result = export_onnx(model, tmp_path / "m.onnx", x)
    assert result.max_abs_diff <= 1e-4
    assert result.checked_batches == (2, 4)


def test_several_inputs_and_outputs_are_counted_and_recorded():
    model, x = _dense("tuple_io"), fam.inputs("tuple_io")
    model, report = prunus.prune(model, x, remove_channels=0.5)
    assert prunus.count(model, example_inputs=x).macs == report.pruned_macs
    assert prunus.count(model, ((3, 8, 8), (1, 8, 8))).macs == report.pruned_macs
    assert prunus.models.info.get_info(model).input_shape == ((3, 8, 8), (1, 8, 8))
    keyword, xd = _dense("dict_io"), fam.inputs("dict_io")
    keyword, _ = prunus.prune(keyword, xd, remove_channels=0.5)
    assert prunus.models.info.get_info(keyword).input_shape == {"img": (3, 8, 8), "aux": (1, 8, 8)}
    assert prunus.count(keyword, {"img": (3, 8, 8), "aux": (1, 8, 8)}).macs == report.pruned_macs


def test_selective_kernel_paths_and_their_attention_rows_are_one_channel():
    model, x = _dense("sknet"), fam.inputs("sknet")
    group = {g.key: g for g in build_groups(model, x)}["sk.paths.0.0"]
    assert group.num_channels == 8
    assert group.modules("out") == ["sk.paths.0.0", "sk.paths.1.0", "sk.fc_select"]
    select = next(s for s in group.slices if s.module == "sk.fc_select" and s.role == "out")
    assert select.index == tuple(range(16))
    assert select.channel == (*range(8), *range(8))  # rows c and 8 + c (paths 0 and 1) belong to channel c


def test_a_one_channel_gate_does_not_tie_the_channels_it_scales():
    model, x = _dense("attention"), fam.inputs("attention")
    with pytest.warns(StructureWarning, match="'c1.0' is left unpruned"):
        groups = {g.key: g for g in build_groups(model, x)}
    assert groups["c2.0"].num_channels == 8  # the stream the gate multiplies: 8 channels, not 1
    assert groups["c2.0"].prunable
    assert groups["c1.0"].num_channels == 12  # the stream ECA reads across: left whole, still 12 channels
    assert groups["gate"].num_channels == 1


@pytest.mark.parametrize("name", ["unet", "decoder1d"])
def test_transposed_convs_are_counted_cut_exactly_and_exported(name, tmp_path):
    """A ConvTranspose's MACs are its input elements x out/groups x kernel volume (each input value meets
    every kernel tap); a prune reaches the MACs its cost model predicts, and the cut model exports."""
    pytest.importorskip("onnxruntime")
    from prunus.deploy.export import export_onnx
    from prunus.deploy.fold import fold_bn

    model, x = _dense(name), fam.inputs(name)
    shape = tuple(x.shape[1:])
    dense = prunus.count(model, shape)
    up = model.up if name == "unet" else model.up1
    length = 4 if name == "unet" else 8  # the transposed conv's input: 4x4 after the stride-2 conv, or 8 long
    taps = 9 if name == "unet" else 3
    positions = length * length if name == "unet" else length
    assert dense.layers["up" if name == "unet" else "up1"].macs == up.in_channels * positions * up.out_channels * taps
    if name == "unet":
        assert dense.layers["refine"].macs == 8 * 64 * (8 // 2) * 9  # grouped: out/groups per input element
        folded, n = fold_bn(model)  # the BatchNorm after the ConvTranspose folds into its 6 columns, not 12 rows
        assert n == 2
        assert isinstance(folded.bn_up, nn.Identity)
        with torch.no_grad():
            torch.testing.assert_close(folded(x), model(x), rtol=1e-5, atol=1e-5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", StructureWarning)
        model, report = prunus.prune(model, x, keep_macs=0.6)
    counted = prunus.count(model, shape)
    assert counted.macs == report.pruned_macs < dense.macs
    assert counted.params == report.pruned_params
    up = model.up if name == "unet" else model.up1
    assert up.weight.shape[:2] == (up.in_channels, up.out_channels)  # (in, out, *kernel), both sides cut
    assert up.out_channels < (6 if name == "unet" else 7)
    result = export_onnx(model, tmp_path / "m.onnx", x)
    assert result.max_abs_diff <= 1e-4


@pytest.mark.parametrize("name", ["size_from_input", "size_one_from_input"])
def test_groups_that_agree_only_when_cut_together_are_each_left_whole(name):
    """Cut at once by the same trial amount, `pre` and `v` still fit the reshape; cut by a real plan they
    do not. Each is tried alone too, so both stay whole and the pruned model runs at any batch size.
    The width is read as `x.shape` or as `x.size(1)`: both are channel widths the code may reuse."""
    model, x = _dense(name), fam.inputs(name)
    groups, warned = _groups(model, x)
    assert sorted(g.key for g in groups if not g.prunable and g.key in ("pre", "v")) == ["pre", "v"]
    assert sum("is left unpruned: the model fails once it is cut" in w for w in warned) == 2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", StructureWarning)
        pruned, _ = prunus.prune(model, x, remove_channels=0.5)
    for batch in (1, 3):
        assert pruned(fam.inputs(name, batch=batch)).shape == (batch, 5)


class _OwnForwardConv(nn.Conv2d):
    """A user conv with its own forward: probed, and its group tried by a trial cut (risky)."""

    def forward(self, x):
        return super().forward(x) * 1.0


class _CoincidenceTwoApart(fam.SizeFromInput):
    """`pre` and `v` agree only when cut by the same amount (as in `SizeFromInput`), and a harmless risky
    group `mid` (a user conv) sits between them in trial order: indices 0 and 2 differ only in bit 1."""

    def __init__(self) -> None:
        super().__init__()
        del self.v, self.post, self.fc
        self.mid = _OwnForwardConv(8, 8, 1)
        self.v, self.post, self.fc = nn.Conv2d(8, 8, 1), nn.Conv2d(8, 8, 1), nn.Linear(16, 5)

    def forward(self, x):
        x = torch.relu(self.pre(torch.relu(self.stem(x))))
        b, c, h, w = x.shape
        out = self.v(x).reshape(b, c, h * w).reshape(b, c, h, w)
        return self.fc(torch.cat([torch.relu(self.post(out)).mean((2, 3)), self.mid(x).mean((2, 3))], 1))


def test_a_coincidence_between_groups_that_differ_in_a_higher_bit_is_broken():
    """The trial rounds cut group i one unit more when bit b of i is set: groups 0 and 2 first differ in
    round 1, so one round alone would pass them together and hand back a model that fails."""
    torch.manual_seed(0)
    model, x = randomize_(_CoincidenceTwoApart(), 0).eval(), torch.randn(2, 3, 8, 8)
    groups, _ = _groups(model, x)
    trial_order = [g.key for g in groups if g.key in ("pre", "mid", "v")]
    assert trial_order == ["pre", "mid", "v"]
    assert {g.key: g.prunable for g in groups if g.key in trial_order} == {"pre": False, "mid": True, "v": False}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", StructureWarning)
        pruned, _ = prunus.prune(model, x, remove_channels=0.5)
    assert pruned(torch.randn(3, 3, 8, 8)).shape == (3, 5)


def test_a_trial_cut_of_folded_constants_compares_like_with_like():
    """A user conv (tried by a trial cut) whose masked channels reach a 1x1 conv as StarReLU's constant:
    the trial folds the constant and compares the cut model with the masked one on the same input, so
    the group passes and prunes exactly (a reference from another input would leave it whole)."""
    torch.manual_seed(0)
    model = fam.ConstantChannels()
    model.fc1 = _OwnForwardConv(8, 16, 1, bias=False)
    # the seed-0 example is the trial's own first random draw: the trial must draw another input
    model, x = randomize_(model, 0).eval(), fam.inputs("constant_channels")
    groups, warned = _groups(model, x)
    fc1 = next(g for g in groups if g.key == "fc1")
    assert fc1.prunable, warned
    masked, pruned = copy.deepcopy(model), copy.deepcopy(model)
    soft_mask_(masked, fc1, [0, 3, 5])
    remove_(pruned, next(g for g in build_groups(pruned, x) if g.key == "fc1"), [0, 3, 5])
    assert pruned.fc1.out_channels == 13
    torch.testing.assert_close(pruned(x), masked(x), rtol=1e-5, atol=1e-5)
    # One graph for the trial and the cut: the bias the trial gave fc2 was taken back, the cut adds it
    # again and cuts it with fc2's own rows (the stem's stream, prunable here). Cutting most channels,
    # the cut looks in every axis (a few are looked up in the class index).
    model, _ = prunus.prune(model, x, remove_channels=0.75, ignored_layers=["fc"])
    assert (model.fc1.out_channels, model.fc2.out_channels) == (4, 2)
    assert model.fc2.bias is not None
    assert model.fc2.bias.shape == (2,)


@pytest.mark.parametrize("name", sorted(set(EXPECTED) | set(LEFT_WHOLE)))
def test_removing_every_group_in_one_pass_equals_removing_them_one_by_one(name):
    """`remove_many_` (what `prune` uses) gives the tensors, attributes and history of `remove_` group by
    group; the groups stay usable afterwards (their slices shrank, a further cut works)."""
    x = fam.inputs(name)
    one_by_one, at_once = _dense(name), _dense(name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", StructureWarning)
        groups_a, groups_b = build_groups(one_by_one, x), build_groups(at_once, x)
    chosen = pick(groups_a)
    assert chosen
    for g in groups_a:
        if g.key in chosen:
            remove_(one_by_one, g, chosen[g.key])
    remove_many_(at_once, [(g, chosen[g.key]) for g in groups_b if g.key in chosen])
    assert get_history(at_once) == get_history(one_by_one)
    a, b = one_by_one.state_dict(), at_once.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].shape == b[k].shape, k
        torch.testing.assert_close(b[k], a[k], rtol=1e-5, atol=1e-6, msg=k)
    for ma, mb in zip(one_by_one.modules(), at_once.modules(), strict=True):
        assert {k: v for k, v in vars(ma).items() if not k.startswith("_")} == {
            k: v for k, v in vars(mb).items() if not k.startswith("_")
        }
    with torch.no_grad():
        torch.testing.assert_close(fam.outputs(fam.run(at_once, x)), fam.outputs(fam.run(one_by_one, x)))
    g = next(g for g in groups_b if g.key in chosen and len(g.units) > 1)
    assert sum(len(s.index) for s in g.slices) > 0
    remove_(at_once, g, list(g.units[0]))
    assert len(get_history(at_once)) == len(chosen) + 1


def test_reading_ndim_or_a_spatial_size_needs_no_trial_cut():
    """`x.ndim` and `x.size(-2)` are no channel widths: the model runs once (the trace), not once per trial
    cut; reading `x.size(1)` instead sends the groups to the trial cut (two runs per trial)."""
    calls = []

    def count(model, x):
        handle = model.register_forward_pre_hook(lambda *_: calls.append(1))
        try:
            build_groups(model, x)
        finally:
            handle.remove()
        n = len(calls)
        calls.clear()
        return n

    assert count(_dense("spatial_reads"), fam.inputs("spatial_reads")) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", StructureWarning)
        assert count(_dense("size_one_from_input"), fam.inputs("size_one_from_input")) > 1


def test_removing_constant_channels_folds_them_into_a_new_bias_and_merging_does_not():
    from prunus.structure import merge_

    from .test_merge import _make_identical_

    model, x = _dense("constant_channels"), fam.inputs("constant_channels")
    groups = {g.key: g for g in build_groups(model, x)}
    assert model.fc2.bias is None
    masked = copy.deepcopy(model)
    soft_mask_(masked, {g.key: g for g in build_groups(masked, x)}["fc1"], [0, 5, 9])
    remove_(model, groups["fc1"], [0, 5, 9])
    # the constant StarReLU leaves on the three channels, through fc2's columns, is now fc2's bias
    assert tuple(model.fc2.bias.shape) == (8,)
    assert float(model.fc2.bias.abs().max()) > 1e-3
    with torch.no_grad():
        torch.testing.assert_close(model(x), masked(x), rtol=0, atol=1e-5)
    # C-SGD's merge: the members carry real (identical) values, not constants; nothing is folded
    model = _dense("constant_channels")
    group = {g.key: g for g in build_groups(model, x)}["lin1"]
    _make_identical_(model, group, [[0, 11], [1, 10]])
    with torch.no_grad():
        before, bias = model(x), model.lin2.bias.detach().clone()
    merge_(model, group, [[0, 11], [1, 10]])
    with torch.no_grad():
        torch.testing.assert_close(model(x), before, rtol=0, atol=1e-5)
    assert torch.equal(model.lin2.bias, bias)


def test_attention_logits_tie_query_and_key_channels_pairwise():
    model, x = _dense("qk_attention"), fam.inputs("qk_attention")
    group = {g.key: g for g in build_groups(model, x)}["q"]
    assert group.modules("out") == ["q", "k"]
    assert group.units == tuple((i, i + 6) for i in range(6))  # q_i with k_i, nothing else
    masked = copy.deepcopy(model)
    soft_mask_(masked, {g.key: g for g in build_groups(masked, x)}["q"], [1, 7, 4, 10])
    remove_(model, group, [1, 7, 4, 10])
    assert (model.q.out_channels, model.k.out_channels) == (4, 4)
    with torch.no_grad():
        torch.testing.assert_close(model(x), masked(x), rtol=0, atol=1e-5)


@pytest.mark.filterwarnings("ignore::prunus.errors.StructureWarning")
def test_normalisations_over_channels_are_cut_with_eps_and_weight_rescaled_and_never_merged():
    from prunus.methods._clustering import unsupported_reason

    model, x = _dense("stat_norms"), fam.inputs("stat_norms")
    groups = {g.key: g for g in build_groups(model, x)}
    rms_w, grn_w, grn_b, trms_w = (t.detach().clone() for t in (model.rms.weight, model.grn.weight,
                                                                model.grn.bias, model.trms.weight))  # fmt: skip
    remove_(model, groups["a"], [0, 3, 4, 7])  # 12 -> 8
    remove_(model, groups["lin1"], [2, 5, 6, 9, 12, 15])  # 16 -> 10
    remove_(model, groups["c"], [1, 8])  # 10 -> 8
    keep_a, keep_l, keep_c = [1, 2, 5, 6, 8, 9, 10, 11], [0, 1, 3, 4, 7, 8, 10, 11, 13, 14], [0, *range(2, 8), 9]
    # RMS: the mean of squares over 12 channels of which 4 are zero is 8/12 of the mean over the 8 kept
    assert model.rms.eps == pytest.approx(0.5 * 12 / 8)
    assert model.rms.normalized_shape == (8,)
    torch.testing.assert_close(model.rms.weight, rms_w[keep_a] * (12 / 8) ** 0.5)
    # GRN: the mean of norms over 16 channels is 10/16 of the mean over the 10 kept; its bias is only sliced
    assert model.grn.eps == pytest.approx(0.3 * 16 / 10)
    torch.testing.assert_close(model.grn.weight, grn_w[keep_l] * (16 / 10))
    torch.testing.assert_close(model.grn.bias, grn_b[keep_l])
    assert model.trms.eps == pytest.approx(0.4 * 10 / 8)
    assert model.trms.normalized_shape == (8,)
    torch.testing.assert_close(model.trms.weight, trms_w[keep_c] * (10 / 8) ** 0.5)
    # a second cut rescales from the current width: eps grows by 8/6, not by 12/6 again
    groups = {g.key: g for g in build_groups(model, x)}
    remove_(model, groups["a"], [0, 1])
    assert model.rms.eps == pytest.approx(0.5 * 12 / 6)
    # C-SGD: duplicated channels count twice in the statistic, so merging them is not exact
    fresh = _dense("stat_norms")
    for key in ("a", "lin1", "c"):
        assert "per-channel parameter" in unsupported_reason({g.key: g for g in build_groups(fresh, x)}[key], fresh)


def test_units_of_unequal_sizes_are_packed_into_equal_ones_within_each_split_piece():
    model, x = _dense("fused_qkv"), fam.inputs("fused_qkv")
    group = {g.key: g for g in build_groups(model, x)}["qkv"]
    # q_i with k_i (channels i and 4 + i); the 8 v channels (8..15) packed two by two, in channel order
    assert group.prunable
    assert group.blocks == 2
    assert sorted(group.units) == [(0, 4), (1, 5), (2, 6), (3, 7), (8, 9), (10, 11), (12, 13), (14, 15)]
    masked = copy.deepcopy(model)
    soft_mask_(masked, {g.key: g for g in build_groups(masked, x)}["qkv"], [1, 5, 10, 11, 14, 15])
    remove_(model, group, [1, 5, 10, 11, 14, 15])
    assert model.sections == [3, 3, 4]
    assert model.qkv.out_channels == 10
    with torch.no_grad():
        torch.testing.assert_close(model(x), masked(x), rtol=0, atol=1e-5)


@pytest.mark.parametrize("name", ["mixnet", "res2net", "sknet", "parametrized"])
def test_trial_cuts_of_a_training_model_leave_it_as_it_was(name):
    """The trial cuts run the model in eval mode: a training model's BatchNorm statistics, weights and
    mode are what they were before `build_groups` (in train mode the trials would update them)."""
    model, x = _dense(name).train(), fam.inputs(name)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    groups, _ = _groups(model, x)
    assert any(g.prunable and g._graph.groups[g.key].risky for g in groups)  # trials did run
    assert all(m.training for m in model.modules())
    after = model.state_dict()
    for k, v in before.items():
        assert torch.equal(after[k], v), k


def test_a_zero_initialised_gain_does_not_hide_a_standardised_weight_from_the_probe():
    """timm's NFNets zero-initialise the gain of each block's last conv: its output is then zero whatever its
    inputs, so cutting one looked exact; once the gain is trained, the cut changes every output (and a weight
    standardised over one input channel fails outright). The probe sees through constant tensors."""
    model = _dense("nfnet")
    with torch.no_grad():
        model.c.gain.zero_()
    groups = {g.key: g for g in build_groups(model, fam.inputs("nfnet"))}
    assert not groups["d"].prunable
    assert groups["d"].reason.startswith("StdConv 'c' changes its other outputs when an input channel goes")
    assert groups["c"].prunable  # its outputs still go: standardising is per output channel


def test_a_conv_whose_rows_are_one_piece_of_a_wider_group_keeps_one_of_them():
    """The stream's 8 channels are written by `s` and by two concatenated convs: the 4 weakest are all
    pwl.0's, and a 50% cut used to take them all, leaving pwl.0 with 0 output channels (timm's mixnet_s)."""
    torch.manual_seed(0)
    model = fam.build("mixed_pointwise").eval()
    with torch.no_grad():
        model.pwl[0].weight.mul_(1e-3)
        model.s.weight[:4].mul_(1e-3)  # the stream's score sums its writers: channels 0-3 are the weakest
    x = fam.inputs("mixed_pointwise")
    group = {g.key: g for g in build_groups(model, x)}["s"]
    assert group.num_channels == 8
    assert group.min_channels == 2  # one per concatenated conv
    pruned, _ = prunus.prune(model, x, remove_channels=0.5)
    assert (pruned.s.out_channels, pruned.pwl[0].out_channels, pruned.pwl[1].out_channels) == (4, 1, 3)


def test_a_piece_inside_another_piece_counts_once():
    """Segments of the stream: a's two split halves, a's rows (which hold them: implied) and b's rows. One
    channel must stay in each half and in b's rows: 3, not 4."""
    torch.manual_seed(0)
    group = {g.key: g for g in build_groups(fam.build("split_piece").eval(), fam.inputs("split_piece"))}["s"]
    assert group.num_channels == 8
    assert sorted(map(sorted, group.segments)) == [[0, 1], [2, 3], [4, 5, 6, 7]]
    assert group.min_channels == 3
