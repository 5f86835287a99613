"""Recipes and run directories written with the pruning targets' old names (`ratio`, `macs_ratio`, ...)
still load and resume: a recipe key under its old name warns once and plans the same stage, a stage
hash does not change with the rename, and an old config.yaml passes the resume check."""

from __future__ import annotations

import copy
import hashlib
import json
import warnings

import pytest
import yaml

from prunus.errors import ConfigError, PrunusDeprecationWarning
from prunus.formats.run_dir import RunDir
from prunus.pipeline import parse_recipe, run_pipeline
from prunus.pipeline.runner import hashed_config, stage_hash
from prunus.training.config import RunConfig
from prunus.training.train import check_resume_config

# the field names run directories recorded before issue 28, written out here
BEFORE = {"remove_channels": "ratio", "keep_macs": "macs_ratio", "keep_params": "params_ratio",
          "keep_latency": "latency_ratio"}  # fmt: skip


def _as_before(config: dict) -> dict:
    """A prune stage's or a method's config dict as prunus wrote it before the rename."""
    return {BEFORE.get(k, k): v for k, v in config.items()}


def _pre_rename_hash(stage, seed: int, input_hash: str | None) -> str:
    """`stage_hash` as prunus computed it before the rename: the same blob, the old names."""
    config = _as_before(hashed_config(stage.config.to_dict()))
    for method in config.get("methods", []):
        method["args"] = _as_before(method["args"])
    blob = json.dumps({"kind": stage.kind, "config": config, "seed": seed, "input": input_hash}, sort_keys=True,
                      default=str)  # fmt: skip
    return hashlib.sha256(blob.encode()).hexdigest()


def _recipe(tiny_recipe, prune: dict, methods: list | None = None) -> dict:
    tiny_recipe["stages"] = [
        {"stage": "train", "name": "baseline", "train": {"epochs": 1}, "methods": methods or []},
        {"stage": "prune", **prune},
    ]
    return tiny_recipe


