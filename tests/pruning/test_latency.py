"""Latency budgets: the table cache is keyed by what was measured, and the chooser follows the table.

No assertion here depends on a timing: tables are injected or measured by a deterministic fake.
"""

from __future__ import annotations

import itertools
import json
import math
import os

import pytest
import torch
from torch import nn

from prunus.errors import BudgetNotMetWarning, ConfigError
from prunus.measure import count
from prunus.models import create_model
from prunus.pruning import prune
from prunus.pruning.costs import CostModel
from prunus.pruning.latency import (
    LatencyTable,
    build_table,
    cache_key,
    choose_cut,
    importance_loss,
    layer_signatures,
    machine_id,
    measured_ratio,
    next_target,
)
from prunus.pruning.widths import kept_widths
from prunus.structure import build_groups

X = torch.randn(1, 3, 8, 8, generator=torch.Generator().manual_seed(0))


def _net() -> nn.Module:
    """stem (ignored) -> a (group "1") -> b (group "4") -> head conv (ignored) -> pool -> fc."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.Conv2d(8, 16, 3, padding=1),
        nn.ReLU(),
        nn.BatchNorm2d(16),
        nn.Conv2d(16, 16, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(16, 8, 1),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 4),
    ).eval()


IGNORED = ["0", "6", "9"]


def _setup(scores=None):
    net = _net()
    groups = [g for g in build_groups(net, X, IGNORED) if g.prunable]
    assert [g.key for g in groups] == ["1", "4"]
    scores = scores or {g.key: torch.ones(g.num_channels) for g in groups}
    return net, groups, scores, CostModel(net, groups, scores, count(net, (3, 8, 8)))


def _table(fn) -> LatencyTable:
    """A hand-made table: conv `name` takes fn(name, cin, cout) ms on a 4/8/12/16 grid of each side."""
    sigs = layer_signatures(_net(), X)
    layers = {}
    for name, sig in sigs.items():
        ins = sorted({max(1, round(sig["in"] * f)) for f in (1, 0.75, 0.5, 0.25)})
        outs = sorted({max(1, round(sig["out"] * f)) for f in (1, 0.75, 0.5, 0.25)})
        layers[name] = {"in": ins, "out": outs, "ms": [[fn(name, i, o) for o in outs] for i in ins]}
    return LatencyTable("hand", "torch", 2, 1, 10.0, layers)


def _flat_except(heavy: str):
    return lambda name, cin, cout: (10.0 * cout / 16) if name == heavy else 1.0


@pytest.mark.parametrize(("heavy", "cut_group", "kept_group"), [("1", "1", "4"), ("4", "4", "1")])
def test_chooser_cuts_where_the_table_says_time_goes(heavy, cut_group, kept_group):
    net, groups, scores, costs = _setup()
    table = _table(_flat_except(heavy))
    dense = sum(table.layer_ms(n, t["in"][-1], t["out"][-1]) for n, t in table.layers.items())
    cut, est = choose_cut(groups, costs, scores, table, 0.8 * table.dense_ms)
    assert cut[cut_group] > 0
    assert cut[kept_group] == 0  # cutting it saves nothing in this table
    assert est <= 0.8 * table.dense_ms
    assert dense > 0


def test_chooser_trades_latency_against_importance():
    # equal time per channel in both groups; group "1" has a few near-useless channels: they go first
    s1 = torch.ones(16)
    s1[:4] = 0.01
    net, groups, scores, costs = _setup({"1": s1, "4": torch.ones(16)})
    table = _table(lambda name, cin, cout: cout / 16 if name in ("1", "4") else 1.0)
    cut, _ = choose_cut(groups, costs, scores, table, 0.85 * table.dense_ms)
    assert cut["1"] >= 4
    assert costs.channels("1", 4) == [0, 1, 2, 3]


def test_chooser_respects_round_to_and_says_when_unreachable():
    net, groups, scores, costs = _setup()
    table = _table(_flat_except("1"))
    cut, _ = choose_cut(groups, costs, scores, table, 0.7 * table.dense_ms, round_to=8)
    assert cut["1"] == 8
    assert all((16 - k) % 8 == 0 for k in cut.values())
    cut, est = choose_cut(groups, costs, scores, table, 0.01 * table.dense_ms)
    assert cut is None
    assert est > 0.01 * table.dense_ms


def test_chooser_jumps_to_the_width_where_a_flat_runtime_drops():
    # conv "1" costs 10 ms at any width above 8 and 1 ms at 8 (a runtime blocking channels by 8):
    # one-channel steps from 16 save nothing; the chooser must see the drop at 8 and take it,
    # rather than strip group "4" (which saves little) first
    net, groups, scores, costs = _setup()
    times = {"1": lambda cin, cout: 10.0 if cout > 8 else 1.0, "4": lambda cin, cout: 0.5 * cout / 16}
    table = _table(lambda name, cin, cout: times[name](cin, cout) if name in times else 1.0)
    cut, est = choose_cut(groups, costs, scores, table, 0.8 * table.dense_ms)
    assert cut == {"1": 8, "4": 0}
    assert est <= 0.8 * table.dense_ms


def _macs_table(model: nn.Module, x: torch.Tensor) -> LatencyTable:
    """Every conv's time proportional to its MACs, on the 1/4-step grid."""
    layers = {}
    for name, sig in layer_signatures(model, x).items():
        ins = sorted({max(1, round(sig["in"] * f)) for f in (1, 0.75, 0.5, 0.25)})
        outs = sorted({max(1, round(sig["out"] * f)) for f in (1, 0.75, 0.5, 0.25)})
        pixels = sig["hw"][0] * sig["hw"][1] / sig["stride"][0] ** 2
        layers[name] = {"in": ins, "out": outs, "ms": [[1e-4 * i * o * pixels for o in outs] for i in ins]}
    return LatencyTable("macs", "torch", 2, 1, 10.0, layers)


