"""The stage contract, for every registered stage (as tests/methods/test_contract.py is for methods).

Every stage kind runs with the example settings it registered (`register_stage(..., example=...)`)
in one chain on a tiny model and synthetic data. Per kind: a valid completion record; a model that
loads and runs where the stage makes one; a rerun skips it; a stage whose record is gone (killed
after its work) is redone in place with the same model; an unknown key is named in the error. A
stage registered tomorrow is in the chain the day it lands.
"""

from __future__ import annotations

import copy
import shutil

import pytest
import torch

import prunus
from prunus.errors import ConfigError
from prunus.formats.run_dir import RunDir
from prunus.pipeline import get_stage, list_stages, parse_recipe, run_pipeline
from prunus.pipeline.runner import stage_hash

TOP = {
    "version": 1,
    "name": "contract",
    "model": {"name": "lenet5", "width_mult": 0.5},
    "data": {"name": "synthetic", "num_samples": 64, "image_size": 28, "channels": 1, "val_size": 16,
             "batch_size": 32},
    "train": {"threads": 1},
}  # fmt: skip


def _ordered_kinds() -> list[str]:
    """Stages that build a model first, then the ones that read one, then the run-level ones (the report)."""
    kinds = list_stages()
    first = [k for k in kinds if not get_stage(k).needs_model and get_stage(k).scope == "chain"]
    middle = [k for k in kinds if get_stage(k).needs_model and get_stage(k).scope == "chain"]
    last = [k for k in kinds if get_stage(k).scope == "run"]
    return first + middle + last


KINDS = _ordered_kinds()


def _recipe() -> dict:
    stages = [{"stage": kind, "name": _name(kind), **copy.deepcopy(get_stage(kind).example)} for kind in KINDS]
    return {**copy.deepcopy(TOP), "stages": stages}


def _name(kind: str) -> str:
    return f"{kind}-stage"  # a stage may not be named like a recipe key ("train")


def _quiet(line: str) -> None:
    pass


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    plan = parse_recipe(_recipe())
    root = tmp_path_factory.mktemp("contract") / "run"
    first = run_pipeline(plan, root, progress=False, echo=_quiet)
    return plan, RunDir(root), first


def _stage_dir(run: RunDir, kind: str) -> RunDir:
    if get_stage(kind).scope == "run":
        return run.run_stage(_name(kind))
    return run.stage("main", 0, KINDS.index(kind) + 1, _name(kind))


def test_every_stage_has_example_settings_a_recipe_accepts():
    for kind in KINDS:
        assert isinstance(get_stage(kind).example, dict), kind
    plan = parse_recipe(_recipe())
    assert [s.kind for s in plan.arms["main"]] + [s.kind for s in plan.final] == KINDS


@pytest.mark.parametrize("kind", KINDS)
def test_each_stage_leaves_a_valid_record(chain, kind):
    plan, run, first = chain
    assert first.ran == len(KINDS)
    record = _stage_dir(run, kind).read_record()  # checked by formats.header: kind, version, typed fields
    assert record is not None
    assert (record["kind"], record["name"]) == (kind, _name(kind))
    if get_stage(kind).scope == "chain":  # the hash chains through the input stage's hash
        assert record["hash"] == _expected_hash(plan, kind)
    for role, rel in record["files"].items():
        assert (_stage_dir(run, kind).root / rel).is_file(), (kind, role)


def _expected_hash(plan, kind: str) -> str:
    hashes: dict[str, str] = {}
    for s in plan.arms["main"]:
        hashes[s.name] = stage_hash(s, 0, hashes.get(s.input) if s.input else None)
    return hashes[_name(kind)]


@pytest.mark.parametrize("kind", [k for k in KINDS if get_stage(k).makes_model])
def test_each_model_making_stage_leaves_a_model_that_loads_and_runs(chain, kind):
    _, run, _ = chain
    record = _stage_dir(run, kind).read_record()
    model = prunus.load(run.at(record["model"]).root)
    with torch.no_grad():
        out = model(torch.zeros(2, 1, 28, 28))
    assert out.shape == (2, 10)
    assert torch.isfinite(out).all()


def test_a_rerun_skips_every_stage(chain):
    plan, run, _ = chain
    again = run_pipeline(plan, run.root, progress=False, echo=_quiet)
    assert (again.ran, again.skipped) == (0, len(KINDS))


@pytest.mark.parametrize("kind", [k for k in KINDS if get_stage(k).scope == "chain"])
def test_a_stage_killed_after_its_work_is_redone_in_place(chain, kind, tmp_path):
    plan, run, _ = chain
    copy_root = tmp_path / "run"
    shutil.copytree(run.root, copy_root)
    again = RunDir(copy_root)
    where = _stage_dir(again, kind)
    record = where.read_record()
    where.record.unlink()  # the kill came after the work, before the record
    redone = run_pipeline(plan, copy_root, progress=False, echo=_quiet)
    assert redone.ran == 1  # only this stage: the others' records still hold the same hashes
    new = where.read_record()
    assert new["hash"] == record["hash"]
    if get_stage(kind).makes_model and kind not in ("train", "finetune", "csgd"):  # deterministic one-shot stages
        old_model, new_model = (prunus.load(run.at(r["model"]).root) for r in (record, new))
        for (k, a), (_, b) in zip(old_model.state_dict().items(), new_model.state_dict().items(), strict=True):
            assert torch.equal(a, b), (kind, k)


@pytest.mark.parametrize("kind", KINDS)
def test_an_unknown_key_is_named_in_the_error(kind):
    recipe = _recipe()
    recipe["stages"][KINDS.index(kind)]["no_such_key"] = 1
    with pytest.raises(ConfigError, match=rf"stage '{_name(kind)}' \({kind}\).*no_such_key"):
        parse_recipe(recipe)
