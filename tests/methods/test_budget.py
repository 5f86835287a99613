"""Budgets (keep_macs / keep_params / keep_latency) and per-group widths for SFP, FPGM, MFP and C-SGD.

The budget is resolved once at setup by `prunus.pruning.plan_widths`; the final (removed or merged)
model must meet it, and a resumed run must keep the widths it started with.
"""

from __future__ import annotations

import copy
import functools
import json
import re

import pytest
import torch

import prunus
from prunus.engine import Trainer
from prunus.errors import ConfigError
from prunus.methods import create_method
from prunus.pruning import plan_widths
from prunus.structure import build_groups


def _widths(model, data):
    x = torch.zeros(1, *data.input_shape)
    return {g.key: g.num_channels for g in build_groups(model, x) if g.prunable}


@pytest.mark.parametrize(("name", "extra"), [("sfp", {}), ("fpgm", {}), ("mfp", {"holdout_size": 16})])
def test_soft_pruning_macs_budget_removed_model_meets_it_and_compact_equals_masked(name, extra, tiny):
    data = tiny.tiny_data()
    model = tiny.tiny_model(data)
    dense = prunus.count(model, tuple(data.input_shape))
    method = create_method(name, keep_macs=0.5, remove_at_end=False, **extra)
    trainer = Trainer(model, data, tiny.tiny_config(), [method], progress=False)
    trainer.fit()
    assert method.plan is not None
    assert 0.475 <= method.plan.macs_ratio <= 0.5
    # every group masks exactly what the plan keeps, whatever the criterion picked
    assert {g.key: g.num_channels - len(method.masks.get(g.key, [])) for g in method.groups} == method.plan.widths
    x = torch.randn(8, *data.input_shape, generator=torch.Generator().manual_seed(1))
    model.eval()
    with torch.no_grad():
        masked = model(x)
    method.remove_at_end = True
    method.on_fit_end(trainer)
    with torch.no_grad():
        compact = model.eval()(x)
    assert (masked - compact).abs().max().item() < 1e-5
    assert _widths(model, data) == method.plan.widths
    ratio = prunus.count(model, tuple(data.input_shape)).macs / dense.macs
    assert 0.475 <= ratio <= 0.5


def test_sfp_params_budget_and_widths_override(tiny):
    data = tiny.tiny_data()
    model = tiny.tiny_model(data)
    dense = prunus.count(model, tuple(data.input_shape))
    method = create_method("sfp", keep_params=0.6)
    Trainer(model, data, tiny.tiny_config(epochs=1), [method], progress=False).fit()
    assert 0.57 <= prunus.count(model, tuple(data.input_shape)).params / dense.params <= 0.6

    model = tiny.tiny_model(data)
    method = create_method("sfp", rate=0.5, widths={"layer1.0.conv1": 3, "layer2.0.conv1": 0.75})
    Trainer(model, data, tiny.tiny_config(epochs=1), [method], progress=False).fit()
    after = _widths(model, data)
    assert after["layer1.0.conv1"] == 3  # a count, as given (of 4)
    assert after["layer2.0.conv1"] == 6  # 0.75 of 8 kept
    assert after["layer3.0.conv1"] == 8  # the rate elsewhere: 16 - floor(16 * 0.5)


@pytest.mark.filterwarnings("ignore:C-SGD.*merge will not be exact")  # widths are tested, not exactness
def test_csgd_macs_budget_merges_to_widths_that_meet_it(tiny):
    data = tiny.tiny_data()
    model = tiny.tiny_model(data)
    dense = prunus.count(model, tuple(data.input_shape))
    method = create_method("csgd", keep_macs=0.5, cluster="even")
    Trainer(model, data, tiny.tiny_config(), [method], progress=False).fit()
    assert method.width_plan is not None
    assert method.widths == {k: v for k, v in method.width_plan.widths.items()}
    after = _widths(model, data)
    assert after == method.width_plan.widths
    assert method.merge_report["csgd_macs_before"] == dense.macs
    ratio = method.merge_report["csgd_macs_after"] / dense.macs
    assert 0.475 <= ratio <= 0.5
    assert prunus.count(model, tuple(data.input_shape)).macs / dense.macs == pytest.approx(ratio)