@pytest.mark.parametrize("budget", [0.7, 0.5])
def test_chooser_does_not_collapse_a_residual_stream(budget):
    # A residual stream's channel saves time in every block it couples, so charging it like one
    # filter cut it to 1-2 channels of 16 before touching anything else (measured: ResNet-56 lost
    # 45 points this way). Charged per filter, with equal scores no group loses more than 3/4.
    torch.manual_seed(0)
    net = create_model("resnet20", width_mult=0.5, in_channels=1).eval()
    x = torch.randn(1, 1, 28, 28)
    groups = [g for g in build_groups(net, x) if g.prunable]
    scores = {g.key: torch.ones(g.num_channels) for g in groups}
    costs = CostModel(net, groups, scores, count(net, (1, 28, 28)))
    streams = [g.key for g in groups if sum(side == "out" for (_, side), _ in costs.layer_cuts(g.key)) > 1]
    assert streams  # the test needs coupled groups
    cut, est = choose_cut(groups, costs, scores, _macs_table(net, x), budget * 10.0)
    assert est <= budget * 10.0
    kept = {g.key: (g.num_channels - cut[g.key]) / g.num_channels for g in groups}
    assert min(kept.values()) >= 0.25, kept
    assert min(kept[k] for k in streams) >= min(v for k, v in kept.items() if k not in streams), kept


def _reference_cut(groups, costs, scores, table, target_ms):
    """The greedy spelled out: every group's every candidate re-priced from scratch at every step."""
    from prunus.pruning.latency import _candidate_widths, _Estimator, _filters, _table_widths

    est = _Estimator(table, costs)
    loss = {g.key: importance_loss(scores[g.key], costs.order[g.key], _filters(costs, g.key)) for g in groups}
    cut = {g.key: 0 for g in groups}
    while est.total(costs.removed(cut)) > target_ms:
        best = None
        for g in groups:
            for width in _candidate_widths(kept_widths(g.num_channels), g.num_channels - cut[g.key],
                                           _table_widths(table, costs, g.key)):  # fmt: skip
                trial = {**cut, g.key: g.num_channels - width}
                now, then = costs.removed(cut), costs.removed(trial)
                saved = sum(est.layer(n, now) - est.layer(n, then) for n in table.layers)
                lost = loss[g.key][trial[g.key]] - loss[g.key][cut[g.key]]
                priority = (max(saved, 0.0) / (lost + 1e-12), -lost)
                if best is None or priority > best[0]:
                    best = (priority, trial)
        if best is None:
            return None
        cut = best[1]
    return cut


