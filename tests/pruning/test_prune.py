"""One-shot `prune`: targets reached as reported (recounted), groups never emptied, files round-trip, CLI."""

from __future__ import annotations

import json
import math
import re

import pytest
import torch
import yaml

import prunus
from prunus.cli import main
from prunus.criteria import list_criteria
from prunus.errors import ConfigError
from prunus.formats.run_dir import RunDir, resolve_model_dir
from prunus.methods import method_config
from prunus.models import create_model, list_models
from prunus.models.info import get_info, update_info
from prunus.pruning import PruneReport, prune
from prunus.structure import build_groups

X = torch.randn(2, 1, 28, 28, generator=torch.Generator().manual_seed(0))


def _tiny(name: str):
    torch.manual_seed(0)
    return create_model(name, num_classes=5, in_channels=1, width_mult=0.5 if "lenet" in name else 0.25).eval()


def _widths(model) -> dict[str, int]:
    return {g.key: g.num_channels for g in build_groups(model, X[:1]) if g.prunable}


def _check_report(model, report: PruneReport, dense_counts) -> None:
    counts = prunus.count(model, (1, 28, 28))
    assert report.pruned_macs == counts.macs
    assert report.pruned_params == counts.params
    assert report.dense_macs == dense_counts.macs
    assert report.dense_params == dense_counts.params
    assert report.achieved_macs_ratio == pytest.approx(counts.macs / dense_counts.macs)
    assert report.achieved_params_ratio == pytest.approx(counts.params / dense_counts.params)
    assert all(after >= 1 for _, after in report.widths.values())
    json.dumps(report.to_dict())  # JSON-able


ZOO_MACS = [n for n in list_models() if n != "lenet300_100"]  # an MLP's only prunable layer holds 6% of its MACs


@pytest.mark.parametrize("global_pruning", [False, True])
@pytest.mark.parametrize("name", ZOO_MACS)
def test_macs_target_reached_as_reported(name, global_pruning, tmp_path):
    model = _tiny(name)
    dense = prunus.count(model, (1, 28, 28))
    model, report = prune(model, X[:1], keep_macs=0.5, global_pruning=global_pruning)
    _check_report(model, report, dense)
    assert report.achieved_macs_ratio <= 0.5
    assert report.achieved_macs_ratio > 0.3  # the search stops near the target, not at the largest cut
    assert report.requested_macs_ratio == 0.5
    assert (report.rate is None) == global_pruning
    assert {k: w[1] for k, w in report.widths.items()} == _widths(model)
    if not global_pruning:
        prunus.save(model, tmp_path / "m", input_shape=(1, 28, 28))
        loaded = prunus.load(tmp_path / "m")
        with torch.no_grad():
            assert torch.equal(loaded(X), model(X))


@pytest.mark.parametrize("name", list_models())
def test_uniform_ratio_removes_floor_n_ratio_per_group(name):
    model = _tiny(name)
    dense = prunus.count(model, (1, 28, 28))
    before = _widths(model)
    model, report = prune(model, X[:1], remove_channels=0.4, criterion="fpgm")
    _check_report(model, report, dense)
    assert report.widths == {k: [n, n - math.floor(n * 0.4 + 1e-9)] for k, n in before.items()}
    assert report.rate == 0.4
    assert report.achieved_macs_ratio < 1.0


def test_global_ratio_counts_all_prunable_channels_and_keeps_every_group():
    model = _tiny("resnet20")
    total = sum(_widths(model).values())
    model, report = prune(model, X[:1], remove_channels=0.6, global_pruning=True, criterion="l2")
    removed = sum(b - a for b, a in report.widths.values())
    assert removed == math.floor(total * 0.6)
    assert report.achieved_ratio == pytest.approx(removed / total)
    assert min(a for _, a in report.widths.values()) >= 1


