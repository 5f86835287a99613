"""BatchNorm folding: folded == eager (eval) on every zoo model, pruned too; unsafe pairs are left alone."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

from prunus.deploy.export import export_onnx, export_torchscript
from prunus.deploy.fold import FoldError, fold_bn
from prunus.models import create_model, list_models
from prunus.pruning import prune

X = torch.randn(4, 1, 28, 28, generator=torch.Generator().manual_seed(0))


def _randomize_bn(model: nn.Module) -> nn.Module:
    """Non-trivial BN statistics and affine terms, so a fold that ignored any of them would show."""
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.copy_(torch.rand(m.num_features, generator=gen) - 0.5)
                m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
                m.bias.copy_(torch.rand(m.num_features, generator=gen) - 0.5)
    return model


def _bns(model: nn.Module) -> int:
    return sum(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


@pytest.mark.parametrize("name", list_models())
def test_folded_equals_eager_on_every_zoo_model(name):
    torch.manual_seed(0)
    model = _randomize_bn(create_model(name, num_classes=10, in_channels=1, width_mult=0.25)).train()
    before = copy.deepcopy(model.state_dict())
    folded, n = fold_bn(model)
    assert n == _bns(model)  # in the zoo every BN directly follows a conv used once
    assert _bns(folded) == 0
    assert not folded.training
    assert model.training  # the original is untouched: mode and every tensor
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    with torch.no_grad():
        expected = model.eval()(X)
        got = folded(X)
    assert (got - expected).abs().max().item() <= 1e-5 * max(1.0, expected.abs().max().item())


def test_pruned_model_folds_exactly():
    torch.manual_seed(0)
    model = _randomize_bn(create_model("resnet20", num_classes=10, in_channels=1, width_mult=0.5)).eval()
    model, _ = prune(model, X[:1], keep_macs=0.5)
    folded, n = fold_bn(model)
    assert n == _bns(model) == 21  # ResNet-20, option B: stem + 9 blocks x 2 + 2 projection shortcuts
    with torch.no_grad():
        torch.testing.assert_close(folded(X), model(X), atol=1e-5, rtol=0)


class Shared(nn.Module):
    """A conv whose output feeds its BN and a second branch, and a BN module called twice."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(4)
        self.conv3 = nn.Conv2d(4, 4, 3, padding=1)
        self.tail = nn.Conv2d(4, 4, 1)
        self.tail_bn = nn.BatchNorm2d(4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        z = self.bn(y) + y  # conv output used twice: folding would change the second use
        z = self.bn2(self.conv2(z)) + self.bn2(self.conv3(z))  # bn2 shared by two convs
        return self.tail_bn(self.tail(z))  # the only safe pair


def test_unsafe_pairs_are_not_folded():
    torch.manual_seed(0)
    net = _randomize_bn(Shared()).eval()
    folded, n = fold_bn(net)
    assert n == 1
    assert isinstance(folded.tail_bn, nn.Identity)
    assert isinstance(folded.bn, nn.BatchNorm2d)
    assert isinstance(folded.bn2, nn.BatchNorm2d)
    x = torch.randn(2, 1, 6, 6)
    with torch.no_grad():
        torch.testing.assert_close(folded(x), net(x), atol=1e-5, rtol=0)


class Untraceable(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)
        self.bn = nn.BatchNorm2d(4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.sum() > 0:  # data-dependent control flow: torch.fx cannot trace it
            x = -x
        return self.bn(self.conv(x)).flatten(1)


def test_untraceable_model_raises_and_export_falls_back(tmp_path):
    net = _randomize_bn(Untraceable())
    with pytest.raises(FoldError, match="torch.fx cannot trace Untraceable"):
        fold_bn(net)
    res = export_onnx(net, tmp_path / "m.onnx", torch.randn(2, 1, 6, 6))
    assert res.folded_bn == 0
    assert res.max_abs_diff <= 1e-4


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_export_folds_and_still_matches_the_eager_model(fmt, tmp_path):
    torch.manual_seed(0)
    model = _randomize_bn(create_model("resnet20", num_classes=10, in_channels=1, width_mult=0.25))
    model, _ = prune(model, X[:1], remove_channels=0.5)
    if fmt == "onnx":
        res = export_onnx(model, tmp_path / "m.onnx", X[:2])
        assert res.max_abs_diff <= 1e-4
    else:
        res = export_torchscript(model, tmp_path / "m.pt", X[:2])
        loaded = torch.jit.load(str(res.path))
        assert "batch_norm" not in str(loaded.inlined_graph)
        with torch.no_grad():
            np.testing.assert_allclose(loaded(X).numpy(), model.eval()(X).numpy(), atol=1e-5, rtol=0)
    assert res.folded_bn == 21
    assert res.to_dict()["folded_bn"] == 21
    unfolded = (export_onnx if fmt == "onnx" else export_torchscript)(
        model, tmp_path / f"u.{fmt}", X[:2], fold_bn=False
    )
    assert unfolded.folded_bn == 0


class _Affine(nn.Module):
    """A user parametrization of a bias: the stored tensor is not the one the conv uses."""

    def forward(self, b: torch.Tensor) -> torch.Tensor:
        return 2 * b + 0.1


def _parametrized(kind: str) -> nn.Module:
    torch.manual_seed(0)
    conv = nn.Conv2d(4, 6, 3, padding=1)
    if kind == "weight_norm":
        conv = nn.utils.parametrizations.weight_norm(conv)
        with torch.no_grad():  # g away from ||v||, so a fold of the raw v would show
            conv.parametrizations.weight.original0.mul_(torch.rand(6, 1, 1, 1) + 0.5)
    elif kind == "spectral_norm":
        conv = nn.utils.parametrizations.spectral_norm(conv)
    else:
        nn.utils.parametrize.register_parametrization(conv, "bias", _Affine())
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), conv, nn.BatchNorm2d(6), nn.ReLU(),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 3))  # fmt: skip
    return _randomize_bn(net)