@pytest.mark.parametrize("budget", [0.8, 0.5, 0.3])
def test_chooser_reprices_every_group_a_step_touches(budget):
    # choose_cut re-prices only the groups sharing a layer with the group just cut; on a residual
    # net (streams and inner groups share every block's convs) it must equal the full greedy
    torch.manual_seed(0)
    net = create_model("resnet20", width_mult=0.5, in_channels=1).eval()
    x = torch.randn(1, 1, 28, 28)
    groups = [g for g in build_groups(net, x) if g.prunable]
    scores = {g.key: torch.rand(g.num_channels, generator=torch.Generator().manual_seed(1)) for g in groups}
    costs = CostModel(net, groups, scores, count(net, (1, 28, 28)))
    table = _macs_table(net, x)
    cut, _ = choose_cut(groups, costs, scores, table, budget * 10.0)
    assert cut == _reference_cut(groups, costs, scores, table, budget * 10.0)
    assert sum(cut.values()) > 0


def test_importance_loss_is_relative_logarithmic_and_charged_per_filter():
    s = torch.tensor([0.0, 1.0, 1.0, 2.0])
    order = [0, 1, 2, 3]
    one = importance_loss(s, order, 1)
    assert one[0] == 0.0
    assert one == pytest.approx(importance_loss(7.5 * s, order, 1))  # scale-free
    assert importance_loss(s, order, 3) == pytest.approx([3 * v for v in one])  # per filter
    assert all(b > a for a, b in itertools.pairwise(one))  # every channel costs something, even a dead one
    # relative scores (s / mean + 1e-3) = .001, 1.001, 1.001, 2.001: M_k = 4.004, 4.003, 3.002, 2.001
    assert one[1:4] == pytest.approx([math.log(4.004 / 4.003), math.log(4.004 / 3.002), math.log(4.004 / 2.001)])
    assert math.isfinite(one[4])
    # equal scores: each halving costs the same
    flat = importance_loss(torch.ones(8), list(range(8)), 1)
    assert flat[4] == pytest.approx(flat[6] - flat[4]) == pytest.approx(math.log(2))


def test_cache_key_names_everything_measured():
    sigs = layer_signatures(_net(), X)
    machine = machine_id()
    base = cache_key(sigs, "onnxruntime", 64, 1, machine)
    assert base == cache_key(json.loads(json.dumps(sigs)), "onnxruntime", 64, 1, dict(machine))  # stable
    other_model = layer_signatures(_net()[:6], X)
    variants = [
        cache_key(sigs, "torch", 64, 1, machine),
        cache_key(sigs, "onnxruntime", 1, 1, machine),
        cache_key(sigs, "onnxruntime", 64, 2, machine),
        cache_key(sigs, "onnxruntime", 64, None, machine),
        cache_key(sigs, "onnxruntime", 64, 1, {**machine, "cpu": "another CPU"}),
        cache_key(sigs, "onnxruntime", 64, 1, {**machine, "node": "another-host"}),
        cache_key(sigs, "onnxruntime", 64, 1, {**machine, "onnxruntime": "0.0"}),
        cache_key(other_model, "onnxruntime", 64, 1, machine),
        cache_key(sigs, "onnxruntime", 64, 1, machine, [("1", "out")]),
        cache_key(layer_signatures(_net(), torch.randn(1, 3, 16, 16)), "onnxruntime", 64, 1, machine),  # resolution
    ]
    assert len({base, *variants}) == len(variants) + 1


