"""Invalid recipes fail while parsing, before any work starts, naming the stage and the key."""

from __future__ import annotations

import pytest
import yaml

from prunus.cli import main
from prunus.errors import ConfigError
from prunus.pipeline import parse_recipe


def _edit(recipe: dict, path: str, value) -> dict:
    *head, last = path.split("/")
    target = recipe
    for p in head:
        target = target[int(p)] if isinstance(target, list) else target[p]
    if isinstance(target, list):
        target[int(last)] = value
    else:
        target[last] = value
    return recipe


BAD = [
    (
        "stages/0/stage",
        "trian",
        r"stage 'baseline': unknown stage 'trian'; choose one of: bench, compress, create, csgd",
    ),
    ("stages/2/ratoi", 0.5, r"stage 'prune' \(prune\): unknown PruneStage field\(s\): ratoi"),
    ("stages/0/train", {"epochs": "two"}, r"stage 'baseline' \(train\): TrainConfig.epochs must be a number"),
    ("stages/0/train", {"lrr": 0.1}, r"stage 'baseline' \(train\): unknown TrainConfig field\(s\): lrr"),
    ("stages/0/methods", [{"name": "nope"}], r"stage 'baseline' \(train\): unknown method 'nope'"),
    ("stages/2/keep_macs", 1.5, r"stage 'prune' \(prune\): prune.keep_macs=1.5 is out of range"),
    ("stages/1/width", "wide", r"stage 'csgd' \(csgd\): CsgdStage.width: cannot interpret|must be a number"),
    ("stages/1/args", {"epz": 1}, r"stage 'csgd' \(csgd\): csgd.args has no argument\(s\) epz"),
    ("stages/3/input", "export", r"stage 'finetune' \(finetune\): input='export' is not an earlier stage that makes"),
    (
        "stages/0",
        {"stage": "prune", "remove_channels": 0.5},
        r"stage 'prune' \(prune\) needs a model, but no earlier stage",
    ),
    ("stages/4", {"stage": "report"}, r"stage 'bench' comes after the run-level stage 'report'"),
    (
        "stages/4",
        {"stage": "compress", "compress": {"bits": 9}},
        r"stage 'compress' \(compress\): CompressConfig.bits=9",
    ),
    ("stages/4", {"stage": "compress", "compress": {"sparsty": 0.9}}, r"unknown CompressConfig field\(s\): sparsty"),
    (
        "stages/4",
        {"stage": "compress", "compress": {"sparsity": float("nan")}},
        r"stage .compress. \(compress\): CompressConfig.sparsity must be a finite number, got nan",
    ),
    ("seeds", [0, 0], r"seeds must be a non-empty list of distinct integers"),
    ("trian", {}, r"recipe: unknown key\(s\) trian; known: version, name"),
    ("version", 2, r"recipe version 2 is not supported"),
    ("arms", {"a": {"stages": ["nope"]}}, r"arm 'a': unknown stage\(s\) nope"),
    ("arms", {"a": {"sett": {}}}, r"arm 'a': unknown key\(s\) sett"),
    ("data", {"name": "synthetic", "subset": -1}, r"stage 'baseline' \(train\): DataConfig.subset=-1"),
]


@pytest.mark.parametrize(("path", "value", "message"), BAD, ids=[b[0] + "=" + str(b[1])[:12] for b in BAD])
def test_bad_recipe_raises_naming_stage_and_key(tiny_recipe, path, value, message):
    with pytest.raises(ConfigError, match=message):
        parse_recipe(_edit(tiny_recipe, path, value))


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        ({"baselin.train.epochs": 1}, r"'baselin' is neither a recipe key .* nor a stage \(baseline, csgd, prune"),
        ({"baseline": 1}, r"name a key of stage 'baseline'"),
        ({"prune.remove_channels": 0.3}, r"prune needs exactly one of remove_channels"),
        (
            {"baseline.train.epochs": 0},
            r"stage 'baseline' \(train\): epochs=0 is not valid; expected an integer from 1 to 100000",
        ),
    ],
)
def test_bad_sets_raise(tiny_recipe, sets, message):
    with pytest.raises(ConfigError, match=message):
        parse_recipe(tiny_recipe, sets)


def test_cli_refuses_a_bad_recipe_before_creating_anything(tiny_recipe, tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(_edit(tiny_recipe, "stages/3/methods", [{"name": "sfp", "args": {"rat": 1}}])))
    out = tmp_path / "run"
    assert main(["run", str(path), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("prunus: error: stage 'finetune' (finetune): method 'sfp' has no argument(s) rat")
    assert not out.exists()


def test_cli_rejects_non_pipeline_yaml_and_huge_files(tmp_path, capsys):
    plain = tmp_path / "train.yaml"
    plain.write_text("model: {name: resnet20}\n")
    assert main(["run", str(plain)]) == 2
    assert "has no 'stages' list" in capsys.readouterr().err
    huge = tmp_path / "huge.yaml"
    huge.write_text("# " + "x" * (1 << 20) + "\nstages: []\n")
    assert main(["run", str(huge)]) == 2
    assert "a recipe must be under" in capsys.readouterr().err


def test_dry_run_prints_the_plan_and_runs_nothing(tiny_recipe, tmp_path, capsys):
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(tiny_recipe))
    assert main(["run", str(path), "--out", str(tmp_path / "run"), "--dry-run"]) == 0
    text = capsys.readouterr().out
    assert "csgd" in text
    assert "every chain" in text
    assert not (tmp_path / "run").exists()


def test_run_refuses_a_directory_it_did_not_write(tiny_recipe, tmp_path):
    from prunus.pipeline import run_pipeline

    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("precious")
    with pytest.raises(ConfigError, match="holds files no pipeline wrote"):
        run_pipeline(parse_recipe(tiny_recipe), foreign, progress=False)
    assert sorted(p.name for p in foreign.iterdir()) == ["thesis.tex"]
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="exists and is not a directory"):
        run_pipeline(parse_recipe(tiny_recipe), tmp_path / "file", progress=False)


def _methods():
    from prunus.methods import list_methods

    return list_methods()


@pytest.mark.parametrize("method", _methods())
def test_every_registered_method_can_be_named_in_a_training_stage(tiny_recipe, method):
    tiny_recipe["stages"][3]["methods"] = [{"name": method}]
    plan = parse_recipe(tiny_recipe)
    assert [m.name for m in plan.arms["main"][3].config.methods] == [method]


def test_every_stage_kind_has_a_frozen_config_and_a_summary():
    import dataclasses

    from prunus.pipeline import get_stage, list_stages

    for kind in list_stages():
        info = get_stage(kind)
        assert dataclasses.is_dataclass(info.config), kind
        assert info.config.__dataclass_params__.frozen, kind
        assert info.summary, kind
        assert info.scope in ("chain", "run"), kind


def test_prune_stage_takes_one_budget_of_four(tiny_recipe):
    del tiny_recipe["stages"][2]["keep_macs"]
    tiny_recipe["stages"][2]["keep_latency"] = 0.5
    stage = parse_recipe(tiny_recipe).arms["main"][2].config
    assert (stage.keep_latency, stage.runtime, stage.latency_batch) == (0.5, "onnxruntime", 64)
    tiny_recipe["stages"][2]["keep_params"] = 0.5
    with pytest.raises(ConfigError, match="got keep_params, keep_latency"):
        parse_recipe(tiny_recipe)
