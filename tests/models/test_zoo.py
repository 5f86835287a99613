"""Every registered model, built small: shapes, gradients, rebuild, stem/classifier, Torch-Pruning, export."""

from __future__ import annotations

import inspect
import json
import warnings

import pytest
import torch
import torch_pruning as tp
from torch import nn

from prunus.errors import ConfigError
from prunus.models import create_model, get_model_entry, list_models
from prunus.models.info import get_info

MODELS = list_models()
SMALL = 0.25  # width_mult for the tests that do not need full-width models


def _build(name: str, in_channels: int = 1, size: int = 28, **kwargs) -> nn.Module:
    """Build `name` for square `size` inputs (LeNets need `input_size`)."""
    if "input_size" in inspect.signature(get_model_entry(name).factory).parameters:
        kwargs["input_size"] = size
    return create_model(name, in_channels=in_channels, **kwargs)


def _n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_registry_lists_every_family():
    assert set(MODELS) >= {"resnet20", "resnet32", "resnet56", "resnet110", "vgg16_bn", "mobilenetv2", "lenet5"}
    assert "lenet300_100" in MODELS
    assert list_models("resnet*") == ["resnet110", "resnet20", "resnet32", "resnet56"]
    assert list_models("nothing*") == []


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize(("in_channels", "size"), [(1, 28), (3, 32)])
def test_forward_shape(name, in_channels, size):
    model = _build(name, in_channels, size, num_classes=7, width_mult=SMALL).eval()
    with torch.no_grad():
        out = model(torch.randn(2, in_channels, size, size))
    assert out.shape == (2, 7)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", MODELS)
def test_backward_gives_finite_grads_for_every_param(name):
    torch.manual_seed(0)
    model = _build(name, width_mult=SMALL).train()
    loss = nn.functional.cross_entropy(model(torch.randn(2, 1, 28, 28)), torch.tensor([0, 1]))
    loss.backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None, pname
        assert torch.isfinite(p.grad).all(), pname


@pytest.mark.parametrize("name", MODELS)
def test_width_mult_shrinks_the_model(name):
    small, full = _build(name, width_mult=SMALL), _build(name)
    assert _n_params(small) < _n_params(full)
    assert get_info(small).arch["kwargs"]["width_mult"] == SMALL


@pytest.mark.parametrize("name", MODELS)
def test_prunus_arch_rebuilds_the_same_architecture(name):
    model = _build(name, num_classes=5, width_mult=0.5)
    arch = json.loads(json.dumps(get_info(model).arch))  # must survive model.json
    assert arch["name"] == name
    # Every factory argument is recorded, defaults included, so a later default change cannot alter the rebuild.
    assert set(arch["kwargs"]) == set(inspect.signature(get_model_entry(name).factory).parameters)
    rebuilt = create_model(arch["name"], **arch["kwargs"])
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert shapes == {k: tuple(v.shape) for k, v in rebuilt.state_dict().items()}
    assert get_info(rebuilt).arch == get_info(model).arch


@pytest.mark.parametrize("name", MODELS)
def test_stem_and_classifier_are_the_first_and_last_layers(name):
    model = _build(name, num_classes=6, width_mult=SMALL).eval()
    entry = get_model_entry(name)
    assert get_info(model).ignored == (entry.meta["stem"], entry.meta["classifier"])
    stem, classifier = (model.get_submodule(n) for n in get_info(model).ignored)
    assert isinstance(stem, (nn.Conv2d, nn.Linear))
    assert isinstance(classifier, nn.Linear)
    assert classifier.out_features == 6
    # The stem reads the input and the classifier writes the logits: check by execution order.
    order: list[nn.Module] = []
    handles = [
        m.register_forward_hook(lambda mod, i, o: order.append(mod))
        for m in model.modules()
        if isinstance(m, (nn.Conv2d, nn.Linear))
    ]
    with torch.no_grad():
        model(torch.randn(1, 1, 28, 28))
    for h in handles:
        h.remove()
    assert order[0] is stem
    assert order[-1] is classifier


