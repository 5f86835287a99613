"""count(): hand-computed MACs, the exact relation to Torch-Pruning's counter, mode restore, CLI."""

from __future__ import annotations

import inspect

import pytest
import torch
import torch_pruning as tp
from torch import nn

import prunus.cli
from prunus.errors import ConfigError
from prunus.measure.counting import Counts, LayerCount, count
from prunus.models import create_model, get_model_entry, list_models


def _tiny() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1),  # "0"
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(4 * 4 * 4, 5),  # "5"
    )


def test_conv_and_linear_by_hand():
    c = count(_tiny(), (2, 8, 8))
    conv = 8 * 8 * 4 * 2 * 3 * 3  # out_h * out_w * out_ch * in_ch * k * k, bias not counted
    linear = 64 * 5
    assert c.layers == {"0": LayerCount("Conv2d", conv, 72 + 4), "5": LayerCount("Linear", linear, 320 + 5)}
    assert c.macs == conv + linear == 4928
    assert c.params == 76 + 8 + 325  # BN's weight and bias are params too


def test_depthwise_and_grouped_convs_by_hand():
    net = nn.Sequential(
        nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False),  # depthwise: one 3x3 filter per channel
        nn.Conv2d(8, 16, 3, stride=2, padding=1, groups=2, bias=False),  # 2 groups of 4 input channels
    )
    c = count(net, (8, 10, 10))
    assert c.layers["0"].macs == 10 * 10 * 8 * 1 * 9
    assert c.layers["1"].macs == 5 * 5 * 16 * 4 * 9
    assert c.macs == 7200 + 14400
    assert c.params == 8 * 9 + 16 * 4 * 9


def test_linear_on_extra_dims_and_module_reuse_count_every_row_and_call():
    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(6, 3)

        def forward(self, x):
            return self.fc(self.fc(x)[..., :3].repeat(1, 1, 1, 2))

    c = count(Twice(), (1, 4, 6))  # 4 rows of 6 features, the layer runs twice
    assert c.layers["fc"].macs == 2 * 4 * 6 * 3


def test_input_shape_with_or_without_batch_gives_the_same_counts():
    model = _tiny()
    assert count(model, (2, 8, 8)) == count(model, (1, 2, 8, 8))
    assert count(model, [2, 8, 8]) == count(model, torch.Size([2, 8, 8]))


@pytest.mark.parametrize(
    ("shape", "match"),
    [((4, 2, 8, 8), r"\(C, H, W\) or \(1, C, H, W\)"), ((8, 8), r"\(C, H, W\)"), ((2, 0, 8), "positive integers")],
)
def test_bad_input_shapes_raise(shape, match):
    with pytest.raises(ConfigError, match=match):
        count(_tiny(), shape)


def test_modes_buffers_and_grads_are_left_alone():
    model = _tiny().train()
    model[1].eval()  # a mixed state must come back exactly, not as a blanket train()
    bn = model[1]
    before = {k: v.clone() for k, v in bn.state_dict().items()}
    count(model, (2, 8, 8))
    assert model.training
    assert not bn.training
    assert model[0].training
    for k, v in bn.state_dict().items():
        assert torch.equal(v, before[k]), k  # eval mode during counting: running stats untouched
    assert all(p.grad is None for p in model.parameters())
    assert all(not m._forward_hooks for m in model.modules())


def test_counts_is_frozen():
    c = count(_tiny(), (2, 8, 8))
    assert isinstance(c, Counts)
    with pytest.raises(AttributeError):
        c.macs = 0  # type: ignore[misc]


def _small(name: str) -> nn.Module:
    kwargs = {"in_channels": 1, "width_mult": 0.5}
    if "input_size" in inspect.signature(get_model_entry(name).factory).parameters:
        kwargs["input_size"] = 28
    return create_model(name, **kwargs)


