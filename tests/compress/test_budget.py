"""The auto-bits budget is checked on the compressed model and a miss is reported, never silent."""

import warnings

import pytest
import torch

import prunus
from prunus.cli import main
from prunus.compress import CompressConfig, compress
from prunus.errors import BudgetNotMetWarning

FAST = {"calib_size": 32, "rescore_size": 64, "cycles": 1, "generations": 1, "population": 3, "elite": 1}


def _model_and_images():
    torch.manual_seed(0)
    model = prunus.create_model("lenet300_100", in_channels=1, num_classes=10, width_mult=0.1).eval()
    return model, torch.randn(64, 1, 28, 28)


def _compress_without_budget_warning(**config):
    """Compress the small model with `config`; a BudgetNotMetWarning fails the test."""
    model, x = _model_and_images()
    with warnings.catch_warnings():
        warnings.simplefilter("error", BudgetNotMetWarning)
        return compress(model, x, CompressConfig(**FAST, **config), baselines=False)


def _agreement(a, b):
    return 100 * float((a.argmax(1) == b.argmax(1)).float().mean())


def test_a_budget_the_pruning_alone_breaks_is_reported_with_the_measured_drop():
    model, x = _model_and_images()
    cfg = CompressConfig(
        **FAST, sparsity=0.97, bits="auto", max_drop=0.0, escalate=False
    )  # tests/compress/test_escalate.py
    with pytest.warns(
        BudgetNotMetWarning, match=r"budget not met: .* over max_drop 0.*Next to try: finetune_steps=300"
    ):
        report = compress(model, x, cfg, baselines=False)
    b = report.budget
    assert b["met"] is False
    assert b["against"] == "input"
    assert b["images"] == 64
    with torch.no_grad():
        teacher, compressed = model(x), report.model(x)
    # no labels: accuracy is agreement with the input model's top-1, as in the bit allocation
    assert b["drop_pt"] == pytest.approx(100 - _agreement(compressed, teacher))
    assert b["drop_pt"] > 0
    assert b["pruned_drop_pt"] > 0
    # the greedy never lowered a bit: over budget from the start
    assert {r.bits for r in report.layers} == {cfg.max_bits}


def test_a_met_budget_says_so_without_a_warning():
    report = _compress_without_budget_warning(sparsity=0.3, bits="auto", max_drop=100.0)
    assert report.budget["met"] is True
    assert report.budget["max_drop"] == 100.0
    assert report.to_json()["budget"] == report.budget


def test_quantization_share_budget_is_measured_against_the_pruned_model():
    report = _compress_without_budget_warning(sparsity=0.97, bits="auto", quant_drop=2.0)
    b = report.budget
    assert b["pruned_drop_pt"] > 2.0  # the pruning's own loss would break this budget...
    assert b["against"] == "pruned"
    assert b["max_drop"] == 2.0
    assert b["drop_pt"] <= 2.0  # ...but only quantization's share counts against it
    assert b["met"] is True


def test_fixed_bits_have_no_budget():
    model, x = _model_and_images()
    report = compress(model, x, CompressConfig(**FAST, sparsity=0.5, bits=6), baselines=False)
    assert report.budget is None


def test_cli_prints_the_budget_verdict(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "250")
    d = tmp_path / "model"
    prunus.save(prunus.create_model("lenet300_100", in_channels=1, width_mult=0.1), d, input_shape=(1, 28, 28))
    args = ["compress", str(d), "--data", "synthetic", "--sparsity", "0.97", "--bits", "auto", "--max-drop", "0",
            "--calib", "64", "--search-batch", "32", "--set", "cycles=1", "--set", "generations=1", "--no-progress", "--no-escalate",
            "--out", str(tmp_path / "m.prn")]  # fmt: skip
    with pytest.warns(BudgetNotMetWarning):
        assert main(args) == 0
    assert "NOT MET" in capsys.readouterr().out