def test_sfp_latency_budget_is_planned_on_the_runtimes_table(tiny, tmp_path, monkeypatch):
    from prunus.pruning import latency

    calls = []

    def by_params(module, shape, runtime, batch, threads):  # deterministic "timer"; no timing asserted
        calls.append((runtime, batch))
        return 0.01 + 1e-3 * sum(p.numel() for p in module.parameters())

    monkeypatch.setenv("PRUNUS_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(latency, "build_table", functools.partial(latency.build_table, measure=by_params))
    # and the side-by-side check (real timings on a loaded machine could miss the budget)
    monkeypatch.setattr(latency, "measured_ratio", lambda *args, **kwargs: 0.69)
    data = tiny.tiny_data()
    method = create_method("sfp", keep_latency=0.7, runtime="torch", latency_batch=2)
    trainer = Trainer(tiny.tiny_model(data), data, tiny.tiny_config(epochs=1), [method], progress=False)
    assert calls
    assert set(calls) == {("torch", 2)}
    (table,) = (tmp_path / "latency").iterdir()
    assert (json.loads(table.read_text())["runtime"], json.loads(table.read_text())["batch"]) == ("torch", 2)
    plan = method.plan
    assert (plan.budget, plan.runtime, plan.latency_batch) == ("keep_latency", "torch", 2)
    assert plan.estimated_latency_ratio <= 0.7
    assert plan.latency_ratio == 0.69
    assert method.kept == plan.widths
    assert any(plan.widths[k] < plan.dense_widths[k] for k in plan.widths)
    trainer.fit()
    assert _widths(trainer.model, data) == plan.widths


def test_resumed_run_keeps_the_widths_it_started_with(tiny, tmp_path):
    data = tiny.tiny_data()

    def fit(run_dir, seed, resume=False, stop_after=None):
        method = create_method("sfp", keep_macs=0.5, global_pruning=True)  # widths depend on the weights
        trainer = Trainer(
            tiny.tiny_model(data, seed), data, tiny.tiny_config(), [method], run_dir, resume=resume, progress=False
        )
        if stop_after is not None:
            for _ in range(stop_after):
                trainer._run_epoch()
            return trainer, method
        trainer.fit()
        return trainer, method

    full, full_m = fit(tmp_path / "full", 0)
    _, part_m = fit(tmp_path / "part", 0, stop_after=1)
    assert torch.load(tmp_path / "part" / "checkpoint.pt", weights_only=True)["methods"]["sfp"]["widths"] == part_m.kept
    other = plan_widths(
        tiny.tiny_model(data, 99), torch.zeros(1, *data.input_shape), keep_macs=0.5, global_pruning=True
    )
    assert other.widths != part_m.kept  # a re-plan on the resumed run's fresh model would differ
    resumed, resumed_m = fit(tmp_path / "part", 99, resume=True)  # weights come from the checkpoint
    assert resumed_m.kept == part_m.kept == full_m.kept
    for (k, a), b in zip(full.model.state_dict().items(), resumed.model.state_dict().values(), strict=True):
        assert torch.equal(a, b), k


@pytest.mark.filterwarnings("ignore:C-SGD.*merge will not be exact")  # widths are tested, not exactness
def test_csgd_state_carries_the_budget_widths(tiny, tmp_path):
    data = tiny.tiny_data()
    method = create_method("csgd", keep_params=0.5, cluster="even")
    trainer = Trainer(tiny.tiny_model(data), data, tiny.tiny_config(), [method], tmp_path, progress=False)
    trainer._run_epoch()
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=True)["methods"]["csgd"]
    assert state["widths"] == method.widths
    assert {k: len(c) for k, c in state["clusters"].items()} == {
        k: v for k, v in method.widths.items() if v < _widths(tiny.tiny_model(data), data)[k]
    }
    fresh = create_method("csgd", keep_params=0.5, cluster="even")
    fresh.load_state_dict(copy.deepcopy(state))
    assert fresh.widths == method.widths
    assert fresh.state_dict() == method.state_dict()


