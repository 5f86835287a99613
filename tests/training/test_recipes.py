"""Every shipped recipe parses into a valid RunConfig, and configs round-trip through YAML."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from prunus.errors import ConfigError
from prunus.training import RunConfig, resolve_run_config
from prunus.training.config import write_run_config

ALL = sorted((Path(__file__).resolve().parents[2] / "recipes").glob("*.yaml"))
# pipeline recipes (a `stages` list) are `prunus run` recipes, tested in tests/pipeline
PIPELINES = [p for p in ALL if "stages" in (yaml.safe_load(p.read_text()) or {})]
RECIPES = [p for p in ALL if p not in PIPELINES]
PIPELINES += sorted((Path(__file__).resolve().parents[2] / "benchmarks" / "recipes").glob("*.yaml"))


def test_recipes_exist():
    assert len(RECIPES) >= 3


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.stem)
def test_recipe_parses_and_round_trips(path, tmp_path):
    config = resolve_run_config(path)
    raw = yaml.safe_load(path.read_text())
    assert config.model.name == raw["model"]["name"]
    assert [m.name for m in config.methods] == [m["name"] for m in raw.get("methods", [])]
    write_run_config(config, tmp_path / "config.yaml")
    assert resolve_run_config(tmp_path / "config.yaml") == config


def test_flags_override_yaml_which_overrides_defaults(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train: {epochs: 7, lr: 0.02}\n")
    config = resolve_run_config(path, {"train": {"epochs": 3, "lr": None}})
    assert config.train.epochs == 3  # flag beats YAML
    assert config.train.lr == 0.02  # YAML beats default
    assert config.train.weight_decay == RunConfig().train.weight_decay  # default kept


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("train: {epochs: 2, lrr: 0.1}\n", "unknown TrainConfig field"),
        ("model: {name: resnet21}\n", "unknown model 'resnet21'"),
        ("methods: [{name: nope}]\n", "unknown method 'nope'"),
        ("version: 2\n", "config version 2 is not supported"),
        ("methods: [{name: sfp, args: {rat: 0.4}}]\n", "method 'sfp' has no argument.s. rat; accepted: rate"),
        ("- just a list\n", "must contain a mapping"),
    ],
)
def test_bad_recipes_raise_with_a_message(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        resolve_run_config(path)


@pytest.mark.parametrize("path", PIPELINES, ids=lambda p: p.stem)
def test_pipeline_recipe_parses(path):
    from prunus.pipeline import load_recipe

    plan = load_recipe(path)
    assert plan.arms
    assert all(chain for chain in plan.arms.values())