@pytest.mark.parametrize("name", MODELS)
def test_torch_pruning_dependency_graph_builds_and_prunes(name):
    model = _build(name, width_mult=SMALL).eval()
    example = torch.randn(1, 1, 28, 28)
    graph = tp.DependencyGraph().build_dependency(model, example_inputs=example)
    ignored = [model.get_submodule(n) for n in get_info(model).ignored]
    pruned = 0
    for group in graph.get_all_groups(ignored_layers=ignored, root_module_types=[nn.Conv2d, nn.Linear]):
        dep = group[0].dep
        graph.get_pruning_group(dep.target.module, dep.handler, [0]).prune()
        pruned += 1
    assert pruned > 0
    with torch.no_grad():
        assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)
    assert model.get_submodule(get_info(model).ignored[1]).out_features == 10


def test_option_a_residual_stream_stays_out_of_torch_pruning_groups():
    # Torch-Pruning traces F.pad as element-wise, which couples the whole residual stream (all three
    # stages) to the stem. With the stem ignored (the default), only block-internal channels are
    # pruned, which is correct; the stream keeps its width.
    model = create_model("resnet20", in_channels=1, width_mult=SMALL, shortcut="A").eval()
    graph = tp.DependencyGraph().build_dependency(model, example_inputs=torch.randn(1, 1, 28, 28))
    ignored = [model.get_submodule(n) for n in get_info(model).ignored]
    names = {m: n for n, m in model.named_modules()}
    roots = []
    for group in graph.get_all_groups(ignored_layers=ignored, root_module_types=[nn.Conv2d]):
        dep = group[0].dep
        roots.append(names[dep.target.module])
        graph.get_pruning_group(dep.target.module, dep.handler, [0]).prune()
    assert roots == [f"layer{s}.{b}.conv1" for s in (1, 2, 3) for b in range(3)]
    assert [model.get_submodule(f"layer{s}.0.conv2").out_channels for s in (1, 2, 3)] == [4, 8, 16]
    with torch.no_grad():
        assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)


def test_factories_must_name_every_argument():
    from prunus.models import register_model

    def loose(num_classes=10, in_channels=3, width_mult=1.0, **kw):
        return nn.Linear(1, 1)

    with pytest.raises(TypeError, match="only named arguments with defaults"):
        register_model("loose_test_model", stem="x", classifier="y")(loose)
    assert "loose_test_model" not in list_models()


@pytest.mark.parametrize("name", MODELS)
def test_export_friendly(name):
    model = _build(name, width_mult=SMALL).eval()
    x = torch.randn(3, 1, 28, 28)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit is deprecated in recent torch; it still has to work
        expected = model(x)
        traced = torch.jit.trace(model, x[:1], check_trace=False)  # traced at batch 1, run at batch 3
        scripted = torch.jit.script(model)
        torch.testing.assert_close(traced(x), expected)
        torch.testing.assert_close(scripted(x), expected)


@pytest.mark.parametrize(
    ("name", "kwargs", "expected"),
    [
        ("lenet5", {"in_channels": 1}, 61_706),
        ("lenet300_100", {"in_channels": 1, "input_size": 28}, 266_610),
        ("resnet20", {"in_channels": 1}, 272_186),  # option B: 16/32/64, 1x1 conv+BN projections
        ("resnet20", {"in_channels": 1, "shortcut": "A"}, 269_434),
        ("resnet20", {"in_channels": 3, "shortcut": "A"}, 269_722),  # the paper's "0.27M"
        ("resnet56", {"in_channels": 3}, 855_770),
        ("mobilenetv2", {"in_channels": 3}, 2_236_682),
        ("vgg16_bn", {"in_channels": 3}, 14_724_042),
    ],
)
def test_exact_param_counts(name, kwargs, expected):
    assert _n_params(create_model(name, num_classes=10, **kwargs)) == expected