@pytest.mark.parametrize("name", ["sfp", "fpgm", "mfp"])
@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"rate": 0.3, "keep_macs": 0.5}, r"give either rate / widths or a budget \(keep_macs\), not both"),
        ({"widths": {"layer1.0.conv1": 2}, "keep_params": 0.5}, "give either rate / widths or a budget"),
        ({"keep_macs": 0.5, "keep_latency": 0.5}, "give at most one budget"),
        ({"keep_macs": 0.0}, r"keep_macs=0.0 is out of range; expected a value in \(0.0, 1.0\]"),
        ({"keep_params": 1.5}, r"keep_params=1.5 is out of range"),
        ({"keep_latency": float("nan")}, "keep_latency"),
        (
            {"keep_macs": 0.5, "runtime": "tvm"},
            "runtime='tvm' is not valid for a latency budget; choose one of: torch, onnxruntime",
        ),
        ({"keep_macs": 0.5, "latency_batch": 0}, "latency_batch=0 is not valid"),
        ({"widths": {"layer1.0.conv1": 0}}, r"widths\['layer1.0.conv1'\]=0: a channel count must be >= 1"),
        ({"widths": {"layer1.0.conv1": 1.5}}, r"widths\['layer1.0.conv1'\]=1.5 is out of range"),
        ({"widths": ["layer1.0.conv1"]}, "widths must map group keys"),
    ],
)
def test_bad_budget_configs_raise(name, kwargs, match):
    with pytest.raises(ConfigError, match=match):
        create_method(name, **kwargs)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"width": 0.5, "keep_macs": 0.5}, r"csgd: give either width / widths or a budget \(keep_macs\)"),
        ({"widths": {"layer1.0.conv1": 2}, "keep_macs": 0.5}, "csgd: give either width / widths or a budget"),
        ({"keep_macs": 0.0}, r"csgd.keep_macs=0.0 is out of range"),
        ({"keep_latency": 0.5, "runtime": "tvm"}, "csgd.runtime='tvm' is not valid"),
    ],
)
def test_bad_csgd_budget_configs_raise(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        create_method("csgd", **kwargs)


def test_unknown_or_invalid_widths_key_fails_at_setup_naming_it(tiny):
    data = tiny.tiny_data()
    for widths, match in [
        ({"layer9.conv": 2}, r"sfp.widths names 'layer9.conv', which is not a prunable group; groups: layer1.0.conv1"),
        ({"layer1.0.conv1": 5}, r"width 5 for group 'layer1.0.conv1' must lie in \[1, 4\]"),
    ]:
        with pytest.raises(ConfigError, match=match):
            Trainer(tiny.tiny_model(data), data, tiny.tiny_config(), [create_method("sfp", widths=widths)])


def test_defaults_without_a_budget_are_unchanged():
    assert create_method("sfp").config.rate == 0.4
    assert create_method("csgd").config.width == 0.625
    assert create_method("sfp", keep_macs=0.5).config.rate is None
    assert create_method("csgd", keep_macs=0.5).config.width is None


def _train_argv(tmp_path, *flags):
    return [
        "train", "--model", "resnet20", "--width-mult", "0.25", "--data", "synthetic", "--subset", "64",
        "--val-size", "0", "--batch-size", "32", "--epochs", "1", "--no-progress", "--out", str(tmp_path / "run"),
        *flags,
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("flags", "match"),
    [
        (["--method", "sfp", "--keep-macs", "nan"], "keep-macs"),
        (["--method", "sfp", "--keep-macs", "0"], "keep_macs=0.0 is out of range"),
        (["--method", "sfp", "--keep-params", "1.5"], "keep_params=1.5 is out of range"),
        (["--method", "sfp", "--rate", "0.3", "--keep-macs", "0.5"], "give either rate / widths or a budget"),
        (["--method", "csgd", "--width", "0.5", "--keep-latency", "0.5"], "csgd: give either width / widths"),
        (["--keep-macs", "0.5"], "no --method"),
    ],
)
def test_cli_bad_budget_is_one_line_and_exit_2(flags, match, tmp_path, capsys):
    from prunus.cli import main

    try:
        rc = main(_train_argv(tmp_path, *flags))
    except SystemExit as exc:  # argparse usage errors (nan)
        rc = exc.code
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert len(err.splitlines()) == 1, err
    assert err.startswith("prunus: error: "), err
    assert re.search(match, err), err
    assert not (tmp_path / "run").exists()


def test_cli_train_sfp_keep_macs_saves_a_model_that_meets_it(tmp_path, capsys):
    import yaml

    from prunus.cli import main
    from prunus.models import create_model
    from prunus.models.info import get_info

    assert main(_train_argv(tmp_path, "--method", "sfp", "--keep-macs", "0.5", "--round-to", "2")) == 0
    args = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["methods"][0]["args"]
    assert (args["keep_macs"], args["rate"], args["round_to"]) == (0.5, None, 2)
    model = prunus.load(tmp_path / "run" / "model")
    shape = tuple(get_info(model).input_shape)
    arch = get_info(model).arch
    dense = prunus.count(create_model(arch["name"], **arch["kwargs"]), shape)
    assert 0.475 <= prunus.count(model, shape).macs / dense.macs <= 0.5


def test_planned_widths_match_a_one_shot_prune_of_the_initial_model(tiny):
    data = tiny.tiny_data()
    method = create_method("sfp", keep_macs=0.5)
    model = tiny.tiny_model(data)
    initial = copy.deepcopy(model)
    Trainer(model, data, tiny.tiny_config(), [method], progress=False)  # setup plans
    _, report = prunus.prune(initial, torch.zeros(1, *data.input_shape), keep_macs=0.5)
    assert method.kept == {k: w[1] for k, w in report.widths.items()}


@pytest.mark.filterwarnings("ignore:C-SGD.*merge will not be exact")  # widths are tested, not exactness
def test_cli_csgd_keep_macs_merges_to_the_budget_and_refuses_width_with_it(tmp_path, capsys):
    from prunus.cli import main
    from prunus.models import create_model
    from prunus.models.info import get_info

    torch.manual_seed(0)
    dense = create_model("resnet20", in_channels=1, width_mult=0.25)
    src = prunus.save(dense, tmp_path / "m", input_shape=(1, 12, 12))
    base = ["csgd", str(src), "--data", "synthetic", "--subset", "64", "--val-size", "0", "--batch-size", "32"]
    base += ["--epochs", "1", "--no-progress", "--cluster", "even"]
    assert main([*base, "--width", "0.5", "--keep-macs", "0.5", "--out", str(tmp_path / "bad")]) == 2
    assert "csgd: give either width / widths or a budget" in capsys.readouterr().err
    assert main([*base, "--keep-macs", "0.5", "--out", str(tmp_path / "run")]) == 0
    merged = prunus.load(tmp_path / "run")  # the merged model of the command's run directory
    shape = tuple(get_info(merged).input_shape)  # what the run trained and planned at
    ratio = prunus.count(merged, shape).macs / prunus.count(dense, shape).macs
    assert 0.475 <= ratio <= 0.5


def test_budget_under_two_process_ddp_every_rank_uses_rank0s_widths(tmp_path, torchrun):
    name, args = "sfp", {"keep_macs": 0.5, "global_pruning": True}  # C-SGD plans through the same plan_budget
    from pathlib import Path

    worker = Path(__file__).with_name("contract_ddp_worker.py")
    proc = torchrun([str(worker), name, str(tmp_path), json.dumps(args)], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert r0["state"] == r1["state"]
    assert r0["state"]["widths"]  # the planned widths are in the state of both ranks
    for key in r0["weights"]:
        assert torch.equal(r0["weights"][key], r1["weights"][key]), key
