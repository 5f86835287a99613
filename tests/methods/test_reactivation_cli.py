"""`prunus train --method we|graft [--networks N]` (also under torchrun) and `prunus eval` of the ensemble."""

from __future__ import annotations

import json

import pytest
import torch

from prunus.cli import main
from prunus.formats import load
from prunus.measure.ensemble import LogitEnsemble
from prunus.measure.evaluation import evaluate

TRAIN = ["train", "--model", "lenet5", "--width-mult", "0.5", "--data", "synthetic", "--epochs", "2"]
TRAIN += ["--batch-size", "32", "--val-size", "0", "--no-progress"]


def _eval_rows(capsys):
    out = capsys.readouterr().out
    return {line.split("│")[1].strip(): line.split("│")[2].strip() for line in out.splitlines() if line.count("│") >= 3}


def test_cli_graft_two_networks_run_dir_and_ensemble_eval(tmp_path, capsys):
    out = tmp_path / "graft"
    assert main([*TRAIN, "--method", "graft", "--networks", "2", "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())["metrics"]
    assert summary["networks"] == 2
    for k in range(2):
        assert (out / f"net{k}" / "model" / "model.json").exists()
        records = [json.loads(x) for x in (out / f"net{k}" / "metrics.jsonl").read_text().splitlines()]
        assert len(records) == 2
        assert "graft_alpha" not in records[0]  # the graft after epoch 0 runs as epoch 1 starts
        assert len(records[1]["graft_alpha"]) == 2  # lenet5: two convs
    nets = [load(out / f"net{k}" / "model") for k in range(2)]
    # N = 2: a graft makes both networks identical, but none follows the last epoch: the saved
    # networks are the ones the last epoch scored, and they differ
    assert not torch.equal(nets[0].conv1.weight, nets[1].conv1.weight)
    from prunus.data import DataConfig, build_loaders

    test = build_loaders(DataConfig(name="synthetic", val_size=0, augment=False)).test
    accs = [evaluate(n, test)["acc"] for n in nets]
    assert [summary["net0_final_test_acc"], summary["net1_final_test_acc"]] == accs
    assert summary["mean_final_test_acc"] == pytest.approx(sum(accs) / 2)
    assert summary["ensemble_test_acc"] == evaluate(LogitEnsemble(nets), test)["acc"]
    capsys.readouterr()
    assert main(["eval", str(out), "--data", "synthetic"]) == 0
    rows = _eval_rows(capsys)
    ens = next(v for k, v in rows.items() if k.startswith("ensemble of 2"))
    assert ens == f"{summary['ensemble_test_acc'] * 100:.2f}%"


def test_cli_networks_without_graft_is_an_ensemble_of_independent_baselines(tmp_path, capsys):
    out = tmp_path / "ens"
    assert main([*TRAIN, "--networks", "2", "--out", str(out)]) == 0
    nets = [load(out / f"net{k}" / "model") for k in range(2)]
    assert not torch.equal(nets[0].conv1.weight, nets[1].conv1.weight)  # own seeds, no graft
    summary = json.loads((out / "summary.json").read_text())["metrics"]
    from prunus.data import DataConfig, build_loaders

    test = build_loaders(DataConfig(name="synthetic", val_size=0, augment=False)).test
    assert summary["ensemble_test_acc"] == evaluate(LogitEnsemble(nets), test)["acc"]
    # network 0 keeps the run's seed: it is the single-network baseline of seed 0
    single = tmp_path / "single"
    assert main([*TRAIN, "--out", str(single)]) == 0
    base = load(single / "model")
    for a, b in zip(base.parameters(), nets[0].parameters()):
        assert torch.equal(a, b)
    # and the killed-and-resumed population continues (here: nothing left to do)
    assert main([*TRAIN, "--networks", "2", "--resume", "--out", str(out)]) == 0


def test_cli_we_and_errors(tmp_path, capsys):
    out = tmp_path / "we"
    assert main([*TRAIN, "--method", "we", "--set", "mode=code", "--out", str(out)]) == 0
    rec = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    assert {"we_filters", "we_slices", "we_bn_channels", "we_forced"} <= set(rec)
    capsys.readouterr()
    assert main([*TRAIN, "--method", "graft", "--out", str(tmp_path / "g1")]) == 2
    assert "at least 2 networks" in capsys.readouterr().err
    assert main([*TRAIN, "--method", "we", "--set", "mode=nope", "--out", str(tmp_path / "bad")]) == 2
    assert "mode='nope'" in capsys.readouterr().err
    assert main([*TRAIN, "--networks", "0", "--out", str(tmp_path / "bad2")]) == 2
    assert "networks=0" in capsys.readouterr().err


@pytest.mark.distributed
@pytest.mark.slow
def test_cli_graft_under_torchrun_one_network_per_rank(tmp_path, torchrun):
    out = tmp_path / "run"
    proc = torchrun(["-m", "prunus", *TRAIN, "--method", "graft", "--out", str(out)], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())["metrics"]
    assert summary["networks"] == 2
    assert "ensemble_test_acc" in summary
    assert (out / "net0" / "model" / "model.json").exists()
    assert (out / "net1" / "model" / "model.json").exists()
    assert proc.stdout.count("run directory:") == 1