def test_table_is_measured_once_then_read_from_the_cache(tmp_path):
    calls = []

    def fake(module, shape, runtime, batch, threads):  # deterministic "timer": MACs of one call
        calls.append((type(module).__name__, shape, runtime, batch, threads))
        return float(count(module, shape).macs) * batch / 1e6

    net = _net()
    variable = [("1", "out"), ("4", "in"), ("4", "out"), ("6", "in")]
    table = build_table(net, X, variable, runtime="torch", batch=2, threads=1, cache_dir=tmp_path, measure=fake)
    n = len(calls)
    assert n > 0
    files = list(tmp_path.iterdir())
    assert [f.name for f in files] == [f"{table.key}.json"]
    assert table.layers["4"]["in"] == [4, 8, 12, 16]
    assert table.layers["0"]["in"] == [3]  # the stem's input is never cut: one width timed
    assert table.layer_ms("1", 8, 8) == pytest.approx(fake(nn.Conv2d(8, 8, 3, padding=1), (8, 8, 8), "", 2, 1))

    def boom(*args):
        raise AssertionError("measured again although the table is cached")

    again = build_table(net, X, variable, runtime="torch", batch=2, threads=1, cache_dir=tmp_path, measure=boom)
    assert again == table
    build_table(net, X, variable, runtime="torch", batch=2, threads=2, cache_dir=tmp_path, measure=fake)
    assert len(list(tmp_path.iterdir())) == 2  # other threads: another table
    assert calls[-1][-1] == 2


@pytest.mark.parametrize(
    "content",
    [b'{"version": 1, "key": "', b"\xff\xfe binary", b"[1, 2]", b'{"version": 1, "key": "KEY", "bogus": 1}', None],
    ids=["torn", "binary", "list", "foreign_fields", "fifo"],
)
def test_a_cache_file_that_is_not_ours_is_measured_again_and_replaced(tmp_path, content):
    """The cache is disposable: a torn, binary, foreign or FIFO file is a miss, never a traceback or a hang."""
    net, variable = _net(), [("1", "out")]

    def fake(module, shape, runtime, batch, threads):
        return float(count(module, shape).macs) * batch / 1e6

    reference = build_table(net, X, variable, runtime="torch", batch=2, threads=1, cache_dir=tmp_path / "ref",
                            measure=fake)  # fmt: skip
    path = tmp_path / "cache" / f"{reference.key}.json"
    path.parent.mkdir()
    if content is None:
        os.mkfifo(path)
    else:
        path.write_bytes(content.replace(b"KEY", reference.key.encode()))
    table = build_table(net, X, variable, runtime="torch", batch=2, threads=1, cache_dir=tmp_path / "cache",
                        measure=fake)  # fmt: skip
    assert table == reference
    assert json.loads(path.read_text())["key"] == reference.key  # replaced by the measured table


def test_latency_budget_end_to_end_reports_measured_ratio(monkeypatch):
    net = _net()
    table = _table(lambda name, cin, cout: cin * cout / 256)
    _fake_measure(monkeypatch, lambda cut: 0.61)  # the real timing is checked below, without a bound
    net, report = prune(
        net, X, keep_latency=0.6, runtime="torch", latency_batch=2, threads=1, ignored_layers=IGNORED,
        latency_table=table,
    )  # fmt: skip
    assert report.requested_latency_ratio == 0.6
    assert report.runtime == "torch"
    assert report.latency_batch == 2
    assert report.achieved_latency_ratio == 0.61
    assert report.estimated_latency_ratio <= 0.6
    assert report.achieved_macs_ratio < 1
    assert net(X).shape == (1, 4)
    json.dumps(report.to_dict())


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"keep_latency": 0.5, "runtime": "tvm"}, "runtime='tvm' is not valid for a latency budget"),
        ({"keep_latency": 0.5, "latency_batch": 0}, "latency batch must be an integer >= 1"),
        ({"keep_latency": 0.5, "keep_macs": 0.5}, "give exactly one of"),
        ({"keep_latency": 0.0}, r"keep_latency=0.0 is out of range"),
    ],
)
def test_bad_latency_arguments_raise(kwargs, match, tmp_path):
    with pytest.raises(ConfigError, match=match):
        prune(_net(), X, ignored_layers=IGNORED, cache_dir=str(tmp_path), **kwargs)


