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


def _net_source(layers: str, classifier: str) -> str:
    """A user module `build()` returning `torch.nn.Sequential(layers)` with its stem and classifier named."""
    return f"""
import torch
from prunus.models.info import update_info


def build():
    torch.manual_seed(0)
    net = torch.nn.Sequential({layers})
    update_info(net, stem="0", classifier="{classifier}")
    return net
"""


USER_NET = _net_source(
    "torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.BatchNorm2d(8), torch.nn.ReLU(), "
    "torch.nn.Conv2d(8, 16, 3, padding=1), torch.nn.BatchNorm2d(16), torch.nn.ReLU(), "
    "torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(16, 10), ",
    "8",
)
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


USER_NET_1D = _net_source(
    "torch.nn.Conv1d(1, 8, 3, padding=1), torch.nn.BatchNorm1d(8), torch.nn.ReLU(), "
    "torch.nn.Conv1d(8, 16, 3, padding=1), torch.nn.ReLU(), "
    "torch.nn.AdaptiveAvgPool1d(1), torch.nn.Flatten(), torch.nn.Linear(16, 10), ",
    "7",
)


@pytest.mark.parametrize(
    ("data", "shape"),
    [({}, "(1, 28, 28)"), ({"name": "synthetic", "channels": 3, "image_size": 8}, "(3, 8, 8)")],
    ids=["fashion-mnist", "synthetic"],
)
def test_a_model_that_does_not_take_the_stages_data_is_one_line_before_the_stage_starts(
    tmp_path, monkeypatch, capsys, data, shape
):
    """A 1-D user model under image data: the CLI names the stage, the data and its shape (it printed
    a traceback from the middle of the prune stage's evaluation), and no stage directory is left."""
    import yaml

    (tmp_path / "usernet_1d.py").write_text(USER_NET_1D)
    monkeypatch.syspath_prepend(str(tmp_path))
    import usernet_1d

    prunus.save(usernet_1d.build(), tmp_path / "mine", input_shape=(1, 32), factory="usernet_1d:build")
    recipe = {**_recipe(tmp_path / "mine"), "data": data} if data else _recipe(tmp_path / "mine")
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    out = tmp_path / "run"
    code = main(["run", str(tmp_path / "recipe.yaml"), "--out", str(out), "--no-progress", "--trust-factory"])
    err = capsys.readouterr().err
    assert code != 0
    assert "Traceback" not in err
    assert f"stage 'prune': data '{data.get('name', 'fashion-mnist')}' (samples of shape {shape}" in err
    assert "does not fit the model" in err
    assert "conv1d" in err
    assert not any(p.name.endswith("prune") for p in out.rglob("*") if p.is_dir())


USER_NET_UP = _net_source(
    "torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.BatchNorm2d(8), torch.nn.ReLU(), "
    "torch.nn.ConvTranspose2d(8, 16, 3, padding=1), torch.nn.BatchNorm2d(16), torch.nn.ReLU(), "
    "torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(16, 10), ",
    "8",
)


def test_the_report_draws_a_user_models_widths_only_when_trusted_and_says_so_otherwise(tmp_path, monkeypatch):
    """`prunus report` on a run of a user model failed with "pass --trust-factory", a flag it did not
    have. Now: without it the report renders and names what it left out; with it the widths are drawn,
    a ConvTranspose2d's among them (its out_channels: the widths plot listed Conv2d layers only)."""
    import yaml

    from prunus.report.collect import collect

    (tmp_path / "usernet_up.py").write_text(USER_NET_UP)
    monkeypatch.syspath_prepend(str(tmp_path))
    import usernet_up

    prunus.save(usernet_up.build(), tmp_path / "mine", input_shape=(1, 28, 28), factory="usernet_up:build")
    recipe = {**_recipe(tmp_path / "mine"), "data": {"test_subset": 64}, "stages": [*_recipe(None)["stages"],
              {"stage": "report"}]}  # fmt: skip
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    out = tmp_path / "run"
    assert main(["run", str(tmp_path / "recipe.yaml"), "--out", str(out), "--no-progress", "--trust-factory"]) == 0
    caption = "Output channels per conv layer"
    assert caption in (out / "report.html").read_text()  # the report stage ran inside the trusted run
    assert main(["report", str(out)]) == 0
    page, summary = (out / "report.html").read_text(), (out / "summary.md").read_text()
    assert caption not in page
    for text in (page, summary):
        assert "Layer widths are not drawn" in text
        assert "usernet_up:build" in text
        assert "--trust-factory" in text
    assert main(["report", str(out), "--trust-factory"]) == 0
    assert caption in (out / "report.html").read_text()
    assert "Layer widths are not drawn" not in (out / "report.html").read_text()
    widths = collect(out, trust_factory=True).widths["main"]
    assert widths == {"0": [8, 8], "3": [16, 8]}  # the stem kept; the ConvTranspose2d's 16 filters halved
    assert collect(out).widths == {}
    assert "usernet_up:build" not in prunus.formats.model_dir._TRUSTED


def test_a_prune_stage_that_never_reads_its_data_runs_a_model_the_data_does_not_fit(tmp_path, monkeypatch):
    """The check covers the data a stage uses: a prune without evaluation and with a data-free criterion
    (what `prunus prune` runs without --data) takes a 1-D model under the default image data."""
    (tmp_path / "usernet_1d_free.py").write_text(USER_NET_1D)
    monkeypatch.syspath_prepend(str(tmp_path))
    import usernet_1d_free

    prunus.save(usernet_1d_free.build(), tmp_path / "mine", input_shape=(1, 32), factory="usernet_1d_free:build")
    recipe = {**_recipe(tmp_path / "mine")}
    recipe["stages"] = [{**recipe["stages"][0], "evaluate": False}]
    summary = run_pipeline(
        parse_recipe(recipe), tmp_path / "run", progress=False, echo=lambda line: None, trust_factory=True
    )
    pruned = prunus.load(tmp_path / "run" / summary.records[0]["stages"][-1]["model"], trust_factory=True)
    assert [m.out_channels for m in pruned.modules() if isinstance(m, torch.nn.Conv1d)] == [8, 8]
