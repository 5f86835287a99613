"""Model files: safetensors + JSON round trip, no pickle, clear errors for bad files."""

from __future__ import annotations

import json

import pytest
import torch

import prunus
from prunus.errors import ConfigError, CorruptFileError, PrunusError
from prunus.models import list_models
from prunus.models.info import get_info, update_info


@pytest.mark.parametrize("name", list_models())
def test_save_load_round_trip_gives_identical_logits(tmp_path, name):
    torch.manual_seed(0)
    model = prunus.create_model(name, in_channels=1, num_classes=10, width_mult=0.25).eval()
    # non-trivial BN statistics so the round trip covers buffers too
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
    prunus.save(model, tmp_path, input_shape=(1, 28, 28), metrics={"acc": 0.5})
    loaded = prunus.load(tmp_path)
    x = torch.randn(3, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))
    assert get_info(loaded).input_shape == (1, 28, 28)
    assert get_info(loaded).metrics == {"acc": 0.5}


def test_model_dir_contains_no_pickle(tmp_path):
    prunus.save(prunus.create_model("lenet300_100", in_channels=1), tmp_path, input_shape=(1, 28, 28))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.json", "model.safetensors"]
    header = json.loads((tmp_path / "model.json").read_text())
    assert header["arch"]["name"] == "lenet300_100"
    assert header["format"] == "prunus-model"


def test_truncated_weights_raise_corrupt_file_error(tmp_path):
    prunus.save(prunus.create_model("lenet5", in_channels=1), tmp_path, input_shape=(1, 28, 28))
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(CorruptFileError, match="truncated or corrupt"):
        prunus.load(tmp_path)


def test_corrupt_json_and_missing_dir_raise(tmp_path):
    prunus.save(prunus.create_model("lenet5", in_channels=1), tmp_path, input_shape=(1, 28, 28))
    (tmp_path / "model.json").write_text("{not json")
    with pytest.raises(CorruptFileError, match="not valid JSON"):
        prunus.load(tmp_path)
    with pytest.raises(PrunusError, match="not found"):
        prunus.load(tmp_path / "nope")


def test_weights_not_matching_architecture_raise(tmp_path):
    prunus.save(prunus.create_model("lenet5", in_channels=1), tmp_path, input_shape=(1, 28, 28))
    header = json.loads((tmp_path / "model.json").read_text())
    header["arch"]["kwargs"]["num_classes"] = 7
    (tmp_path / "model.json").write_text(json.dumps(header))
    with pytest.raises(CorruptFileError, match="does not match the architecture"):
        prunus.load(tmp_path)


def tiny_factory(width: int = 4) -> torch.nn.Module:
    """A user model built outside the registry (used through its import path)."""
    return torch.nn.Sequential(torch.nn.Conv2d(1, width, 3), torch.nn.Flatten(), torch.nn.Linear(width * 36, 3))


def test_user_factory_needs_explicit_opt_in(tmp_path, monkeypatch):
    import sys
    import types

    module = types.ModuleType("prunus_test_user_models")
    module.tiny_factory = tiny_factory
    monkeypatch.setitem(sys.modules, "prunus_test_user_models", module)
    model = tiny_factory()
    prunus.save(model, tmp_path, input_shape=(1, 8, 8), factory="prunus_test_user_models:tiny_factory")
    with pytest.raises(PrunusError, match="trust_factory=True"):
        prunus.load(tmp_path)
    loaded = prunus.load(tmp_path, trust_factory=True)
    x = torch.randn(2, 1, 8, 8)
    assert torch.equal(model(x), loaded(x))


def test_unregistered_model_without_factory_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="factory"):
        prunus.save(torch.nn.Linear(2, 2), tmp_path)


def test_model_files_get_normal_permissions_not_private_temp_ones(tmp_path):
    import os
    import stat

    prunus.save(prunus.create_model("lenet5", in_channels=1), tmp_path, input_shape=(1, 28, 28))
    umask = os.umask(0)
    os.umask(umask)
    for name in ("model.json", "model.safetensors"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o666 & ~umask
    assert not list(tmp_path.glob("*.tmp"))  # no temporary files left behind


def _round_trips(model, tmp_path, x) -> None:
    """save WITHOUT input_shape, load, same logits and shapes."""
    loaded = prunus.load(prunus.save(model, tmp_path / "m"))
    model.eval()
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    assert {k: v.shape for k, v in loaded.state_dict().items()} == {k: v.shape for k, v in model.state_dict().items()}


@pytest.mark.parametrize("name", list_models())
def test_pruned_model_saves_loadably_without_input_shape(tmp_path, name):
    torch.manual_seed(0)
    model = prunus.create_model(name, in_channels=1, num_classes=10, width_mult=0.25)
    assert not get_info(model).input_shape
    x = torch.randn(2, 1, 28, 28)
    prunus.prune(model, x[:1], remove_channels=0.4)
    assert get_info(model).input_shape == (1, 28, 28)  # recorded by the pruning, from the input it traced
    _round_trips(model, tmp_path, x)


@pytest.mark.parametrize("method", ["sfp", "fpgm", "mfp", "csgd"])
def test_every_method_fit_end_saves_loadably_without_input_shape(tmp_path, method):
    from prunus.data import DataConfig, build_loaders
    from prunus.engine import TrainConfig, Trainer
    from prunus.methods import create_method

    data = build_loaders(
        DataConfig(name="synthetic", num_samples=48, val_size=16, batch_size=16, image_size=12, channels=1)
    )
    torch.manual_seed(0)
    model = prunus.create_model("resnet20", in_channels=1, num_classes=data.num_classes, width_mult=0.25)
    args = {"width": 0.5} if method == "csgd" else {"rate": 0.4}
    Trainer(model, data, TrainConfig(epochs=1, checkpoint=False), [create_method(method, **args)], progress=False).fit()
    assert get_info(model).history
    _round_trips(model, tmp_path, torch.randn(2, 1, 12, 12))


def test_save_refuses_a_pruned_model_it_could_not_load_and_says_what_to_pass(tmp_path):
    model = prunus.create_model("resnet20", in_channels=1, width_mult=0.25)
    prunus.prune(model, torch.randn(1, 1, 28, 28), remove_channels=0.4)
    update_info(model, input_shape=())
    with pytest.raises(ConfigError, match=r"pruning history \(\d+ edits\) but no input shape.*pass input_shape"):
        prunus.save(model, tmp_path / "m")
    assert not (tmp_path / "m").exists()
    prunus.save(model, tmp_path / "m", input_shape=(1, 28, 28))  # with it, fine
    assert get_info(prunus.load(tmp_path / "m")).input_shape == (1, 28, 28)
