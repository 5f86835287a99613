"""seeds x arms in one recipe: paired records, a shared baseline, statistics from the library."""

from __future__ import annotations

import json
import statistics

import pytest

from prunus.pipeline import parse_recipe, read_record, run_pipeline
from prunus.report.render import arm_rows
from prunus.report.stats import paired_difference, summarise_records, summary, t95


def test_seeds_times_arms_make_paired_records_with_one_baseline_training(tiny_recipe, tmp_path):
    tiny_recipe["stages"] = [
        {"stage": "train", "name": "baseline", "train": {"epochs": 1}},
        {"stage": "prune", "remove_channels": 0.5},
        {"stage": "report"},
    ]
    tiny_recipe["seeds"] = [0, 1]
    tiny_recipe["arms"] = {
        "baseline": {"stages": ["baseline", "report"]},
        "l1": {},
        "l2": {"set": {"prune.criterion": "l2"}},
    }
    out = tmp_path / "sweep"
    lines: list[str] = []
    summary_ = run_pipeline(parse_recipe(tiny_recipe), out, progress=False, echo=lines.append)
    records = json.loads((out / "records.json").read_text())["records"]
    assert sorted((r["arm"], r["seed"]) for r in records) == [(a, s) for a in ("baseline", "l1", "l2") for s in (0, 1)]
    # the pruned arms reuse the baseline arm's training of the same seed instead of training again
    for arm in ("l1", "l2"):
        for seed in (0, 1):
            rec = read_record(out / arm / f"seed{seed}" / "01-baseline")
            assert rec["same_as"] == f"baseline/seed{seed}/01-baseline"
    assert sum("same as" in line for line in lines) == 4
    # different seeds give different baselines: the pairing is by seed
    accs = {(r["arm"], r["seed"]): r["acc"] for r in summary_.records}
    base = read_record(out / "baseline" / "seed0" / "01-baseline")["metrics"]["final_test_acc"]
    assert accs[("baseline", 0)] == base
    stats = summarise_records(summary_.records, ["acc"], baseline="baseline")
    diffs = [accs[("l1", s)] - accs[("baseline", s)] for s in (0, 1)]
    assert stats["l1"]["acc_diff"]["mean"] == pytest.approx(statistics.fmean(diffs))
    assert stats["l1"]["acc_diff"]["n"] == 2
    assert stats["l1"]["macs"] < stats["baseline"]["macs"]
    rows = {r[0]: r for r in arm_rows(summary_.records, "baseline")}
    assert rows["l1"][1] == "2"
    assert rows["baseline"][3] == "—"
    assert "Arms over seeds" in (out / "summary.md").read_text()
    # the report reads a shared stage's epochs from the arm that ran it: every arm's curve starts with them
    from prunus.report.collect import collect

    for curve in collect(out).curves:
        log = (out / "baseline" / f"seed{curve.seed}" / "01-baseline" / "metrics.jsonl").read_text().splitlines()
        assert [(r["stage"], r["test_acc"]) for r in curve.rows] == [
            ("baseline", json.loads(x)["test_acc"]) for x in log
        ]


def test_summary_and_paired_difference_match_hand_computation():
    s = summary([0.80, 0.82, 0.87])
    assert s["mean"] == pytest.approx(0.83)
    assert s["std"] == pytest.approx(0.036055512754639)
    d = paired_difference({0: 0.90, 1: 0.80, 2: 0.85}, {0: 0.88, 1: 0.79, 2: 0.80, 3: 0.5})
    # differences 0.02, 0.01, 0.05: mean 0.02667, std 0.02082, half width t(2) * std / sqrt(3)
    half = 4.303 * 0.0208166599946613 / 3**0.5
    assert d["n"] == 3
    assert d["mean"] == pytest.approx(0.0266666667)
    assert (d["low"], d["high"]) == pytest.approx((0.0266666667 - half, 0.0266666667 + half))
    assert paired_difference({0: 1.0}, {0: 0.5})["low"] is None  # one pair: no interval
    assert summary([])["mean"] is None
    assert summary([1.0])["std"] is None
    assert t95(1) == 12.706
    assert t95(29) == 2.086
    assert t95(1000) == 1.980
    with pytest.raises(ValueError, match="degrees of freedom"):
        t95(0)
