"""Model metadata in one typed ModelInfo: what create_model/load/structure record, and re-saving loaded models."""

from __future__ import annotations

import copy
import dataclasses
import json
import sys
import types

import pytest
import torch
from torch import nn

import prunus
from prunus.models.info import ModelInfo, example_input, get_info, set_info, update_info
from prunus.structure import build_groups, remove_


def _prunus_attrs(model: nn.Module) -> list[str]:
    return sorted(k for k in vars(model) if k.startswith("prunus_"))


def test_create_model_attaches_one_typed_object():
    model = prunus.create_model("resnet20", in_channels=1, width_mult=0.25)
    assert _prunus_attrs(model) == ["prunus_info"]
    info = get_info(model)
    assert (info.stem, info.classifier, info.ignored) == ("conv1", "fc", ("conv1", "fc"))
    assert info.arch["name"] == "resnet20"
    assert (info.input_shape, info.history, info.metrics) == ((), (), {})
    with pytest.raises(dataclasses.FrozenInstanceError):
        info.stem = "layer1.0.conv1"


def test_structural_edits_append_to_history_and_copies_are_independent():
    model = prunus.create_model("resnet20", in_channels=1, width_mult=0.25)
    twin = copy.deepcopy(model)
    x = example_input((1, 16, 16))
    group = next(g for g in build_groups(twin, x) if g.prunable)
    remove_(twin, group, [0])
    assert [e["idxs"] for e in get_info(twin).history] == [[0]]
    assert get_info(model).history == ()
    assert get_info(twin).arch == get_info(model).arch  # the rest of the facts survive the edit
    assert _prunus_attrs(twin) == ["prunus_info"]


def test_load_restores_every_fact_and_save_load_is_a_fixed_point(tmp_path):
    model = prunus.create_model("lenet5", in_channels=1)
    pruned, _ = prunus.prune(model, example_input((1, 28, 28)), remove_channels=0.5)
    prunus.save(pruned, tmp_path / "a", input_shape=(1, 28, 28), metrics={"acc": 0.25})
    loaded = prunus.load(tmp_path / "a")
    info = get_info(loaded)
    assert info.input_shape == (1, 28, 28)
    assert info.metrics == {"acc": 0.25}
    assert list(info.history) == list(get_info(pruned).history)
    assert info.ignored == ("conv1", "fc3")
    prunus.save(loaded, tmp_path / "b")  # input shape, arch and history come from the ModelInfo
    a, b = (json.loads((tmp_path / d / "model.json").read_text()) for d in "ab")
    assert {k: v for k, v in a.items() if k != "metrics"} == {k: v for k, v in b.items() if k != "metrics"}


def _factory(width: int = 4) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, width, 3),
        nn.BatchNorm2d(width),
        nn.ReLU(),
        nn.Conv2d(width, width, 3),
        nn.Flatten(),
        nn.Linear(width * 16, 3),
    )


@pytest.fixture
def user_module(monkeypatch):
    module = types.ModuleType("prunus_test_info_models")
    module.factory = _factory
    monkeypatch.setitem(sys.modules, "prunus_test_info_models", module)
    return "prunus_test_info_models:factory"


def test_user_factory_model_can_be_saved_again_after_load(tmp_path, user_module):
    torch.manual_seed(0)
    model = _factory(width=6)
    prunus.save(model, tmp_path / "a", input_shape=(1, 8, 8), factory=user_module, factory_kwargs={"width": 6})
    loaded = prunus.load(tmp_path / "a", trust_factory=True)
    assert get_info(loaded).arch == {"factory": user_module, "kwargs": {"width": 6}}
    pruned, _ = prunus.prune(loaded, example_input((1, 8, 8)), remove_channels=0.5, ignored_layers=["5"])
    prunus.save(pruned, tmp_path / "b")  # no factory argument needed any more
    again = prunus.load(tmp_path / "b", trust_factory=True)
    x = torch.randn(2, 1, 8, 8)
    with torch.no_grad():
        assert torch.equal(pruned.eval()(x), again(x))
    assert again[0].out_channels < 6


def test_cli_prune_keeps_the_factory_of_a_user_model(tmp_path, user_module, capsys):
    from prunus.cli import main

    prunus.save(_factory(), tmp_path / "a", input_shape=(1, 8, 8), factory=user_module)
    rc = main(
        ["prune", str(tmp_path / "a"), "--out", str(tmp_path / "b"), "--remove-channels", "0.5", "--trust-factory"]
    )
    capsys.readouterr()
    assert rc == 0
    from prunus.formats.run_dir import resolve_model_dir

    header = json.loads((resolve_model_dir(tmp_path / "b") / "model.json").read_text())
    assert header["arch"] == {"factory": user_module, "kwargs": {}}
    assert header["history"]


def test_load_does_not_touch_the_global_rng(tmp_path):
    model = prunus.create_model("resnet20", in_channels=1, width_mult=0.25)
    pruned, _ = prunus.prune(model, example_input((1, 16, 16)), remove_channels=0.5)
    prunus.save(pruned, tmp_path, input_shape=(1, 16, 16))
    state = torch.get_rng_state()
    prunus.load(tmp_path)  # replays the pruning history on a traced example input
    assert torch.equal(torch.get_rng_state(), state)


def test_legacy_attributes_are_still_read_with_a_warning():
    class Legacy(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem = nn.Conv2d(1, 4, 3)
            self.mid = nn.Conv2d(4, 4, 3)
            self.fc = nn.Linear(4, 2)
            self.prunus_ignored = ("stem", "fc")
            self.prunus_input_shape = (1, 8, 8)

        def forward(self, x):
            return self.fc(self.mid(self.stem(x)).mean((2, 3)))

    model = Legacy()
    with pytest.warns(DeprecationWarning, match="prunus_ignored, prunus_input_shape"):
        info = get_info(model)
    assert (info.ignored, info.input_shape) == (("stem", "fc"), (1, 8, 8))
    set_info(model, ModelInfo(stem="mid", classifier="fc"))  # an attached ModelInfo wins
    assert get_info(model).ignored == ("mid", "fc")


def test_set_info_refuses_other_types():
    with pytest.raises(TypeError, match="expected a ModelInfo"):
        set_info(nn.Linear(2, 2), {"stem": "x"})


def test_example_input_is_zeros_in_the_models_dtype_and_device():
    model = nn.Linear(3, 2).double()
    x = example_input((1, 2, 3), model)
    assert (x.shape, x.dtype, float(x.abs().sum())) == ((1, 1, 2, 3), torch.float64, 0.0)
    with pytest.raises(prunus.errors.ConfigError, match=r"\(C, H, W\) or \(1, C, H, W\)"):
        example_input((2, 1, 2, 3))
    with pytest.raises(prunus.errors.ConfigError, match="positive integers"):
        example_input((1, 0, 3))


def test_update_info_replaces_only_the_given_fields():
    model = prunus.create_model("lenet5", in_channels=1)
    before = get_info(model)
    after = update_info(model, input_shape=[1, 28, 28])
    assert after.input_shape == (1, 28, 28)
    assert dataclasses.replace(after, input_shape=()) == before
