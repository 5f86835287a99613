"""`plan_widths`: the widths a budget gives the training-time methods are the ones `prune` would cut, and
they meet the budget whichever channels of each group a method ends up removing."""

from __future__ import annotations

import copy
import functools
import json
import math

import pytest
import torch

from prunus.errors import ConfigError
from prunus.measure import count
from prunus.models import create_model
from prunus.pruning import plan_widths, prune
from prunus.structure import build_groups, lowest_channels, remove_

X = torch.zeros(1, 1, 28, 28)
SHAPE = (1, 28, 28)


def _model(name: str, width: float = 0.25):
    torch.manual_seed(0)
    return create_model(name, num_classes=10, in_channels=1, width_mult=width).eval()


def _cut_first(model, widths):
    """A copy of `model` keeping `widths[key]` channels per group, dropping the LOWEST indices (not the planner's)."""
    pruned = copy.deepcopy(model)
    for g in build_groups(pruned, X):
        if g.prunable and widths[g.key] < g.num_channels:
            k = g.num_channels - widths[g.key]
            remove_(pruned, g, lowest_channels(g, torch.arange(g.num_channels, dtype=torch.float), k))
    return pruned


@pytest.mark.parametrize("budget", ["keep_macs", "keep_params"])
@pytest.mark.parametrize("name", ["resnet20", "mobilenetv2"])
def test_planned_widths_meet_the_budget_whichever_channels_go(name, budget):
    model = _model(name)
    dense = count(model, SHAPE)
    plan = plan_widths(model, X, **{budget: 0.5})
    assert plan.budget == budget
    assert plan.requested == 0.5
    assert 0.475 <= plan.achieved <= 0.5
    assert set(plan.widths) == {g.key for g in build_groups(model, X) if g.prunable}
    assert any(plan.widths[k] < plan.dense_widths[k] for k in plan.widths)
    after = count(_cut_first(model, plan.widths), SHAPE)
    counted = after.macs / dense.macs if budget == "keep_macs" else after.params / dense.params
    assert counted == pytest.approx(plan.achieved, abs=1e-6)  # the prediction is the real count
    assert 0.475 <= counted <= 0.5
    assert plan.macs_ratio == pytest.approx(after.macs / dense.macs, abs=1e-6)
    assert plan.params_ratio == pytest.approx(after.params / dense.params, abs=1e-6)
    assert count(model, SHAPE) == dense  # planning never edits the model


@pytest.mark.parametrize("global_pruning", [False, True])
def test_plan_is_what_prune_cuts(global_pruning):
    model = _model("resnet20")
    plan = plan_widths(model, X, keep_macs=0.4, round_to=2, global_pruning=global_pruning)
    _, report = prune(copy.deepcopy(model), X, keep_macs=0.4, round_to=2, global_pruning=global_pruning)
    assert plan.widths == {k: w[1] for k, w in report.widths.items()}
    assert plan.macs_ratio == pytest.approx(report.achieved_macs_ratio)
    assert plan.params_ratio == pytest.approx(report.achieved_params_ratio)
    assert all(w % 2 == 0 or w == plan.dense_widths[k] for k, w in plan.widths.items())
    json.dumps(plan.to_dict())


def test_latency_plan_uses_the_runtimes_latency_table(tmp_path, monkeypatch):
    from prunus.pruning import latency

    calls = []

    def by_params(module, shape, runtime, batch, threads):  # a deterministic "timer"; no timing asserted
        calls.append((runtime, batch))
        return 0.01 + 1e-3 * sum(p.numel() for p in module.parameters())

    monkeypatch.setattr(latency, "build_table", functools.partial(latency.build_table, measure=by_params))
    # and the side-by-side check (real timings on a loaded machine could miss the budget)
    monkeypatch.setattr(latency, "measured_ratio", lambda *args, **kwargs: 0.69)
    model = _model("resnet20")
    plan = plan_widths(model, X, keep_latency=0.7, runtime="torch", latency_batch=2, threads=1, cache_dir=tmp_path)
    assert calls
    assert set(calls) == {("torch", 2)}
    (table,) = tmp_path.iterdir()  # measured once and cached, keyed by what was measured
    data = json.loads(table.read_text())
    assert (data["runtime"], data["batch"], data["threads"]) == ("torch", 2, 1)
    assert (plan.runtime, plan.latency_batch) == ("torch", 2)
    assert plan.estimated_latency_ratio <= 0.7
    assert plan.latency_ratio == 0.69
    assert math.isfinite(plan.latency_ratio)
    assert plan.achieved == plan.latency_ratio
    assert any(plan.widths[k] < plan.dense_widths[k] for k in plan.widths)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({}, "give exactly one of keep_macs, keep_params, keep_latency"),
        ({"keep_macs": 0.5, "keep_params": 0.5}, "give exactly one of .* got keep_macs, keep_params"),
        ({"keep_macs": 0.0}, r"keep_macs=0.0 is out of range"),
        ({"keep_params": 1.5}, r"keep_params=1.5 is out of range"),
        ({"keep_macs": float("nan")}, "keep_macs"),
        ({"keep_macs": 0.5, "round_to": 0}, "round_to must be an integer from 1 to 4096"),
    ],
)
def test_bad_plan_arguments_raise(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        plan_widths(_model("resnet20"), X, **kwargs)
