"""Parametrized weights (torch.nn.utils.parametrize) under prunus's cuts and masks.

A parametrized `module.weight` is computed from stored originals on every access, so zeroing it in
place changes nothing and a cut must be assigned through the parametrization's right inverse. The
family test (`families.Parametrized`) checks pruned == masked, training, save/load and the trial cut;
here: which parametrizations can be edited exactly, the masks' values, and masks through training.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize
from torch.nn.utils.weight_norm import WeightNorm

import prunus
from prunus.compress import CompressConfig, compress, decompress
from prunus.deploy.export import export_onnx
from prunus.errors import StructureWarning
from prunus.models.info import update_info
from prunus.structure import HardMask, build_groups, soft_mask_
from prunus.structure.parametrized import mask_, why_not_editable

from .families import Doubled


class NoInverse(nn.Module):
    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return 2 * w


class WholeNorm(nn.Module):
    """Normalises by the norm of the whole tensor: a cut or mask changes every other value."""

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return w / w.norm()

    def right_inverse(self, w: torch.Tensor) -> torch.Tensor:
        return w


class Positive(nn.Module):
    """Weights kept positive through exp: any cut comes back, a zero (a mask) cannot be represented."""

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return torch.exp(w)

    def right_inverse(self, w: torch.Tensor) -> torch.Tensor:
        return torch.log(w.clamp_min(1e-2))


def _conv(kind: str) -> nn.Module:
    torch.manual_seed(0)
    conv = nn.Conv2d(4, 6, 3)
    if kind == "weight_norm":
        return nn.utils.parametrizations.weight_norm(conv)
    if kind == "weight_norm_linear":
        return nn.utils.parametrizations.weight_norm(nn.Linear(4, 6))
    if kind == "weight_norm_columns":
        return nn.utils.parametrizations.weight_norm(nn.Linear(4, 6), dim=1)
    if kind == "spectral_norm":
        return nn.utils.parametrizations.spectral_norm(conv)
    if kind == "orthogonal":
        return nn.utils.parametrizations.orthogonal(nn.Linear(4, 6))
    if kind == "old_weight_norm":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            return nn.utils.weight_norm(conv)
    user = {"doubled": Doubled, "no_inverse": NoInverse, "whole_norm": WholeNorm, "positive": Positive}
    if kind in user:
        parametrize.register_parametrization(conv, "weight", user[kind]())
    return conv


@pytest.mark.parametrize(
    ("kind", "why"),
    [
        ("plain", None),
        ("weight_norm", None),
        ("weight_norm_linear", None),
        ("weight_norm_columns", None),
        ("doubled", None),
        (
            "positive",
            "has its weight parametrized by Positive, which does not give back a masked weight it is assigned",
        ),
        (
            "spectral_norm",
            "has its weight parametrized by _SpectralNorm, whose own tensors are shaped by the whole weight",
        ),
        ("orthogonal", "has its weight parametrized by _Orthogonal, whose own tensors are shaped by the whole weight"),
        ("no_inverse", "has its weight parametrized by NoInverse, which cannot take a cut weight: 'NoInverse' object"),
        (
            "whole_norm",
            "has its weight parametrized by WholeNorm, which does not give back a cut weight it is assigned",
        ),
        ("old_weight_norm", "uses torch.nn.utils.weight_norm on its weight (deprecated: a hook recomputes it)"),
    ],
)
def test_which_parametrizations_a_cut_can_be_written_through(kind, why):
    got = why_not_editable(_conv(kind))
    assert (got is None) if why is None else got.startswith(why), got


@pytest.mark.parametrize("kind", ["weight_norm", "weight_norm_linear", "weight_norm_columns", "doubled"])
@pytest.mark.parametrize("dim", [0, 1])
def test_a_mask_zeroes_exactly_its_rows_or_columns_and_keeps_the_rest(kind, dim):
    conv = _conv(kind)
    before = conv.weight.detach().clone()
    mask_(conv, "weight", dim, [1, 3])
    after = conv.weight.detach()
    assert torch.isfinite(after).all()
    assert after.index_select(dim, torch.tensor([1, 3])).abs().sum() == 0
    rest = torch.tensor([i for i in range(before.shape[dim]) if i not in (1, 3)])
    torch.testing.assert_close(after.index_select(dim, rest), before.index_select(dim, rest), rtol=1e-6, atol=1e-7)


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
        nn.utils.parametrizations.weight_norm(nn.Conv2d(8, 8, 3, padding=1)), nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 5),
    )  # fmt: skip


def test_soft_mask_zeroes_a_weight_normed_conv_rows():
    """`soft_mask_` zeroed the computed tensor in place: nothing changed, and MFP trained an unmasked model."""
    model = _net()
    x = torch.randn(2, 3, 8, 8)
    group = {g.key: g for g in build_groups(model, x)}["4"]
    soft_mask_(model, group, [0, 5])
    assert model[4].weight[[0, 5]].abs().sum() == 0
    assert model[4].weight[[1, 2, 3]].abs().sum() > 0


def test_hard_masks_stay_zero_through_momentum_steps_on_a_weight_normed_conv():
    model = _net()
    x = torch.randn(4, 3, 8, 8)
    groups = {g.key: g for g in build_groups(model, x)}
    hard = HardMask(groups.values())
    hard.set("4", [0, 5])  # rows of the weight_norm conv
    hard.set("2", [2])  # the plain conv before it, in the same model
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3)
    for _ in range(3):
        opt.zero_grad()
        model(x).square().mean().backward()
        hard.apply_(model, opt)
        opt.step()
    w = model[4].weight.detach()
    assert w[[0, 5]].abs().sum() == 0  # the step left the masked rows at zero
    assert model[2].weight[2].abs().sum() == 0
    assert w[[1, 2]].abs().sum() > 0
    g = model[4].parametrizations.weight.original0
    assert opt.state[g]["momentum_buffer"][[0, 5]].abs().sum() == 0


def test_the_deprecated_weight_norm_hook_is_left_whole_with_its_reason_and_still_exports(tmp_path):
    def build() -> nn.Module:
        torch.manual_seed(0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            wn = nn.utils.weight_norm(nn.Conv1d(8, 8, 3, padding=1))
        return nn.Sequential(nn.Conv1d(3, 8, 3, padding=1), nn.ReLU(), wn, nn.BatchNorm1d(8), nn.ReLU(),
                             nn.Conv1d(8, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool1d(1), nn.Flatten(),
                             nn.Linear(8, 10))  # fmt: skip

    model = build().eval()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pruned, report = prunus.prune(model, torch.randn(1, 3, 16), remove_channels=0.5)
    said = [str(w.message) for w in caught if issubclass(w.category, StructureWarning)]
    assert said == [
        "group '2' is left unpruned: Conv1d '2' uses torch.nn.utils.weight_norm on its weight (deprecated: a hook "
        "recomputes it), which a cut cannot follow; torch.nn.utils.parametrizations.weight_norm can be cut"
    ]
    assert "2" not in report.widths
    assert report.widths["5"] == [8, 4]
    for grad in (True, False):  # its hook leaves a weight with a grad_fn (no deep copy), or a plain tensor
        model = build()
        with torch.set_grad_enabled(grad):
            model(torch.randn(2, 3, 16)).sum()
        res = export_onnx(model.eval(), tmp_path / "m.onnx", torch.randn(1, 3, 16))
        assert res.folded_bn == 1  # the BN after it folds into its computed weight; checked in onnxruntime
        assert res.max_abs_diff <= 1e-4
        assert any(isinstance(h, WeightNorm) for h in model[2]._forward_pre_hooks.values())  # the model as it was


def test_the_deprecated_weight_norm_hook_compresses_and_decodes_bit_for_bit(tmp_path, monkeypatch):
    """compress's student copy kept the hook: its search looked for a '2.weight' parameter and failed."""
    import sys
    import types

    def build() -> nn.Module:
        torch.manual_seed(0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            wn = nn.utils.weight_norm(nn.Conv1d(8, 8, 3, padding=1))
        net = nn.Sequential(nn.Conv1d(3, 8, 3, padding=1), nn.ReLU(), wn, nn.ReLU(), nn.AdaptiveAvgPool1d(1),
                            nn.Flatten(), nn.Linear(8, 4))  # fmt: skip
        update_info(net, arch={"factory": "prunus_old_wn:build", "kwargs": {}})
        return net

    monkeypatch.setitem(sys.modules, "prunus_old_wn", types.SimpleNamespace(build=build))
    x = torch.randn(24, 3, 16, generator=torch.Generator().manual_seed(1))
    model = build()
    model(x).sum().backward()  # a weight with a grad_fn, as after training
    cfg = CompressConfig(sparsity=0.5, bits=5, preset="mlp", calib_size=8, rescore_size=0, cycles=1, generations=1,
                         population=2, elite=1, finetune_steps=0)  # fmt: skip
    report = compress(model, x, cfg, out=tmp_path / "m.prn", baselines=False)
    assert "2.weight" in {r.name for r in report.layers}
    back = decompress(tmp_path / "m.prn", trust_factory=True)
    with torch.no_grad():
        assert torch.equal(back(x), report.model(x))


@pytest.mark.parametrize("own_forward", [False, True], ids=["traced", "trial-cut"])
def test_a_constant_folded_into_a_parametrized_bias_goes_through_its_right_inverse(own_forward):
    """StarReLU leaves masked channels as a constant, which removing them folds into the reader's bias. A
    reader whose bias is parametrized computes it: the sum is assigned through the right inverse (an add in
    place would change a temporary). With a user conv before it the group is tried by a trial cut, which
    folds the same way and must hand the stored bias back unchanged."""
    import copy

    from prunus.structure import remove_

    from .conftest import randomize_
    from .families import ConstantChannels, OwnForwardConv, inputs

    torch.manual_seed(0)
    model = ConstantChannels()
    model.fc2 = nn.Conv2d(16, 8, 1)
    if own_forward:
        model.fc1 = OwnForwardConv(8, 16, 1, bias=False)
    model, x = randomize_(model, 0).eval(), inputs("constant_channels")
    parametrize.register_parametrization(model.fc2, "bias", Doubled())
    before = {k: v.clone() for k, v in model.state_dict().items()}
    groups = {g.key: g for g in build_groups(model, x)}
    assert groups["fc1"].prunable
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # a trial leaves no trace
    masked = copy.deepcopy(model)
    soft_mask_(masked, {g.key: g for g in build_groups(masked, x)}["fc1"], [0, 5, 9])
    old_bias = model.fc2.bias.detach().clone()
    remove_(model, groups["fc1"], [0, 5, 9])
    assert parametrize.is_parametrized(model.fc2, "bias")
    assert not torch.equal(model.fc2.bias, old_bias)  # the constant went in...
    torch.testing.assert_close(model.fc2.parametrizations.bias.original * 2, model.fc2.bias)  # ...through g^-1
    with torch.no_grad():
        torch.testing.assert_close(model(x), masked(x), rtol=0, atol=1e-5)