def _parse(recipe: dict):
    """The plan and the prunus deprecation messages parsing gave."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        plan = parse_recipe(copy.deepcopy(recipe))
    return plan, [str(w.message) for w in caught if issubclass(w.category, PrunusDeprecationWarning)]


def _stages(plan):
    return next(iter(plan.arms.values()))


@pytest.mark.parametrize(("old", "new"), [("ratio", "remove_channels"), ("macs_ratio", "keep_macs"),
                                          ("params_ratio", "keep_params")])  # fmt: skip
def test_a_recipe_key_under_its_old_name_plans_the_same_stage_with_the_same_hash(tiny_recipe, old, new):
    sfp_old = [{"name": "sfp", "args": {"macs_ratio": 0.8}}]
    sfp_new = [{"name": "sfp", "args": {"keep_macs": 0.8}}]
    plan_new, said_new = _parse(_recipe(copy.deepcopy(tiny_recipe), {new: 0.5}, sfp_new))
    plan_old, said_old = _parse(_recipe(copy.deepcopy(tiny_recipe), {old: 0.5}, sfp_old))
    assert said_new == []
    assert sorted(said_old) == sorted([f"{old} is deprecated; use {new}", "macs_ratio is deprecated; use keep_macs"])
    for a, b in zip(_stages(plan_old), _stages(plan_new), strict=True):
        assert a.config == b.config
        assert stage_hash(a, 0, None) == stage_hash(b, 0, None)
    prune = _stages(plan_old)[1].config
    assert prune.target == (new, 0.5)


def test_stage_hashes_are_the_ones_prunus_wrote_before_the_rename(tiny_recipe):
    plan, _ = _parse(_recipe(tiny_recipe, {"keep_macs": 0.7}, [{"name": "sfp", "args": {"keep_params": 0.8}}]))
    train, prune = _stages(plan)
    assert stage_hash(prune, 3, "abc") == _pre_rename_hash(prune, 3, "abc")
    assert stage_hash(train, 3, None) == _pre_rename_hash(train, 3, None)
    # (the premise: the renamed fields are in the hashed configs)
    assert hashed_config(prune.config.to_dict())["keep_macs"] == 0.7
    assert hashed_config(train.config.to_dict())["methods"][0]["args"]["keep_params"] == 0.8


def test_a_run_made_with_old_keys_resumes_with_new_ones_and_a_change_names_the_new_key(tiny_recipe, tmp_path):
    out = tmp_path / "run"
    old_plan, _ = _parse(_recipe(copy.deepcopy(tiny_recipe), {"macs_ratio": 0.7}))
    first = run_pipeline(old_plan, out, progress=False, echo=lambda _: None)
    assert first.ran == 2
    new_plan, _ = _parse(_recipe(copy.deepcopy(tiny_recipe), {"keep_macs": 0.7}))
    again = run_pipeline(new_plan, out, progress=False, echo=lambda _: None)
    assert (again.ran, again.skipped) == (0, 2)

    # the prune stage was killed half way by a prunus from before the rename, and the recipe changed since
    stage_dir = RunDir(out).stage("main", 0, 2, "prune")
    record = stage_dir.read_record()
    stage_dir.record.unlink()
    started = _as_before(hashed_config(record["config"]))
    started["macs_ratio"] = 0.6
    stage_dir.write_json(stage_dir.started, {"name": "prune", "hash": "0" * 64, "config": started})
    with pytest.raises(ConfigError, match=r"\(changed: keep_macs: 0\.6 -> 0\.7\)"):
        run_pipeline(new_plan, out, progress=False, echo=lambda _: None)


def test_csgd_stage_arguments_under_old_names(tiny_recipe):
    tiny_recipe["stages"] = [{"stage": "train", "name": "baseline"}, {"stage": "csgd", "args": {"macs_ratio": 0.5}}]
    plan, said = _parse(tiny_recipe)
    assert said == ["csgd.args.macs_ratio is deprecated; use csgd.args.keep_macs"]
    assert _stages(plan)[1].config.args == {"keep_macs": 0.5}
    tiny_recipe["stages"][1]["args"] = {"macs_ratio": 0.5, "keep_macs": 0.5}
    with pytest.raises(ConfigError, match="csgd.args.macs_ratio and csgd.args.keep_macs name the same value"):
        parse_recipe(tiny_recipe)
    tiny_recipe["stages"][1] = {"stage": "csgd", "rounds": 2, "args": {"params_ratio": 0.5}}
    with (
        pytest.warns(PrunusDeprecationWarning, match="csgd.args.params_ratio is deprecated; use csgd.args.keep_params"),
        pytest.raises(ConfigError, match="widths and budgets are not supported with rounds > 1"),
    ):
        parse_recipe(tiny_recipe)


def test_an_old_config_yaml_passes_the_resume_check(tmp_path):
    config = RunConfig.from_dict({"model": {"name": "lenet5"}, "data": {"name": "synthetic"},
                                  "methods": [{"name": "sfp", "args": {"keep_macs": 0.5}}]})  # fmt: skip
    written = config.to_dict()
    written["methods"][0]["args"] = _as_before(written["methods"][0]["args"])  # as a run before the rename wrote it
    assert written["methods"][0]["args"]["macs_ratio"] == 0.5
    assert written["methods"][0]["args"]["params_ratio"] is None
    RunDir(tmp_path).write_text(RunDir(tmp_path).config, yaml.safe_dump(written))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_resume_config(config, tmp_path)  # the same run: no refusal
    said = [str(w.message) for w in caught if issubclass(w.category, PrunusDeprecationWarning)]
    assert said == ["macs_ratio is deprecated; use keep_macs"]
    changed = RunConfig.from_dict({**config.to_dict(), "methods": [{"name": "sfp", "args": {"keep_macs": 0.4}}]})
    with (
        pytest.warns(PrunusDeprecationWarning, match="macs_ratio is deprecated; use keep_macs"),
        pytest.raises(ConfigError, match=r"methods: .*'keep_macs': 0\.5.* -> .*'keep_macs': 0\.4"),
    ):
        check_resume_config(changed, tmp_path)
