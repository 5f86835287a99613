"""Model files: safetensors + JSON round trip, no pickle, clear errors for bad files."""

from __future__ import annotations

import json

import pytest
import torch

import prunus
from prunus.errors import ConfigError, CorruptFileError, PrunusError
from prunus.model_info import get_info
from prunus.models import list_models


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