def _fake_measure(monkeypatch, fn):
    """Replace the side-by-side timing with fn(cut); returns the list of cuts measured."""
    from prunus.pruning import latency

    seen = []

    def measured(model, example_inputs, cut, *args, **kwargs):
        seen.append(dict(cut))
        return fn(cut)

    monkeypatch.setattr(latency, "measured_ratio", measured)
    return seen


def test_unreachable_latency_budget_raises(monkeypatch):
    table = _table(lambda name, cin, cout: 1.0)  # nothing gets faster, by the table
    seen = _fake_measure(monkeypatch, lambda cut: 0.9)  # nor when measured
    with pytest.raises(ConfigError, match=r"keep_latency=0.5 cannot be reached on torch: .* measure 0.900"):
        prune(_net(), X, keep_latency=0.5, runtime="torch", ignored_layers=IGNORED, latency_table=table)
    assert seen == [{"1": 15, "4": 15}]  # the narrowest cut, measured once


def test_a_budget_the_table_thinks_unreachable_is_met_when_the_narrowest_cut_measures_fast_enough(monkeypatch):
    table = _table(lambda name, cin, cout: 1.0)  # the table sees no gain at all
    _fake_measure(monkeypatch, lambda cut: 0.48)
    net, report = prune(_net(), X, keep_latency=0.5, runtime="torch", ignored_layers=IGNORED, latency_table=table)
    assert report.achieved_latency_ratio == 0.48
    assert all(w[-1] == 1 for w in report.widths.values()), report.widths


def test_a_missed_latency_budget_warns(monkeypatch):
    table = _table(lambda name, cin, cout: cin * cout / 256)
    seen = _fake_measure(monkeypatch, lambda cut: 0.75)  # whatever the cut: a runtime that will not go faster
    with pytest.warns(BudgetNotMetWarning, match=r"keep_latency=0.6: the closest cut of 6 measured 0.750"):
        prune(_net(), X, keep_latency=0.6, runtime="torch", ignored_layers=IGNORED, latency_table=table)
    assert len(seen) == 6


def test_measured_ratio_times_the_pruned_copy_and_leaves_the_model_alone():
    net, groups, scores, costs = _setup()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    r = measured_ratio(net, X, {"1": 8, "4": 8}, costs, IGNORED, runtime="torch", batch=2, threads=1, repeats=3)
    assert math.isfinite(r)  # a real timing: no bound asserted
    assert r > 0
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())


def test_re_aiming_converges_on_a_runtime_that_does_not_follow_the_table(monkeypatch):
    # measured = a step function of the kept MACs (a runtime that blocks channels): the first aim
    # lands far off, scaling alone oscillates; the bracket must bring it within 5% in 6 rounds
    net, groups, scores, costs = _setup()
    dense = costs.dense.macs

    def runtime(cut):
        kept = costs.macs({k: v for k, v in cut.items() if k in ("1", "4")}) / dense
        return 0.2 + 0.8 * math.ceil(kept * 8) / 8  # 8 latency levels

    seen = _fake_measure(monkeypatch, runtime)
    table = _table(lambda name, cin, cout: cin * cout / 256)
    _, report = prune(net, X, keep_latency=0.6, runtime="torch", ignored_layers=IGNORED, latency_table=table)
    assert abs(report.achieved_latency_ratio / 0.6 - 1) <= 0.05, [runtime(c) for c in seen]
    assert len(seen) <= 6


