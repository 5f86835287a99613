"""A stage's result belongs to its inputs: arms with different upstream stages never share a downstream
result, and the run-level report is rendered again when a seed or an arm joins the run."""

from __future__ import annotations

import json

import torch

from prunus.formats import load
from prunus.pipeline import parse_recipe, read_record, run_pipeline


def _recipe(tiny_recipe, seeds, arms):
    tiny_recipe["stages"] = [
        {"stage": "train", "name": "baseline", "train": {"epochs": 1}},
        {"stage": "prune", "remove_channels": 0.5},
        {"stage": "report"},
    ]
    tiny_recipe["seeds"] = seeds
    tiny_recipe["arms"] = arms
    return parse_recipe(tiny_recipe)


def _weights(out, record):
    return load(out / record["model"]).state_dict()


def test_arms_with_different_upstream_stages_do_not_share_a_downstream_result(tiny_recipe, tmp_path):
    out = tmp_path / "run"
    # the two prune stages have the same config; only the trainings before them differ
    plan = _recipe(tiny_recipe, [0], {"a": {}, "b": {"set": {"baseline.train.lr": 0.3}}})
    run_pipeline(plan, out, progress=False, echo=lambda _: None)
    pruned = {arm: read_record(out / arm / "seed0" / "02-prune") for arm in ("a", "b")}
    assert pruned["b"].get("same_as") is None
    assert pruned["a"]["model"] != pruned["b"]["model"]
    wa, wb = _weights(out, pruned["a"]), _weights(out, pruned["b"])
    assert any(not torch.equal(wa[k], wb[k]) for k in wa)
    # (the premise: the two trainings differ)
    trained_b = _weights(out, read_record(out / "b" / "seed0" / "01-baseline"))
    trained_a = _weights(out, read_record(out / "a" / "seed0" / "01-baseline"))
    assert any(not torch.equal(trained_a[k], trained_b[k]) for k in trained_a)


def _arm_table(summary_md: str) -> dict[str, list[str]]:
    """The "Arms over seeds" rows of summary.md, by arm."""
    part = summary_md.split("## Arms over seeds", 1)[1]
    rows = [line.strip("|").split("|") for line in part.splitlines() if line.startswith("| ") and "---" not in line]
    return {cells[0].strip(): [c.strip() for c in cells[1:]] for cells in rows[1:]}


def test_the_report_is_rendered_again_when_a_seed_or_an_arm_is_added(tiny_recipe, tmp_path):
    import copy

    out = tmp_path / "run"
    base = copy.deepcopy(tiny_recipe)
    arms = {"a": {}, "b": {"set": {"prune.remove_channels": 0.25}}}
    run_pipeline(_recipe(copy.deepcopy(base), [0], arms), out, progress=False, echo=lambda _: None)
    assert _arm_table((out / "summary.md").read_text())["a"][0] == "1"

    run_pipeline(_recipe(copy.deepcopy(base), [0, 1], arms), out, progress=False, echo=lambda _: None)
    text = (out / "summary.md").read_text()
    assert "## Stages: arm a, seed 1" in text
    records = json.loads((out / "records.json").read_text())["records"]
    accs = [r["acc"] for r in records if r["arm"] == "a"]
    assert len(accs) == 2
    row = _arm_table(text)["a"]
    assert row[0] == "2"
    assert row[1].startswith(f"{100 * sum(accs) / 2:.2f}%")

    arms["c"] = {"set": {"prune.remove_channels": 0.75}}
    run_pipeline(_recipe(copy.deepcopy(base), [0, 1], arms), out, progress=False, echo=lambda _: None)
    text = (out / "summary.md").read_text()
    assert _arm_table(text)["c"][0] == "2"
    assert "<tr><td>c</td><td>2</td>" in (out / "report.html").read_text()