def test_resnet20_param_count_by_hand():
    # conv 3x3 weights (no bias) + BN (2 per channel); stage 1: 3 blocks 16->16, stages 2/3: one 2x block + 2 blocks.
    stem = 1 * 16 * 9 + 32
    stage1 = 3 * (2 * 16 * 16 * 9 + 2 * 32)
    stage2 = (16 * 32 * 9 + 32 * 32 * 9 + 2 * 64) + (16 * 32 + 64) + 2 * (2 * 32 * 32 * 9 + 2 * 64)
    stage3 = (32 * 64 * 9 + 64 * 64 * 9 + 2 * 128) + (32 * 64 + 128) + 2 * (2 * 64 * 64 * 9 + 2 * 128)
    fc = 64 * 10 + 10
    assert stem + stage1 + stage2 + stage3 + fc == 272_186
    assert _n_params(create_model("resnet20", num_classes=10, in_channels=1)) == 272_186


@pytest.mark.parametrize("name", list_models("resnet*"))
def test_option_a_shortcut_is_parameter_free(name):
    a = create_model(name, in_channels=1, width_mult=SMALL, shortcut="A")
    b = create_model(name, in_channels=1, width_mult=SMALL, shortcut="B")
    assert _n_params(a) < _n_params(b)
    # Exactly the two projection shortcuts (conv 1x1 + BN) are missing.
    w = [4, 8, 16]
    assert _n_params(b) - _n_params(a) == (w[0] * w[1] + 2 * w[1]) + (w[1] * w[2] + 2 * w[2])
    with torch.no_grad():
        assert a.eval()(torch.randn(2, 1, 28, 28)).shape == (2, 10)


def test_option_a_shortcut_pads_zero_channels_and_subsamples():
    block = create_model("resnet20", in_channels=1, shortcut="A").layer2[0]
    x = torch.randn(1, 16, 8, 8)
    y = block.shortcut(x)
    assert y.shape == (1, 32, 4, 4)
    assert torch.equal(y[:, 8:24], x[:, :, ::2, ::2])
    assert not y[:, :8].any()
    assert not y[:, 24:].any()


def test_none_kwargs_are_dropped_and_defaults_recorded():
    model = create_model("resnet20", num_classes=None, in_channels=1, width_mult=None)
    assert get_info(model).arch == {
        "name": "resnet20",
        "kwargs": {"num_classes": 10, "in_channels": 1, "width_mult": 1.0, "shortcut": "B"},
    }


def test_unknown_model_lists_the_choices():
    with pytest.raises(ConfigError, match=r"unknown model 'resnet99'.*resnet20.*vgg16_bn"):
        create_model("resnet99")


def test_unknown_argument_lists_the_accepted_ones():
    with pytest.raises(ConfigError, match=r"unknown argument\(s\): depth; accepted: .*shortcut"):
        create_model("resnet20", depth=20)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"num_classes": 1}, r"num_classes=1 is out of range"),
        ({"num_classes": 0}, r"num_classes=0 is out of range"),
        ({"num_classes": 2.5}, r"num_classes must be an integer"),
        ({"num_classes": True}, r"num_classes must be an integer"),
        ({"in_channels": 0}, r"in_channels=0 is out of range"),
        ({"width_mult": 0}, r"width_mult=0 is out of range"),
        ({"width_mult": -0.5}, r"width_mult=-0.5 is out of range"),
        ({"width_mult": "wide"}, r"width_mult must be a number"),
        ({"shortcut": "C"}, r"shortcut='C' is not valid; choose one of: A, B"),
    ],
)
def test_bad_arguments_raise(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        create_model("resnet20", **kwargs)


def test_lenet_input_size_is_checked():
    with pytest.raises(ConfigError, match=r"input_size=8 is out of range"):
        create_model("lenet5", input_size=8)
    with pytest.raises(ConfigError, match=r"input_size must be an integer"):
        create_model("lenet300_100", input_size=28.0)