def test_next_target_scales_then_bisects_inside_the_bracket():
    assert next_target([(0.5, 1.0)], 0.5) == pytest.approx(0.25)
    assert next_target([(0.5, 0.25)], 0.5) == pytest.approx(1.0)
    # tries below and above 0.5: interpolate between the closest pair, never outside it
    tries = [(0.6, 0.9), (0.4, 0.55), (0.2, 0.3), (0.3, 0.45)]
    t = next_target(tries, 0.5)
    assert t == pytest.approx(0.3 + (0.5 - 0.45) / (0.55 - 0.45) * 0.1)
    assert 0.3 < t < 0.4


def test_cli_prune_keep_latency(tmp_path, capsys, monkeypatch):
    import functools

    import prunus
    from prunus.cli import main
    from prunus.models import create_model
    from prunus.pruning import latency

    monkeypatch.setenv("PRUNUS_CACHE_DIR", str(tmp_path / "cache"))

    # The per-layer table is timed on a loaded CI machine, so whether 0.8 is reachable would depend on
    # the load: time the table by parameter count instead (deterministic); the final ratio is still measured.
    def by_params(module, *_args, **_kwargs):
        return 0.01 + 1e-3 * sum(p.numel() for p in module.parameters())

    monkeypatch.setattr(latency, "build_table", functools.partial(latency.build_table, measure=by_params))
    _fake_measure(monkeypatch, lambda cut: 0.81)  # the side-by-side timing too (a real one: see above)
    torch.manual_seed(0)
    src = prunus.save(create_model("resnet20", in_channels=1, width_mult=0.25), tmp_path / "m", input_shape=(1, 28, 28))
    argv = ["prune", str(src), "--keep-latency", "0.8", "--runtime", "torch", "--latency-batch", "2"]
    assert main([*argv, "--threads", "1", "--out", str(tmp_path / "o"), "--json"]) == 0
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    assert report["requested_latency_ratio"] == 0.8
    assert report["achieved_latency_ratio"] == 0.81
    # the minutes-long table and each re-aimed round are said while they run, one line each
    progress = [line for line in captured.err.splitlines() if line.startswith("prunus: latency")]
    assert progress[0].startswith("prunus: latency table: timing 21 convs alone on torch, batch 2")
    assert "prunus: latency table: 21/21 convs timed" in "\n".join(progress)
    assert "prunus: latency budget 0.8: round 1/6 measured 0.810 of the dense latency on torch" in progress
    assert (report["runtime"], report["latency_batch"]) == ("torch", 2)
    assert len(list((tmp_path / "cache" / "latency").iterdir())) == 1  # the table was cached
    assert prunus.count(prunus.load(tmp_path / "o"), (1, 28, 28)).macs == report["pruned_macs"]


def test_a_transposed_conv_is_timed_as_itself_in_the_table(tmp_path):
    """A U-Net's ConvTranspose2d is cut like a conv: the table times it (as a ConvTranspose2d, on its own input
    resolution), so a latency budget sees what its cut saves."""
    from ..structure import families as fam

    built = []

    def fake(module, shape, runtime, batch, threads):
        built.append((type(module).__name__, shape))
        return float(count(module, shape).macs) * batch / 1e6

    net, x = fam.build("unet").eval(), fam.inputs("unet", batch=1)
    sigs = layer_signatures(net, x)
    assert sigs["up"]["transposed"] is True
    assert sigs["up"]["output_padding"] == [0, 0]
    assert "transposed" not in sigs["down"]  # plain convs keep the signature (and cached tables) they had
    table = build_table(net, x, [("up", "in"), ("up", "out")], runtime="torch", batch=2, threads=1,
                        cache_dir=tmp_path, measure=fake)  # fmt: skip
    assert ("ConvTranspose2d", (6, 4, 4)) in built  # up at 6 inputs (of 12) on its 4x4 input
    assert table.layers["up"]["in"] == [3, 6, 9, 12]
    assert table.layer_ms("up", 12, 6) == pytest.approx(12 * 16 * 6 * 9 * 2 / 1e6)  # input elements x out x taps