@pytest.mark.parametrize("kind", ["weight_norm", "spectral_norm", "bias"])
def test_a_parametrized_conv_folds_into_its_bn_and_exports(kind, tmp_path):
    """weight_norm / spectral_norm / a user parametrization: the fold assigned over a computed property."""
    net = _parametrized(kind)
    x = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        for _ in range(3):  # spectral_norm's power iteration runs in train mode: the eval value is what folds
            net.train()(x)
        expected = net.eval()(x)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    folded, n = fold_bn(net)
    assert n == 1
    assert isinstance(folded[3], nn.Identity)
    assert not nn.utils.parametrize.is_parametrized(folded[2])
    with torch.no_grad():
        torch.testing.assert_close(folded(x), expected, atol=1e-5, rtol=1e-5)
    assert nn.utils.parametrize.is_parametrized(net[2])  # the user's model is untouched and still runs
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    with torch.no_grad():
        assert torch.equal(net(x), expected)
    res = export_onnx(net, tmp_path / "m.onnx", x[:1])
    assert res.folded_bn == 1
    assert res.max_abs_diff <= 1e-4


class _KeepsGraphTensor(nn.Module):
    """Keeps a tensor with a grad_fn on itself (a user's cache): `copy.deepcopy` refuses the module."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.bn = nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4)
        self.last = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn(self.conv(x))
        self.last = y.mean() if torch.is_grad_enabled() else self.last
        return y.flatten(1)


def test_a_model_that_cannot_be_copied_exports_unfolded(tmp_path):
    net = _randomize_bn(_KeepsGraphTensor())
    net(torch.randn(2, 1, 6, 6))  # with gradients: `last` has a grad_fn
    with pytest.raises(FoldError, match="cannot fold BatchNorm: the model cannot be copied"):
        fold_bn(net)
    res = export_onnx(net.eval(), tmp_path / "m.onnx", torch.randn(2, 1, 6, 6))
    assert res.folded_bn == 0
    assert res.max_abs_diff <= 1e-4
