"""Method figures: WE, grafting, C-SGD and MFP numbers reduced from their logs, recorded by the stage,
printed by `prunus run` in a small table under each chain's stage table."""

from __future__ import annotations

import copy
import json
import re
import statistics
from collections import Counter

import pytest
import yaml

from prunus.cli import main
from prunus.methods.figures import describe, method_figures

ROWS = [
    {"we_filters": 3, "we_bn_channels": 1, "graft_invalid_0.1": 7, "graft_invalid_0.1_after": 5,
     "graft_alpha_mean": 0.25, "mfp_choice": "l1", "mfp_criterion": "l1", "mfp_regrown": 2},
    {"we_filters": 0, "we_bn_channels": 4, "graft_invalid_0.1": 5, "graft_invalid_0.1_after": 4,
     "graft_alpha_mean": 0.5, "mfp_criterion": "l1", "mfp_regrown": 0},
    {"we_filters": 6, "we_bn_channels": 0, "graft_invalid_0.1": 4, "graft_invalid_0.1_after": 1,
     "graft_alpha_mean": 0.75, "mfp_choice": "fpgm", "mfp_criterion": "fpgm", "mfp_regrown": 5},
]  # fmt: skip


def test_method_figures_are_totals_first_last_and_counts_of_the_log():
    figs = method_figures(ROWS)
    assert figs == {
        "we_filters_evolved": 9,  # every epoch's count, summed
        "we_bn_channels_evolved": 5,
        "we_epochs": 3,
        "graft_alpha_mean": pytest.approx(0.5),
        "graft_invalid_0.1_first": 7,  # before the first graft
        "graft_invalid_0.1_last": 1,  # after the last
        "mfp_choices": {"l1": 1, "fpgm": 1},
        "mfp_criterion_final": "fpgm",
        "mfp_regrown_total": 7,
    }
    assert dict(describe({**figs, "csgd_max_logit_diff": 0.00712, "csgd_trained_acc": 0.5, "csgd_merged_acc": 0.25})) == {
        "we": "9 filters evolved (+5 BN channels) in 3 evolutions",
        "graft": "alpha 0.500 (mean); invalid filters (L1 < 0.1) 7 -> 1",
        "csgd": "max logit diff 0.00712 at the merge; test acc 50.00% -> 25.00%",
        "mfp": "chose l1 x1, fpgm x1, ends on fpgm; 7 channels regrown",
    }  # fmt: skip
    assert method_figures([{"train_loss": 1.0}]) == {}
    assert describe({"acc": 0.5, "macs": 10}) == []


RECIPE = {
    "version": 1,
    "name": "figures",
    "model": {"name": "resnet20", "width_mult": 0.25},
    "data": {"name": "synthetic", "num_samples": 128, "image_size": 8, "channels": 1, "num_classes": 4,
             "val_size": 32, "batch_size": 32},
    "train": {"threads": 1, "device": "cpu", "epochs": 2},
    "stages": [
        {"stage": "train", "name": "baseline"},
        {"stage": "csgd", "width": 0.5, "train": {"epochs": 1}},
        {"stage": "finetune", "name": "mfp",
         "methods": [{"name": "mfp", "args": {"rate": 0.25, "switch_interval": 1, "holdout_size": 16}}]},
    ],
    "arms": {
        "we": {"stages": ["baseline"], "set": {"baseline.methods": [{"name": "we", "args": {"ratio_conv": 0.5,
                                                                                            "lam": 1.0}}]}},
        "graft": {"stages": ["baseline"], "set": {"baseline.networks": 2,
                                                  "baseline.methods": [{"name": "graft", "args": {"variant": "ring"}}]}},
        "main": {},
    },
}  # fmt: skip


def _table_row(out: str, first: str, second: str) -> str:
    """The text of a row of a printed methods table whose first two cells are `first`, `second`."""
    in_methods = False
    for line in out.splitlines():
        cells = [c.strip() for c in re.split(r"[│┃|]", line) if c.strip()]
        if "what it did" in cells or "test acc" in cells:  # a table's header row: which table follows
            in_methods = "what it did" in cells
        elif in_methods and cells[:2] == [first, second]:
            return " ".join(cells[2:])
    raise AssertionError(f"no row {first} | {second} in:\n{out[-3000:]}")


def test_prunus_run_prints_what_each_method_did_from_the_stage_records(tmp_path, capsys):
    recipe = tmp_path / "figures.yaml"
    recipe.write_text(yaml.safe_dump(copy.deepcopy(RECIPE)))
    out = tmp_path / "run"
    assert main(["run", str(recipe), "--out", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out

    def log(path):
        return [json.loads(line) for line in (out / path / "metrics.jsonl").read_text().splitlines()]

    def record(path):
        return json.loads((out / path / "stage.json").read_text())["metrics"]

    we = log("we/seed0/01-baseline")
    evolved = sum(r.get("we_filters", 0) for r in we)  # epoch 0 has no evolution: WE runs at the next epoch's start
    assert evolved > 0  # the setting evolves filters: a summed count is tested, not zeros
    assert record("we/seed0/01-baseline")["we_filters_evolved"] == evolved
    bn = sum(r.get("we_bn_channels", 0) for r in we)
    bn_text = f" (+{bn} BN channels)" if bn else ""
    evolutions = sum(1 for r in we if "we_filters" in r)  # 2 epochs: one evolution, at the start of epoch 2
    assert evolutions == 1
    assert _table_row(printed, "baseline", "we") == f"{evolved} filters evolved{bn_text} in 1 evolution"

    graft = log("graft/seed0/01-baseline/net0")  # network 0 goes on: its log is the stage's
    grafted = [r for r in graft if "graft_alpha_mean" in r]  # grafts happen at the start of epochs 2, 3, ...
    assert len(grafted) == len(graft) - 1
    alpha = statistics.fmean(r["graft_alpha_mean"] for r in grafted)
    first, last = grafted[0]["graft_invalid_0.1"], grafted[-1]["graft_invalid_0.1_after"]
    assert _table_row(printed, "baseline", "graft").startswith(
        f"alpha {alpha:.3f} (mean); invalid filters (L1 < 0.1) {first} -> {last}"
    )

    csgd = json.loads((out / "main/seed0/02-csgd/summary.json").read_text())["metrics"]
    assert _table_row(printed, "csgd", "csgd") == (
        f"max logit diff {csgd['csgd_max_logit_diff']:.3g} at the merge; test acc "
        f"{100 * csgd['csgd_trained_acc']:.2f}% -> {100 * csgd['csgd_merged_acc']:.2f}%"
    )

    mfp = log("main/seed0/03-mfp")
    choices = Counter(r["mfp_choice"] for r in mfp if "mfp_choice" in r)
    assert sum(choices.values()) == 2  # switch_interval 1: a choice every epoch
    assert _table_row(printed, "mfp", "mfp").startswith(
        "chose " + ", ".join(f"{k} x{v}" for k, v in choices.most_common()) + f", ends on {mfp[-1]['mfp_criterion']}"
    )
