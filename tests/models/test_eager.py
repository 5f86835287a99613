"""A TorchScript module is refused in one line wherever prunus must see its layers; a tensor is not a shape.

A traced module's hooks never fire: `prune` used to divide by zero on the 0 MACs it found, `count`
returned 0 MACs, `compress` divided by zero. Export takes it as it is.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

import prunus
from prunus.compress import CompressConfig, compress
from prunus.deploy.export import export_onnx
from prunus.errors import ConfigError
from prunus.structure import build_groups

X = torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(0))


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4)).eval()  # fmt: skip


def _compiled(how: str) -> nn.Module:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return torch.jit.script(_net()) if how == "script" else torch.jit.trace(_net(), X[:1])


@pytest.mark.parametrize("how", ["script", "trace"])
@pytest.mark.parametrize(
    ("what", "call"),
    [
        ("tracing its channels", lambda m: prunus.prune(m, X[:1], remove_channels=0.5)),
        ("tracing its channels", lambda m: build_groups(m, X[:1])),
        ("count", lambda m: prunus.count(m, (3, 8, 8))),
        ("compress", lambda m: compress(m, X, CompressConfig(sparsity=0.5, bits=6, finetune_steps=0))),
    ],
)
def test_a_torchscript_module_is_refused_in_one_line(how, what, call):
    model = _compiled(how)
    with pytest.raises(ConfigError, match=rf"^{what}.* needs the nn.Module itself, not a TorchScript module") as info:
        call(model)
    assert "\n" not in str(info.value)


def test_a_torchscript_module_still_exports(tmp_path):
    res = export_onnx(_compiled("trace"), tmp_path / "m.onnx", X[:1])
    assert res.max_abs_diff <= 1e-4


def test_the_eager_model_it_was_made_from_prunes_and_counts():
    assert prunus.count(_net(), (3, 8, 8)).macs == 3 * 8 * 9 * 64 + 8 * 8 * 9 * 64 + 8 * 4
    _, report = prunus.prune(_net(), X[:1], remove_channels=0.5)
    assert report.achieved_macs_ratio < 1


def test_a_tensor_given_as_input_shape_says_what_to_pass():
    with pytest.raises(ConfigError, match=r"not a tensor \(got a tensor of shape \(1, 3, 8, 8\)\); pass a tensor as "
                       r"example_inputs=") as info:  # fmt: skip
        prunus.count(_net(), X[:1])
    assert "\n" not in str(info.value)
    assert prunus.count(_net(), example_inputs=X[:1]).macs == prunus.count(_net(), (3, 8, 8)).macs


def test_a_data_parallel_model_saves_and_exports_as_the_model_inside(tmp_path):
    """DataParallel: save said "not built by prunus.create_model" of a zoo model, torch.onnx refused it."""
    net = prunus.create_model("lenet5", in_channels=1).eval()
    wrapped = nn.DataParallel(net)
    x = torch.randn(2, 1, 28, 28)
    prunus.save(wrapped, tmp_path / "m", input_shape=(1, 28, 28))
    back = prunus.load(tmp_path / "m")
    assert type(back) is type(net)
    with torch.no_grad():
        assert torch.equal(back(x), net(x))
    res = export_onnx(wrapped, tmp_path / "m.onnx", x[:1])
    assert res.max_abs_diff <= 1e-4
