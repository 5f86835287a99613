"""Resume obeys: what it may change takes effect, anything else is refused before a byte is written.

Also: a run whose outputs go non-finite fails without saving a model; the atomic directory
writer keeps a prune's fine-tuning run and refuses foreign directories; stale temporaries of dead
writers are removed and live ones are not.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

import prunus
from prunus._io.atomic import atomic_dir, clean_stale_temps
from prunus.cli import main
from prunus.engine.checkpoint import load_checkpoint
from prunus.errors import ConfigError, CorruptFileError
from prunus.formats.limits import LIMITS, build_bounded

TRAIN = ["--model", "lenet5", "--width-mult", "0.25", "--data", "synthetic", "--subset", "64", "--val-size", "32"]
TRAIN += ["--batch-size", "32", "--lr", "0.05", "--no-progress"]


@pytest.fixture(scope="module")
def two_epochs(tmp_path_factory):
    run = tmp_path_factory.mktemp("resume") / "run"
    assert main(["train", *TRAIN, "--epochs", "2", "--out", str(run)]) == 0
    return run


def _copy(run, tmp_path):
    import shutil

    shutil.copytree(run, tmp_path / "run")
    return tmp_path / "run"


def test_new_lr_on_resume_takes_effect_and_is_recorded(two_epochs, tmp_path, capsys):
    run = _copy(two_epochs, tmp_path)
    assert main(["train", "--resume", "--out", str(run), "--epochs", "3", "--lr", "0.01", "--no-progress"]) == 0
    said = capsys.readouterr().out  # what the resume changes is said before it is done
    assert "resuming after epoch 2: epochs 2 -> 3 (the lr schedule is recomputed for the new total)" in said
    assert "lr 0.05 -> 0.01 (the new peak lr applies from the next step)" in said
    state = load_checkpoint(run / "checkpoint.pt")
    assert state["epoch"] == 3
    assert {g["base_lr"] for g in state["optimizer"]["param_groups"]} == {0.01}
    assert state["config"]["lr"] == 0.01
    assert "lr: 0.01" in (run / "config.yaml").read_text()
    # the lr the third epoch actually used is on the new peak's cosine curve, not the old one
    import json

    last = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    assert 0 < last["lr"] <= 0.01


def test_resume_may_change_the_eval_batch_and_data_location_but_not_the_data(two_epochs, tmp_path):
    from prunus.config import load_yaml
    from prunus.training import train_run
    from prunus.training.config import RunConfig

    run = _copy(two_epochs, tmp_path)
    cfg = RunConfig.from_dict(load_yaml(run / "config.yaml")).to_dict()
    assert cfg["data"]["eval_batch_size"] != 7
    cfg["data"]["eval_batch_size"] = 7
    cfg["data"]["download"] = not cfg["data"]["download"]
    cfg["train"]["epochs"] = 3
    train_run(RunConfig.from_dict(cfg), run, resume=True, progress=False)
    assert load_checkpoint(run / "checkpoint.pt")["epoch"] == 3
    assert load_yaml(run / "config.yaml")["data"]["eval_batch_size"] == 7  # took effect and is recorded
    cfg["data"]["batch_size"] = 16
    cfg["train"]["epochs"] = 4
    with pytest.raises(ConfigError, match="cannot change data.batch_size: 32 -> 16; .* and data.download"):
        train_run(RunConfig.from_dict(cfg), run, resume=True, progress=False)


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--weight-decay", "0.01"], "cannot change weight_decay"),
        (["--optimizer", "adamw"], "cannot change optimizer"),
        (["--seed", "3"], "cannot change seed"),
        (["--batch-size", "16"], "cannot change data.batch_size"),
        (["--model", "lenet300_100"], "cannot change model.name"),
        (["--method", "sfp"], "cannot change methods"),
        (["--epochs", "1"], "fewer than the 2 epochs already done"),
    ],
)
def test_refused_resume_writes_nothing(two_epochs, tmp_path, capsys, flags, message):
    run = _copy(two_epochs, tmp_path)
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    assert main(["train", "--resume", "--out", str(run), *flags]) == 2
    assert message in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before  # config.yaml included
    # and a plain resume still works afterwards
    assert main(["train", "--resume", "--out", str(run), "--no-progress"]) == 0


def test_outputs_going_nan_fail_the_run_without_saving_a_model(tmp_path, capsys):
    # one step at lr 1e30: the training loss of that step was finite, every output after it is NaN
    out = tmp_path / "run"
    argv = ["train", *TRAIN, "--subset", "32", "--val-size", "32", "--lr", "1e30", "--epochs", "1", "--out", str(out)]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("prunus: error: ")
    assert "not finite" in err or "loss became" in err
    assert len(err.splitlines()) == 1
    assert not (out / "model").exists()
    assert not (out / "summary.json").exists()


def test_atomic_dir_keeps_the_finetune_run_and_save_refuses_foreign_directories(tmp_path):
    model = prunus.create_model("lenet5", in_channels=1, width_mult=0.25)
    target = prunus.save(model, tmp_path / "m", input_shape=(1, 28, 28))
    (target / "finetune").mkdir()
    (target / "finetune" / "metrics.jsonl").write_text("{}\n")
    (target / "model.onnx").write_bytes(b"old export")
    prunus.save(model, target, input_shape=(1, 28, 28))
    assert sorted(p.name for p in target.iterdir()) == ["finetune", "model.json", "model.safetensors"]
    assert (target / "finetune" / "metrics.jsonl").read_text() == "{}\n"
    (tmp_path / "user").mkdir()
    (tmp_path / "user" / "thesis.tex").write_text("precious")
    with pytest.raises(ConfigError, match="not part of a prunus model"):
        prunus.save(model, tmp_path / "user", input_shape=(1, 28, 28))
    assert (tmp_path / "user" / "thesis.tex").read_text() == "precious"
    with atomic_dir(tmp_path / "d") as tmp:
        (tmp / "a").write_text("1")
    assert (tmp_path / "d" / "a").read_text() == "1"


def test_stale_temporaries_of_dead_writers_are_removed_and_live_ones_kept(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    (tmp_path / f".model.{dead_pid}.abc.tmp").mkdir()
    (tmp_path / f".model.{os.getpid()}.def.tmp").write_text("mine, in progress")
    (tmp_path / ".model.notapid.tmp").write_text("not ours to judge")
    removed = clean_stale_temps(tmp_path / "model")
    assert [p.name for p in removed] == [f".model.{dead_pid}.abc.tmp"]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([f".model.{os.getpid()}.def.tmp", ".model.notapid.tmp"])


def test_limits_are_checked_on_the_meta_device_before_allocating():
    from prunus.models import create_model

    params = build_bounded(lambda: create_model("vgg16_bn", in_channels=3), (3, 32, 32))
    assert params > 14_000_000
    with pytest.raises(CorruptFileError, match="parameters; the limit is"):
        build_bounded(lambda: create_model("vgg16_bn", in_channels=3, width_mult=64.0), (3, 32, 32))
    with pytest.raises(CorruptFileError, match="activation elements"):
        build_bounded(lambda: create_model("resnet20", in_channels=3), (3, 2048, 2048))
    assert LIMITS["input_elements"] >= 3 * 224 * 224


def test_int8_weights_are_refused_not_cast(tmp_path):
    from safetensors.torch import load_file, save_file

    d = prunus.save(
        prunus.create_model("lenet5", in_channels=1, width_mult=0.25), tmp_path / "m", input_shape=(1, 28, 28)
    )
    state = load_file(str(d / "model.safetensors"))
    state["fc3.weight"] = state["fc3.weight"].to(torch.int8)
    save_file(state, str(d / "model.safetensors"))
    with pytest.raises(CorruptFileError, match="'fc3.weight' is int8, the model expects float32; refusing to cast"):
        prunus.load(d)
