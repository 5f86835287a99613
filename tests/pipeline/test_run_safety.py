"""A pipeline run cannot be turned against its user: no writing through links, no changed recipe
merged into an interrupted stage, nothing left behind by a kill.

Every writer of a run directory goes through `prunus.formats.run_dir.RunDir`, which refuses a
symlink anywhere inside; each command that writes one (run, prune, csgd, report) is tried with a
stage directory replaced by a link to a folder elsewhere, which must stay untouched.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import prunus
from prunus.cli import main
from prunus.formats.run_dir import RunDir

RECIPE = """\
version: 1
name: safety
model: {name: lenet5, width_mult: 0.25}
data: {name: synthetic, num_samples: 64, image_size: 28, channels: 1, val_size: 16, batch_size: 32}
train: {threads: 1}
stages:
  - {stage: train, name: baseline, train: {epochs: 1}}
  - {stage: prune, remove_channels: 0.5}
  - {stage: finetune, train: {epochs: 2}}
"""


def _cli(args: list[str], crash_at: str | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env.pop("PRUNUS_CRASH_AT", None)
    if crash_at:
        env["PRUNUS_CRASH_AT"] = crash_at
    return subprocess.run([sys.executable, "-m", "prunus", *args], env=env, capture_output=True, text=True, timeout=600)


def _tree(root: Path) -> dict[str, object]:
    """Every entry under `root`: a link's target, a file's bytes and modification time (a rewrite with the
    same bytes is still a write), or "dir"."""
    out: dict[str, object] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            if p.is_symlink():
                out[str(p.relative_to(root))] = os.readlink(p)
            elif p.is_file():
                out[str(p.relative_to(root))] = (p.read_bytes(), p.stat().st_mtime_ns)
            else:
                out[str(p.relative_to(root))] = "dir"
    return out


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    root = tmp_path_factory.mktemp("safety")
    (root / "recipe.yaml").write_text(RECIPE)
    assert main(["run", str(root / "recipe.yaml"), "--out", str(root / "run"), "--no-progress"]) == 0
    return root


def _linked_copy(finished: Path, tmp_path: Path, stage: str) -> tuple[Path, Path]:
    """A copy of the finished run with `stage`'s directory replaced by a link to an (empty) folder elsewhere."""
    run = tmp_path / "run"
    shutil.copytree(finished / "run", run, symlinks=True)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    target = run / "main" / "seed0" / stage
    shutil.rmtree(target)
    target.symlink_to(elsewhere, target_is_directory=True)
    return run, elsewhere


def test_run_refuses_a_stage_directory_replaced_by_a_link(finished, tmp_path, capsys):
    run, elsewhere = _linked_copy(finished, tmp_path, "02-prune")
    before = _tree(tmp_path)
    assert main(["run", str(finished / "recipe.yaml"), "--out", str(run), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("prunus: error: run directory")
    assert "contains the symlink" in err
    assert len(err.strip().splitlines()) == 1
    assert _tree(tmp_path) == before  # nothing written, inside the link target least of all
    assert list(elsewhere.iterdir()) == []


def test_report_refuses_a_run_with_a_link_inside(finished, tmp_path, capsys):
    run, elsewhere = _linked_copy(finished, tmp_path, "01-baseline")
    before = _tree(tmp_path)
    assert main(["report", str(run)]) == 2
    assert "contains the symlink" in capsys.readouterr().err
    assert _tree(tmp_path) == before


@pytest.mark.parametrize("command", ["prune", "csgd"])
def test_commands_that_run_stages_refuse_a_link_in_their_out(finished, tmp_path, command, capsys):
    model = RunDir(finished / "run").stage("main", 0, 1, "baseline").model
    base = {
        "prune": ["prune", str(model), "--remove-channels", "0.5"],
        "csgd": ["csgd", str(model), "--epochs", "1", "--width", "0.5", "--set", "eps=0.1", "--no-progress"],
    }[command]
    out = tmp_path / "out"
    assert main([*base, "--out", str(out)]) == 0
    stage = next(p for p in out.iterdir() if p.is_dir())
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    shutil.rmtree(stage)
    stage.symlink_to(elsewhere, target_is_directory=True)
    capsys.readouterr()
    before = _tree(tmp_path)
    assert main([*base, "--out", str(out)]) == 2
    assert "contains the symlink" in capsys.readouterr().err
    assert _tree(tmp_path) == before


def test_a_recipe_changed_after_a_kill_is_refused_naming_the_change_then_resumes_bit_identical(finished, tmp_path):
    recipe = finished / "recipe.yaml"
    run = tmp_path / "run"
    # the third "checkpointed" point: after the baseline's epoch and the fine-tune's first epoch
    killed = _cli(["run", str(recipe), "--out", str(run), "--no-progress"], crash_at="checkpointed#2")
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    stage = RunDir(run).stage("main", 0, 3, "finetune")
    assert stage.started.exists()
    assert not stage.record.exists()
    recorded = RunDir(run).recipe.read_bytes()
    changed = _cli(["run", str(recipe), "--out", str(run), "--no-progress", "--set", "finetune.train.epochs=3"])
    assert changed.returncode == 2
    assert changed.stderr.count("\n") == 1
    assert "was interrupted and the recipe has changed since (changed: train.epochs: 2 -> 3)" in changed.stderr
    assert RunDir(run).recipe.read_bytes() == recorded  # the run still says what it ran
    resumed = _cli(["run", str(recipe), "--out", str(run), "--no-progress"])
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    final = RunDir(run).stage("main", 0, 3, "finetune").model / "model.safetensors"
    reference = RunDir(finished / "run").stage("main", 0, 3, "finetune").model / "model.safetensors"
    a, b = load_file(str(final)), load_file(str(reference))
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)  # the resumed run's weights are the uninterrupted run's


def _dead_pid() -> int:
    for pid in range(4_000_000, 4_100_000):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return pid
        except PermissionError:
            continue
    raise AssertionError("no free pid found")


def test_a_kill_during_a_model_write_leaves_nothing_behind_after_the_rerun(finished, tmp_path):
    recipe = finished / "recipe.yaml"
    run = tmp_path / "run"
    # the prune stage's model directory is complete in its temporary place, not yet renamed
    killed = _cli(["run", str(recipe), "--out", str(run), "--no-progress"], crash_at="dir-written:model#2")
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    prune_dir = RunDir(run).stage("main", 0, 2, "prune").root
    assert any(p.name.endswith(".tmp") for p in prune_dir.iterdir())  # the kill left its temporary directory
    dead = _dead_pid()  # and one whose target is never written again (an older prunus's file name, say)
    (prune_dir / f".old-export.onnx.{dead}.x1y2.tmp").write_bytes(b"partial")
    assert _cli(["run", str(recipe), "--out", str(run), "--no-progress"]).returncode == 0
    leftovers = [str(p) for p in run.rglob("*") if p.name.endswith(".tmp")]
    assert leftovers == []
    assert prunus.load(run).conv1.out_channels > 0  # the run's final model loads