def test_keep_macs_one_keeps_everything_and_the_model_is_unchanged():
    model = _tiny("resnet20")
    reference = _tiny("resnet20")
    model, report = prune(model, X[:1], keep_macs=1.0)
    assert report.pruned_macs == report.dense_macs
    assert all(b == a for b, a in report.widths.values())
    assert torch.equal(model(X), reference(X))


@pytest.mark.parametrize("criterion", list_criteria())
def test_every_criterion(criterion):
    model = _tiny("resnet20")
    batch = (X, torch.tensor([0, 1])) if criterion == "taylor" else None
    model, report = prune(model, X[:1], remove_channels=0.5, criterion=criterion, batch=batch)
    assert report.criterion == criterion
    assert report.achieved_ratio > 0.3


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"remove_channels": 0.4, "keep_macs": 0.5}, "give exactly one of remove_channels"),
        ({}, "give exactly one of remove_channels"),
        ({"keep_macs": 0.0}, r"keep_macs=0.0 is out of range; expected a value in \(0.0, 1.0\]"),
        ({"keep_macs": 1.5}, "keep_macs=1.5 is out of range"),
        ({"remove_channels": 1.0}, r"remove_channels=1.0 is out of range; expected a value in \[0.0, 1.0\)"),
        ({"remove_channels": 0.4, "criterion": "l9"}, "criterion='l9' is not valid; choose one of: bn-scale"),
        ({"remove_channels": 0.4, "criterion": "taylor"}, "criterion 'taylor' needs data"),
    ],
)
def test_bad_targets_raise(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        prune(_tiny("resnet20"), X[:1], **kwargs)


def test_cli_train_sfp_then_prune_end_to_end(tmp_path, capsys):
    run = tmp_path / "run"
    args = ["train", "--model", "resnet20", "--width-mult", "0.25", "--data", "synthetic", "--subset", "64"]
    args += ["--val-size", "32", "--batch-size", "32", "--epochs", "2", "--no-progress", "--threads", "1"]
    assert main([*args, "--method", "sfp", "--rate", "0.4", "--out", str(run)]) == 0
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["sfp_channels_masked"] for r in records] == [records[0]["sfp_channels_masked"]] * 2
    summary = json.loads((run / "summary.json").read_text())["metrics"]
    assert summary["sfp_channels_removed"] == records[-1]["sfp_channels_masked"] > 0
    assert summary["macs"] == summary["sfp_macs"] < summary["sfp_macs_dense"]
    trained = prunus.load(run / "model")
    assert get_info(trained).history  # the SFP removal is in the model file
    # config.yaml records the resolved method config: the given rate and every default
    recorded = yaml.safe_load((run / "config.yaml").read_text())["methods"]
    assert recorded == [{"name": "sfp", "args": method_config("sfp", rate=0.4).to_dict()}]
    assert recorded[0]["args"]["criterion"] == "l2"

    out = tmp_path / "pruned"
    capsys.readouterr()
    assert main(["prune", str(run / "model"), "--keep-macs", "0.5", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "requested vs achieved" in printed
    pruned = prunus.load(out)  # --out is a run directory: load finds the model it made
    header = json.loads((resolve_model_dir(out) / "model.json").read_text())
    assert resolve_model_dir(out) == RunDir(out).stage("main", 0, 1, "prune", layout="single").model
    report = header["extra"]["prune_report"]
    assert report["requested_macs_ratio"] == 0.5
    assert report["achieved_macs_ratio"] <= 0.5
    assert prunus.count(pruned, (1, 28, 28)).macs == report["pruned_macs"] == header["metrics"]["macs"]
    assert len(get_info(pruned).history) > len(get_info(trained).history)
    with torch.no_grad():
        assert pruned(X).shape == (2, 10)


def test_cli_prune_errors_are_one_line(tmp_path, capsys):
    model_dir = prunus.save(_tiny("resnet20"), tmp_path / "m", input_shape=(1, 28, 28))
    assert main(["prune", str(model_dir), "--remove-channels", "1.0", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("prunus: error: remove_channels=1.0 is out of range")
    assert len(err.strip().splitlines()) == 1
    assert (
        main(
            ["prune", str(model_dir), "--remove-channels", "0.5", "--criterion", "taylor", "--out", str(tmp_path / "o")]
        )
        == 2
    )
    assert "needs data; pass --data" in capsys.readouterr().err


def _chain():
    """stem -> conv 8 -> BN -> ReLU -> conv 6 -> BN -> ReLU -> pool -> fc: one writer per prunable group."""
    torch.manual_seed(4)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(1, 3, 3, padding=1),
        torch.nn.Conv2d(3, 8, 3, padding=1, bias=False),
        torch.nn.BatchNorm2d(8),
        torch.nn.ReLU(),
        torch.nn.Conv2d(8, 6, 3, padding=1, bias=False),
        torch.nn.BatchNorm2d(6),
        torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(6, 5),
    )
    update_info(model, stem="0", classifier="9")
    return model


def _hand_lowest(w: torch.Tensor, criterion: str, k: int) -> list[int]:
    rows = w.detach().flatten(1).double()
    if criterion == "l1":
        s = rows.abs().sum(1)
    elif criterion == "l2":
        s = rows.norm(dim=1)
    else:  # fpgm: summed L2 distance to the other filters
        s = torch.cdist(rows, rows).sum(1)
    return sorted(sorted(range(len(s)), key=lambda j: float(s[j]))[:k])


@pytest.mark.parametrize("criterion", ["l1", "l2", "fpgm"])
def test_prune_removes_exactly_the_channels_the_criterion_ranks_lowest(criterion):
    model = _chain()
    want = {key: _hand_lowest(model.get_submodule(key).weight, criterion, n // 2) for key, n in (("1", 8), ("4", 6))}
    model, report = prune(model, torch.randn(1, 1, 8, 8), remove_channels=0.5, criterion=criterion)
    removed = {e["group"]: e["idxs"] for e in get_info(model).history}
    assert removed == want
    # the criteria disagree on this net, so a prune that ignores the requested one cannot pass all three
    others = {c: {k: _hand_lowest(_chain().get_submodule(k).weight, c, n // 2) for k, n in (("1", 8), ("4", 6))}
              for c in ("l1", "fpgm")}  # fmt: skip
    assert others["l1"] != others["fpgm"]


def test_the_report_says_which_groups_keep_their_width_and_why(tmp_path, capsys):
    model = prunus.create_model("resnet20", in_channels=1, width_mult=0.25)
    _, report = prune(model, torch.zeros(1, 1, 28, 28), remove_channels=0.5)
    # resnet20's stage-1 residual stream is written by the stem and every layer1 block: kept whole with the stem
    assert set(report.kept_whole) == {"conv1", "fc"}
    assert report.kept_whole["conv1"].startswith("4 channels; coupled with layer1.")
    assert report.kept_whole["conv1"].endswith("it is written by ignored layer 'conv1'")
    assert {"layer1.0.conv2", "layer1.1.conv2", "layer1.2.conv2"} <= set(
        re.findall(r"layer1\.\d\.conv2", report.kept_whole["conv1"])
    )
    _, freed = prune(prunus.create_model("resnet20", in_channels=1, width_mult=0.25), torch.zeros(1, 1, 28, 28),
                     remove_channels=0.5, ignore=["fc"])  # fmt: skip
    assert set(freed.kept_whole) == {"fc"}  # with the stem prunable the stream is cut like any group
    src = prunus.save(
        prunus.create_model("resnet20", in_channels=1, width_mult=0.25), tmp_path / "m", input_shape=(1, 28, 28)
    )
    assert main(["prune", str(src), "--remove-channels", "0.5", "--out", str(tmp_path / "o")]) == 0
    printed = capsys.readouterr().out
    assert "kept at full width: conv1 (4 channels; coupled with layer1." in printed
