"""A crash loses nothing: SIGKILL at chosen points, then check the files and the resumed result.

The kill points are `prunus._io.atomic.crash_point` labels, enabled in a subprocess through
$PRUNUS_CRASH_AT="LABEL#N" (the N-th time the label is reached, the process SIGKILLs itself):

- model directory (`prunus.save` over an existing model): killed after the new directory is
  complete but before the swap, and right after the swap. X must hold the old model or the new
  one, byte for byte, and never a mix; the leftover temporary directory is removed by the next write.
- metrics.jsonl: killed after epoch 2's checkpoint but before its record, and while its record
  is being written. `--resume` must end with weights bit-identical to an uninterrupted run and a
  log with exactly one record per epoch, equal to the uninterrupted run's.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import prunus
from prunus.cli import main

TRAIN = ["--model", "lenet5", "--width-mult", "0.25", "--data", "synthetic", "--subset", "96", "--val-size", "32"]
TRAIN += ["--batch-size", "32", "--epochs", "3", "--lr", "0.05", "--threads", "1", "--no-progress"]


def _cli(args: list[str], crash_at: str | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", PRUNUS_NO_DOWNLOAD="1")
    env.pop("PRUNUS_CRASH_AT", None)
    if crash_at:
        env["PRUNUS_CRASH_AT"] = crash_at
    return subprocess.run([sys.executable, "-m", "prunus", *args], env=env, capture_output=True, text=True, timeout=600)


# save the pruned model `new` over the model directory `out` (the write the kill points are in)
SAVE = "import sys, prunus; prunus.save(prunus.load(sys.argv[1]), sys.argv[2])"


def _save(src: Path, out: Path, crash_at: str | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env.pop("PRUNUS_CRASH_AT", None)
    if crash_at:
        env["PRUNUS_CRASH_AT"] = crash_at
    return subprocess.run([sys.executable, "-c", SAVE, str(src), str(out)], env=env, capture_output=True, text=True,
                          timeout=600)  # fmt: skip


def _files(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir()) if p.is_file()}


def _records(run: Path) -> list[dict]:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k not in ("seconds", "train_seconds")} for line in lines]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """A source model, the old model at the output path, and the new one (a kill-free prune)."""
    root = tmp_path_factory.mktemp("kill_models")
    torch.manual_seed(1)
    prunus.save(prunus.create_model("lenet5", in_channels=1, width_mult=0.5), root / "src", input_shape=(1, 28, 28))
    torch.manual_seed(2)
    prunus.save(prunus.create_model("lenet5", in_channels=1, width_mult=0.5), root / "old", input_shape=(1, 28, 28))
    assert main(["prune", str(root / "src"), "--remove-channels", "0.5", "--out", str(root / "run"), "--json"]) == 0
    prunus.save(prunus.load(root / "run"), root / "new")  # the pruned model, as a plain model directory
    return root


@pytest.mark.parametrize("point", ["dir-written:out#1", "dir-swapped:out#1"])
def test_killed_model_directory_write_leaves_old_or_new_never_a_mix(models, tmp_path, point):
    out = tmp_path / "out"
    out.mkdir()
    for name, data in _files(models / "old").items():
        (out / name).write_bytes(data)
    result = _save(models / "new", out, point)
    assert result.returncode == -signal.SIGKILL, result.stderr[-2000:]
    files = _files(out)
    assert files in (_files(models / "old"), _files(models / "new")), sorted(files)
    expected = _files(models / "new") if point.startswith("dir-swapped") else _files(models / "old")
    assert files == expected
    prunus.load(out)  # a complete, loadable pair
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    assert leftovers, "the kill should have left the temporary directory behind"
    # the next write cleans up after the dead process and gives the new model
    assert _save(models / "new", out).returncode == 0
    assert [p.name for p in tmp_path.iterdir()] == ["out"]
    assert _files(out) == _files(models / "new")


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    run = tmp_path_factory.mktemp("kill_runs") / "full"
    assert _cli(["train", *TRAIN, "--out", str(run)]).returncode == 0
    return run


@pytest.mark.parametrize("point", ["checkpointed#2", "write:metrics.jsonl#2"])
def test_killed_between_checkpoint_and_log_resumes_bit_identical_with_a_complete_log(uninterrupted, tmp_path, point):
    run = tmp_path / "run"
    killed = _cli(["train", *TRAIN, "--out", str(run)], point)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert len(_records(run)) == 1  # epoch 2 was checkpointed but its record never made it
    resumed = _cli(["train", "--resume", "--out", str(run), "--threads", "1", "--no-progress"])
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    full, again = (
        load_file(str(uninterrupted / "model" / "model.safetensors")),
        load_file(str(run / "model" / "model.safetensors")),
    )
    assert full.keys() == again.keys()
    assert all(torch.equal(full[k], again[k]) for k in full)  # bit-identical weights
    assert _records(run) == _records(uninterrupted)  # one record per epoch, the same numbers
    assert not [p.name for p in run.iterdir() if p.name.endswith(".tmp")]  # the leftover was cleaned


def test_torn_or_binary_metrics_log_is_rebuilt_on_resume_and_read_by_info(uninterrupted, tmp_path, capsys):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(uninterrupted, run)
    good = (run / "metrics.jsonl").read_text()
    (run / "metrics.jsonl").write_text(good + '{"epoch": 3, "tr')  # torn last line (an older appender)
    assert main(["info", str(run), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["epochs_logged"] == 3
    (run / "metrics.jsonl").write_bytes(b"\x00\xff binary \x80")
    assert main(["train", "--resume", "--out", str(run), "--no-progress"]) == 0
    assert _records(run) == _records(uninterrupted)


# --- a kill inside a pipeline's compress stage, mid-search ------------------------------------
def _compress_recipe(path: Path) -> Path:
    import yaml

    from tests.pipeline.conftest import TINY

    recipe = {**TINY, "stages": [
        {"stage": "train", "name": "baseline", "train": {"epochs": 1}},
        {"stage": "compress", "compress": {"sparsity": 0.6, "bits": 4, "cycles": 3, "population": 4, "generations": 1,
                                           "elite": 1, "calib_size": 32, "rescore_size": 64, "finetune_steps": 10,
                                           "recovery_steps": 0}},
    ]}  # fmt: skip
    path.write_text(yaml.safe_dump(recipe))
    return path


def _prn_content(path: Path) -> tuple[dict, dict]:
    """The decoded .prn: its header JSON and every tensor (the bytes themselves are not yet
    reproducible across processes: safetensors orders its JSON header per process)."""
    from prunus.compress.prn import read_prn

    prn = read_prn(path)
    return prn.header, {k: v.tobytes() for k, v in prn.tensors.items()}


def test_killed_compress_stage_resumes_mid_search_to_the_same_file(tmp_path):
    recipe = _compress_recipe(tmp_path / "recipe.yaml")
    full, run = tmp_path / "full", tmp_path / "run"
    done = _cli(["run", str(recipe), "--out", str(full)])
    assert done.returncode == 0, done.stderr[-2000:]
    killed = _cli(["run", str(recipe), "--out", str(run)], "compress-cycle#2")
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    stage = next(run.rglob("*-compress"))
    assert (stage / "compress.checkpoint.safetensors").is_file()  # cycle 2 of 3 was checkpointed
    assert not (stage / "model.prn").exists()
    assert "DE cycle 2/3: sparsity" in killed.stdout  # the search showed where it was
    resumed = _cli(["run", str(recipe), "--out", str(run)])
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "DE search resumed after cycle 2/3" in resumed.stdout
    assert "DE cycle 1/3" not in resumed.stdout  # cycles 1 and 2 were not searched again
    assert "fine-tune step 10/10" in resumed.stdout
    assert _prn_content(stage / "model.prn") == _prn_content(next(full.rglob("*-compress")) / "model.prn")
    assert not (stage / "compress.checkpoint.safetensors").exists()  # removed once the stage finished
    a = load_file(str(next(full.rglob("*-compress")) / "model" / "model.safetensors"))
    b = load_file(str(stage / "model" / "model.safetensors"))
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
