"""RunDir, the one owner of a run directory: its layout, the one metrics reader, names, links, models."""

from __future__ import annotations

import json

import pytest
import torch

import prunus
from prunus.errors import ConfigError, CorruptFileError
from prunus.formats.run_dir import RunDir, check_name, resolve_model_dir


def test_layouts_put_each_stage_where_the_docstring_says(tmp_path):
    run = RunDir(tmp_path)
    assert run.stage("base", 3, 2, "prune").root == tmp_path / "base" / "seed3" / "02-prune"
    assert run.stage("base", 3, 2, "prune", layout="single").root == tmp_path / "02-prune"
    assert run.network(1).model == tmp_path / "net1" / "model"
    assert run.round(2).checkpoint == tmp_path / "round2" / "checkpoint.pt"
    for k in (10, 2, 0):
        run.network(k).root.mkdir(parents=True)
    (tmp_path / "net5").symlink_to(tmp_path / "net0")  # a link is never one of the networks
    assert [d.root.name for d in run.networks()] == ["net0", "net2", "net10"]  # numeric order, not text order


def test_the_metrics_reader_skips_only_a_torn_last_line(tmp_path):
    run = RunDir(tmp_path)
    run.metrics.write_text('{"epoch": 0}\n{"epoch": 1}\n{"epo')
    assert run.read_metrics() == [{"epoch": 0}, {"epoch": 1}]
    run.metrics.write_text('{"epoch": 0}\nnot json\n{"epoch": 2}\n')
    with pytest.raises(CorruptFileError, match="line 2 is not a JSON record"):
        run.read_metrics()
    run.metrics.write_text('{"epoch": 0}\n[1, 2]\n')
    with pytest.raises(CorruptFileError, match="line 2 is not a JSON record"):
        run.read_metrics()
    assert RunDir(tmp_path / "none").read_metrics() == []


@pytest.mark.parametrize("name", ["../x", "/abs", "a/b", ".hidden", "x\x00y", "n" * 101, "", "a b", 5, None])
def test_names_that_are_not_one_safe_directory_name_are_refused(name):
    with pytest.raises(ConfigError, match="is not valid"):
        check_name("stage", name)


@pytest.mark.parametrize("name", ["train", "prune-2", "graft2_same-lr", "a.b", "x" * 100, "0"])
def test_ordinary_names_pass(name):
    assert check_name("arm", name) == name


def test_links_inside_are_found_without_following_them(tmp_path):
    run = RunDir(tmp_path / "run")
    (tmp_path / "run" / "a" / "b").mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "deep").mkdir()
    run.check_no_links()
    (tmp_path / "run" / "a" / "b" / "link").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    assert list(run.links()) == [tmp_path / "run" / "a" / "b" / "link"]
    with pytest.raises(ConfigError, match="contains the symlink .*link"):
        run.check_no_links()


def _pipeline_with_model(tmp_path):
    torch.manual_seed(0)
    root = tmp_path / "run"
    model_dir = root / "01-prune" / "model"
    prunus.save(prunus.create_model("lenet5", in_channels=1, width_mult=0.25), model_dir, input_shape=(1, 28, 28))
    (root / "recipe.yaml").write_text("stages: []\n")
    records = {"recipe": "x", "records": [{"arm": "main", "seed": 0, "stages": [{"model": "01-prune/model"}]}]}
    (root / "records.json").write_text(json.dumps(records))
    return root, model_dir


def test_a_command_run_directory_resolves_to_its_final_model(tmp_path):
    root, model_dir = _pipeline_with_model(tmp_path)
    assert resolve_model_dir(root) == model_dir
    assert resolve_model_dir(model_dir) == model_dir
    assert prunus.load(root).conv1.out_channels == prunus.load(model_dir).conv1.out_channels


def test_records_cannot_point_outside_the_run(tmp_path):
    root, _ = _pipeline_with_model(tmp_path)
    outside = tmp_path / "outside"
    prunus.save(prunus.create_model("lenet5", in_channels=1, width_mult=0.5), outside, input_shape=(1, 28, 28))
    for path in ("../outside", str(outside)):  # a crafted records.json names a model elsewhere
        records = {"records": [{"arm": "main", "seed": 0, "stages": [{"model": path}]}]}
        (root / "records.json").write_text(json.dumps(records))
        with pytest.raises(CorruptFileError, match="run directory"):
            resolve_model_dir(root)