@pytest.mark.parametrize("name", list_models())
def test_matches_torch_pruning_exactly(name):
    """Torch-Pruning's count = ours + bias adds + 2/elem affine BN + 1/elem ReLU(6) + 1/input elem pooling.

    Per Conv2d/Linear layer it counts our MACs plus one add per output element when the layer has a
    bias; its params equal ours (all parameters). Checked exactly, on every registered model.
    """
    model = _small(name).eval()
    ours = count(model, (1, 28, 28))
    assert ours.params == sum(p.numel() for p in model.parameters())

    extra = {"bn": 0, "act": 0, "pool": 0}
    out_elems: dict[nn.Module, int] = {}

    def hook(m, inputs, output):
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            out_elems[m] = out_elems.get(m, 0) + output.numel()
        elif isinstance(m, nn.BatchNorm2d):
            extra["bn"] += 2 * inputs[0].numel()  # scale and shift per element (affine)
        elif isinstance(m, (nn.ReLU, nn.ReLU6)):
            extra["act"] += output.numel()
        elif isinstance(m, (nn.MaxPool2d, nn.AdaptiveAvgPool2d)):
            extra["pool"] += inputs[0].numel()

    handles = [m.register_forward_hook(hook) for m in model.modules()]
    with torch.no_grad():
        model(torch.zeros(1, 1, 28, 28))
    for h in handles:
        h.remove()
    bias_adds = {m: n if m.bias is not None else 0 for m, n in out_elems.items()}

    tp_ops, tp_params, tp_layer_ops, _ = tp.utils.count_ops_and_params(
        model, torch.zeros(1, 1, 28, 28), layer_wise=True
    )
    assert tp_params == ours.params
    assert tp_ops == ours.macs + sum(bias_adds.values()) + sum(extra.values())
    for lname, layer in ours.layers.items():
        module = model.get_submodule(lname)
        assert tp_layer_ops[module] == layer.macs + bias_adds[module], lname


def test_lenet300_100_relation_by_hand():
    # No BN, no pooling: Torch-Pruning adds the 410 bias adds and the 400 ReLU outputs to our MACs.
    model = create_model("lenet300_100", in_channels=1)
    ours = count(model, (1, 28, 28))
    assert ours.macs == 784 * 300 + 300 * 100 + 100 * 10 == 266_200
    tp_ops, tp_params = tp.utils.count_ops_and_params(model, torch.zeros(1, 1, 28, 28))
    assert tp_ops == ours.macs + (300 + 100 + 10) + (300 + 100)
    assert tp_params == ours.params == 266_610


def test_resnet56_matches_the_literature():
    # Option A on 3x32x32 is the "125.49M FLOPs" ResNet-56 of the SFP/FPGM papers; option B adds the two
    # 1x1 projections (16->32 on a 16x16 map and 32->64 on an 8x8 map: 131,072 MACs each).
    option_a = count(create_model("resnet56", in_channels=3, shortcut="A"), (3, 32, 32))
    option_b = count(create_model("resnet56", in_channels=3, shortcut="B"), (3, 32, 32))
    assert option_a.macs == 125_485_696
    assert option_b.macs == option_a.macs + 2 * 131_072
    assert option_b.layers["layer2.0.shortcut.0"].macs == 16 * 16 * 32 * 16


@pytest.fixture
def only_models_command(monkeypatch):
    # Isolate from other sub-commands, which may not import while the tree is being built.
    monkeypatch.setattr(prunus.cli, "COMMANDS", ("models",))
    monkeypatch.setenv("COLUMNS", "200")  # rich: one line per model, names never wrapped


def test_cli_lists_every_model(only_models_command, capsys):
    assert prunus.cli.main(["models"]) == 0
    out = capsys.readouterr().out
    for name in list_models():
        assert name in out
    assert "61.71K" in out  # lenet5 params for the default 1,28,28 input


def test_cli_pattern_and_errors(only_models_command, capsys):
    assert prunus.cli.main(["models", "resnet2*", "--input-shape", "3,32,32", "--width-mult", "0.5"]) == 0
    out = capsys.readouterr().out
    assert "resnet20" in out
    assert "vgg16_bn" not in out
    assert prunus.cli.main(["models", "nope*"]) == 2
    assert "no model matches 'nope*'" in capsys.readouterr().err
