"""A recipe whose input model is built by a user factory: refused unless the caller trusts it, then run.

`prunus run` had no `--trust-factory` while the refusal told users to pass it, so a recipe could not
start from a user's own saved model at all. Trust covers the input model's factory only, for the run only.
"""

from __future__ import annotations

import pytest
import torch

import prunus
from prunus.cli import main
from prunus.errors import PrunusError
from prunus.formats.model_dir import _TRUSTED
from prunus.pipeline import parse_recipe, run_pipeline

USER_NET = """
import torch
from prunus.models.info import update_info


def build():
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
        torch.nn.Conv2d(8, 16, 3, padding=1), torch.nn.BatchNorm2d(16), torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(16, 10),
    )
    update_info(net, stem="0", classifier="8")
    return net
"""
FACTORY = "trusted_usernet:build"


@pytest.fixture
def user_model(tmp_path, monkeypatch):
    (tmp_path / "trusted_usernet.py").write_text(USER_NET)
    monkeypatch.syspath_prepend(str(tmp_path))
    import trusted_usernet

    model_dir = tmp_path / "mine"
    prunus.save(trusted_usernet.build(), model_dir, input_shape=(1, 16, 16), factory=FACTORY)
    return model_dir


def _recipe(model_dir) -> dict:
    return {
        "version": 1,
        "name": "mine",
        "input": str(model_dir),
        "stages": [{"stage": "prune", "remove_channels": 0.5, "round_to": 1}],
    }


def test_a_user_factory_input_is_refused_without_trust_and_runs_with_it(user_model, tmp_path):
    plan = parse_recipe(_recipe(user_model))
    with pytest.raises(PrunusError, match="--trust-factory"):
        run_pipeline(plan, tmp_path / "refused", progress=False, echo=lambda line: None)
    summary = run_pipeline(plan, tmp_path / "run", progress=False, echo=lambda line: None, trust_factory=True)
    assert summary.ran == 1
    pruned_dir = tmp_path / "run" / summary.records[0]["stages"][-1]["model"]
    assert FACTORY not in _TRUSTED  # trusted for the run only
    with pytest.raises(PrunusError, match="--trust-factory"):
        prunus.load(pruned_dir)  # the pruned model is built by the same factory
    pruned = prunus.load(pruned_dir, trust_factory=True)
    dense = prunus.load(user_model, trust_factory=True)
    convs = [m.out_channels for m in pruned.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs == [8, 8]  # the stem is kept; the inner conv lost half its filters
    assert sum(p.numel() for p in pruned.parameters()) < sum(p.numel() for p in dense.parameters())


def test_prunus_run_has_the_flag_its_refusal_names(user_model, tmp_path, capsys):
    import yaml

    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(_recipe(user_model)))
    assert main(["run", str(recipe), "--out", str(tmp_path / "no"), "--no-progress"]) != 0
    assert "--trust-factory" in capsys.readouterr().err
    assert main(["run", str(recipe), "--out", str(tmp_path / "yes"), "--no-progress", "--trust-factory"]) == 0
    assert "run directory:" in capsys.readouterr().out
    assert FACTORY not in _TRUSTED
