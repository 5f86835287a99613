"""One header checker for model.json, checkpoint.pt and .prn: hostile headers give FormatError, never a traceback."""

from __future__ import annotations

import json

import pytest
import torch

import prunus
from prunus.cli import main
from prunus.engine.checkpoint import load_checkpoint, save_checkpoint
from prunus.errors import CorruptFileError, FormatError, PrunusError
from prunus.formats.header import KINDS, check_header, make_header

GOOD = {"arch": {"name": "lenet5", "kwargs": {}}}

# (change to a valid header, message the FormatError must carry)
HOSTILE = [
    ({"format": "prunus-checkpoint"}, "is a prunus-checkpoint file, not a prunus-model file"),
    ({"format": "evil.module:Class"}, "not a prunus prunus-model file"),
    ({"format": None}, "not a prunus prunus-model file"),
    ({"format": ["prunus-model"]}, "not a prunus prunus-model file"),
    ({"format_version": 2}, "newer prunus .prunus-model version 2; this prunus reads up to 1"),
    ({"format_version": 10**30}, "newer prunus"),
    ({"format_version": "1"}, "format_version must be a positive integer, got '1'"),
    ({"format_version": True}, "format_version must be a positive integer, got True"),
    ({"format_version": 1.0}, "format_version must be a positive integer"),
    ({"format_version": 0}, "format_version must be a positive integer"),
    ({"format_version": None}, "format_version must be a positive integer"),
    ({"prunus_version": 3}, "field 'prunus_version' must be a string, got int"),
    ({"arch": "lenet5"}, "field 'arch' must be a dict, got str"),
    ({"arch": None}, "lacks the 'arch' field"),
    ({"arch": [1, 2]}, "field 'arch' must be a dict, got list"),
]


@pytest.mark.parametrize(("change", "message"), HOSTILE)
def test_check_header_refuses_hostile_headers(change, message):
    header = {**make_header("prunus-model", GOOD), **change}
    with pytest.raises(FormatError, match=message):
        check_header(header, "prunus-model", fields={"arch": dict}, where="x.json")


@pytest.mark.parametrize("obj", [None, 3, "prunus-model", [1], b"x"])
def test_check_header_refuses_non_dicts(obj):
    with pytest.raises(FormatError, match="expected a header dict"):
        check_header(obj, "prunus-model")


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_every_kind_round_trips_through_json(kind):
    header = make_header(kind, {"n": 3, "x": 0.5})
    back = check_header(json.loads(json.dumps(header)), kind, fields={"n": int, "x": float})
    assert back == header
    assert back["format_version"] == KINDS[kind]
    assert back["prunus_version"] == prunus.__version__


def test_int_accepted_for_float_but_bool_is_not_an_int():
    h = make_header("prunus-prn", {"x": 1, "n": True})
    assert check_header(h, "prunus-prn", fields={"x": float})["x"] == 1
    with pytest.raises(FormatError, match="field 'n' must be an integer, got bool"):
        check_header(h, "prunus-prn", fields={"n": int})


def test_caller_may_read_only_older_versions():
    h = make_header("prunus-prn", version=1)
    assert check_header(h, "prunus-prn", max_version=1)["format_version"] == 1
    with pytest.raises(FormatError, match="reads up to 0"):
        check_header(h, "prunus-prn", max_version=0)


def test_unknown_kind_or_clashing_data_is_a_bug():
    with pytest.raises(ValueError, match="unknown file kind 'nope'; known: prunus-checkpoint"):
        make_header("nope")
    with pytest.raises(ValueError, match="must not set format_version"):
        make_header("prunus-model", {"format_version": 9})


def test_format_error_is_a_corrupt_file_error():
    assert issubclass(FormatError, CorruptFileError)
    assert issubclass(FormatError, PrunusError)


# --- through the real files -------------------------------------------------------------------


@pytest.fixture
def model_dir(tmp_path):
    prunus.save(prunus.create_model("lenet5", in_channels=1), tmp_path, input_shape=(1, 28, 28))
    return tmp_path


MODEL_JSON_HOSTILE = [
    *HOSTILE,
    ({"input_shape": "1,28,28"}, "field 'input_shape' must be a list or a dict, got str"),
    ({"input_shape": [1, "28", 28]}, r"input_shape must be \[C, H, W\] of positive integers"),
    ({"input_shape": [[1, 28, 28], 3]}, r"input_shape must be \[C, H, W\]"),  # one sample, or a list of samples
    ({"input_shape": {"x": [0, 28]}}, r"input_shape must be \[C, H, W\]"),
    ({"input_shape": [1, -28, 28]}, r"input_shape must be \[C, H, W\]"),
    ({"history": {"op": "remove"}}, "field 'history' must be a list, got dict"),
    ({"metrics": [0.9]}, "field 'metrics' must be a dict, got list"),
    ({"extra": "x"}, "field 'extra' must be a dict, got str"),
]


@pytest.mark.parametrize(("change", "message"), MODEL_JSON_HOSTILE)
def test_model_json_hostile_headers(model_dir, change, message, capsys):
    path = model_dir / "model.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **change}))
    with pytest.raises(FormatError, match=message):
        prunus.load(model_dir)
    # the CLI: one line, exit 2, no traceback
    assert main(["info", str(model_dir)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("prunus: error: ")
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_model_json_header_fields(model_dir):
    header = json.loads((model_dir / "model.json").read_text())
    assert (header["format"], header["format_version"], header["prunus_version"]) == (
        "prunus-model",
        1,
        prunus.__version__,
    )


CHECKPOINT_HOSTILE = [
    ({"format": "prunus-model"}, "is a prunus-model file, not a prunus-checkpoint file"),
    ({"format": "nope"}, "not a prunus prunus-checkpoint file"),
    ({"format_version": 2}, "newer prunus .prunus-checkpoint version 2"),
    ({"format_version": "1"}, "format_version must be a positive integer"),
    ({"epoch": "3"}, "field 'epoch' must be an integer, got str"),
    ({"epoch": 2.5}, "field 'epoch' must be an integer, got float"),
    ({"global_step": True}, "field 'global_step' must be an integer, got bool"),
    ({"model": [1]}, "field 'model' must be a dict, got list"),
    ({"config": "lr=1"}, "field 'config' must be a dict, got str"),
]


@pytest.mark.parametrize(("change", "message"), CHECKPOINT_HOSTILE)
def test_checkpoint_hostile_headers(tmp_path, change, message):
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, {"epoch": 3, "global_step": 30})
    state = {**torch.load(path, weights_only=True), **change}
    torch.save(state, path)
    with pytest.raises(FormatError, match=message):
        load_checkpoint(path)


def test_checkpoint_without_prunus_version_still_loads(tmp_path):
    # files written before the shared header recorded the prunus version
    path = tmp_path / "checkpoint.pt"
    torch.save({"format": "prunus-checkpoint", "format_version": 1, "epoch": 1}, path)
    assert load_checkpoint(path)["epoch"] == 1
    save_checkpoint(path, {"epoch": 2})
    assert load_checkpoint(path)["prunus_version"] == prunus.__version__
