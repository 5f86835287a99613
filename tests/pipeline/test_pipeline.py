"""Pipelines end to end on synthetic data: stages, records, resume after SIGKILL, re-run does nothing."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from prunus.formats import load
from prunus.pipeline import load_recipe, parse_recipe, read_record, run_pipeline
from prunus.pipeline._stage_metrics import split_accuracy
from prunus.pipeline.recipe import Plan

STAGE_DIRS = ["01-baseline", "02-csgd", "03-prune", "04-finetune", "05-export", "06-bench"]


def test_tiny_recipe_runs_every_stage_and_records_it(finished):
    out, summary, _ = finished
    assert summary.ran == 7
    assert summary.skipped == 0
    chain = out / "main" / "seed0"
    records = [read_record(chain / d) for d in STAGE_DIRS]
    assert [r["kind"] for r in records] == ["train", "csgd", "prune", "finetune", "export", "bench"]
    base, csgd, pruned, tuned, export, bench = (r["metrics"] for r in records)
    # each stage narrows what it was given: C-SGD merges to half width, prune keeps <= 70% of the MACs
    assert csgd["macs"] < base["macs"]
    assert pruned["achieved_macs_ratio"] <= 0.7
    assert pruned["macs"] < csgd["macs"]
    assert tuned["macs"] <= pruned["macs"]  # SFP removes its zeroed channels at the end
    assert bench["macs"] == tuned["macs"]
    assert bench["model_dir_bytes"] == tuned["bytes"]
    assert export["onnx_max_abs_diff"] < 1e-4
    assert (chain / "05-export" / "model.onnx").stat().st_size > 0
    # the recorded accuracy is the saved model's accuracy on the recipe's test split
    model = load(out / records[3]["model"])
    plan = parse_recipe(yaml.safe_load((out / "recipe.yaml").read_text()))
    assert split_accuracy(model, plan.arms["main"][3].config.data) == pytest.approx(tuned["acc"])
    # pass-through stages hand their input's model on; the chain record holds the final numbers
    assert records[4]["model"] == records[5]["model"] == records[3]["model"]
    rec = json.loads((out / "records.json").read_text())["records"]
    assert len(rec) == 1
    assert rec[0]["macs"] == tuned["macs"]
    assert rec[0]["acc"] == tuned["acc"]
    assert (out / "report.html").exists()
    assert (out / "summary.md").exists()


def test_csgd_rounds_narrow_to_the_final_width(finished):
    out, _, _ = finished
    chain = out / "main" / "seed0"
    widths = [load(chain / "02-csgd" / f"round{r}" / "model").layer1[0].conv1.out_channels for r in (1, 2)]
    dense = load(chain / "01-baseline" / "model").layer1[0].conv1.out_channels
    assert dense == 4
    assert widths == [3, 2]


def test_finished_pipeline_rerun_does_nothing_and_says_so(finished):
    out, _, _ = finished
    before = {d: (out / "main" / "seed0" / d / "stage.json").read_bytes() for d in STAGE_DIRS}
    lines: list[str] = []
    summary = run_pipeline(parse_recipe(yaml.safe_load((out / "recipe.yaml").read_text())), out, echo=lines.append)
    assert summary.ran == 0
    assert summary.skipped == 7
    assert "had already finished: nothing to do" in lines[-1]
    assert before == {d: (out / "main" / "seed0" / d / "stage.json").read_bytes() for d in STAGE_DIRS}


def test_changed_recipe_under_an_old_run_fails_before_any_work(finished, tiny_recipe):
    out, _, _ = finished
    mtime = (out / "recipe.yaml").stat().st_mtime_ns
    with pytest.raises(Exception, match="stage 'baseline' in .* finished with a different configuration"):
        run_pipeline(parse_recipe(tiny_recipe, {"baseline.train.epochs": 3}), out, progress=False)
    assert (out / "recipe.yaml").stat().st_mtime_ns == mtime


@pytest.mark.parametrize(
    "override",
    [{"baseline.train.threads": 2}, {"baseline.train.device": "auto"}, {"baseline.data.eval_batch_size": 7}],
)
def test_how_a_stage_runs_does_not_invalidate_it(finished, tiny_recipe, tmp_path, override):
    # resuming on a machine with other cores (or the data elsewhere) must not redo or refuse the run
    out, _, _ = finished
    shutil.copytree(out, tmp_path / "run")
    summary = run_pipeline(parse_recipe(tiny_recipe, override), tmp_path / "run", progress=False)
    assert (summary.ran, summary.skipped) == (0, 7)


def _spawn(recipe: Path, out: Path) -> subprocess.Popen:
    env = dict(os.environ, OMP_NUM_THREADS="1", PRUNUS_NO_DOWNLOAD="1")
    cmd = [sys.executable, "-m", "prunus", "run", str(recipe), "--out", str(out), "--no-progress"]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _kill_when(proc: subprocess.Popen, condition, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if proc.poll() is not None:
            pytest.fail(f"the pipeline ended before the kill point: {proc.stdout.read()[-2000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail("the kill point was never reached")
        time.sleep(0.002)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    proc.stdout.close()


def test_sigkill_inside_and_between_stages_resumes_to_the_same_final_model(finished, tmp_path, tiny_recipe):
    reference, _, _ = finished
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(yaml.safe_dump(tiny_recipe))
    out = tmp_path / "run"
    tune = out / "main" / "seed0" / "04-finetune"
    # 1. SIGKILL inside the fine-tuning stage, after its first epoch checkpoint
    _kill_when(_spawn(recipe, out), lambda: (tune / "checkpoint.pt").exists())
    assert read_record(tune) is None
    assert torch.load(tune / "checkpoint.pt", weights_only=True)["epoch"] < 3  # killed inside the stage
    done = {d: (out / "main" / "seed0" / d / "stage.json").read_bytes() for d in STAGE_DIRS[:3]}
    # 2. resume; SIGKILL again as soon as that stage's record is written (between stages)
    _kill_when(_spawn(recipe, out), lambda: (tune / "stage.json").exists())
    # 3. resume to the end
    proc = _spawn(recipe, out)
    log, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, log[-2000:]
    assert "baseline (train): done" in log
    assert "finetune (finetune): done" in log
    assert done == {d: (out / "main" / "seed0" / d / "stage.json").read_bytes() for d in STAGE_DIRS[:3]}
    for d in ("01-baseline", "04-finetune"):  # bit-identical weights to the uninterrupted run
        ours = (out / "main" / "seed0" / d / "model" / "model.safetensors").read_bytes()
        assert ours == (reference / "main" / "seed0" / d / "model" / "model.safetensors").read_bytes()
    assert (out / "report.html").exists()


def test_load_recipe_reads_the_file_and_applies_sets(tmp_path, tiny_recipe):
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(tiny_recipe))
    plan = load_recipe(path, {"baseline.train.epochs": 5, "seeds": [3, 4]})
    assert isinstance(plan, Plan)
    assert plan.seeds == (3, 4)
    assert plan.arms["main"][0].config.train.epochs == 5
    assert plan.arms["main"][3].config.train.lr == 0.01  # finetune's own default over the recipe's train block
    assert plan.arms["main"][1].config.train.lr == 0.05  # csgd's
    assert plan.arms["main"][0].config.train.threads == 1  # the recipe's train block reaches every stage


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        ({"format_version": 99}, "was written by a newer prunus"),
        ({"format": "prunus-model"}, "is a prunus-model file, not a prunus-stage file"),
        ({"hash": 5}, "field 'hash' must be a string"),
    ],
)
def test_stage_records_go_through_the_header_checker(finished, tmp_path, edit, message):
    from prunus.errors import FormatError

    out, _, _ = finished
    record = json.loads((out / "main" / "seed0" / "03-prune" / "stage.json").read_text())
    assert record["format"] == "prunus-stage"
    assert record["format_version"] == 1
    (tmp_path / "stage.json").write_text(json.dumps({**record, **edit}))
    with pytest.raises(FormatError, match=message):
        read_record(tmp_path)
