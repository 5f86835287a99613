"""round_to="auto": widths in whole blocks of this CPU's vector width, in prune, the methods and the CLI.

The CPU's ISA is faked (`torch.backends.cpu.get_cpu_capability`) so each test checks the width
"auto" must resolve to on that CPU, not merely that it resolves to something.
"""

from __future__ import annotations

import copy
import json

import pytest
import torch

import prunus
from prunus.deploy.bench import LatencyComparison, SpeedupRow
from prunus.errors import ConfigError
from prunus.methods import create_method
from prunus.models import create_model
from prunus.pruning import PruneConfig, channel_block, prune
from prunus.pruning.widths import resolve_round_to
from prunus.structure import build_groups

X = torch.randn(1, 1, 28, 28, generator=torch.Generator().manual_seed(0))


def _model():
    torch.manual_seed(0)
    return create_model("resnet20", num_classes=10, in_channels=1, width_mult=0.75)  # 12 / 24 / 48 channels


@pytest.fixture
def avx2(monkeypatch):
    """This machine reports AVX2: "auto" must mean 8 channels."""
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX2")


@pytest.mark.parametrize(
    ("isa", "block"), [("AVX512", 16), ("avx512", 16), ("AVX2", 8), ("SVE256", 8), ("DEFAULT", 4), ("NEON", 4)]
)
def test_channel_block_is_the_float32_lanes_of_the_isa(isa, block):
    assert channel_block(isa) == block


def test_channel_block_defaults_to_this_machine(monkeypatch):
    assert channel_block() == channel_block(torch.backends.cpu.get_cpu_capability())
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX2")
    assert channel_block() == 8
    assert resolve_round_to("auto") == 8
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX512")
    assert channel_block() == 16
    assert resolve_round_to("auto") == 16
    assert resolve_round_to(3) == 3


@pytest.mark.parametrize("bad", ["avto", "16", 0, -8, 4097, 2**31, 2.0, True, None])
def test_a_bad_round_to_names_auto_in_its_error(bad):
    with pytest.raises(ConfigError, match=r"round_to must be an integer from 1 to 4096 .* or 'auto'"):
        PruneConfig(remove_channels=0.5, round_to=bad)


@pytest.mark.parametrize("target", [{"remove_channels": 0.5}, {"keep_macs": 0.5}, {"keep_params": 0.4}])
def test_prune_auto_cuts_exactly_as_the_block_it_resolves_to(avx2, target):
    model = _model()
    auto, r_auto = prune(copy.deepcopy(model), X, round_to="auto", **target)
    eight, r_eight = prune(copy.deepcopy(model), X, round_to=8, **target)
    one, r_one = prune(copy.deepcopy(model), X, round_to=1, **target)
    assert r_auto.round_to == 8  # the report says the width it used, not the word
    assert r_auto.widths == r_eight.widths
    assert r_auto.widths != r_one.widths  # 12 -> 6 without rounding: the rounding is visible
    assert all(kept % 8 == 0 or kept == full for full, kept in r_auto.widths.values()), r_auto.widths
    with torch.no_grad():
        assert torch.equal(auto(X), eight(X))


def test_prune_auto_follows_the_isa(monkeypatch):
    model = _model()
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX512")
    _, wide = prune(copy.deepcopy(model), X, remove_channels=0.5, round_to="auto")
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX2")
    _, narrow = prune(copy.deepcopy(model), X, remove_channels=0.5, round_to="auto")
    assert (wide.round_to, narrow.round_to) == (16, 8)
    assert wide.widths["layer1.0.conv1"] == [12, 12]  # 6 rounds up past 12: a 12-wide group is kept whole
    assert narrow.widths["layer1.0.conv1"] == [12, 8]


@pytest.mark.parametrize("name", ["sfp", "fpgm"])
def test_soft_pruning_auto_masks_to_whole_blocks(avx2, name):
    from prunus.data import DataConfig, build_loaders
    from prunus.engine import TrainConfig, Trainer

    model = _model()
    before = {g.key: g.num_channels for g in build_groups(model, X) if g.prunable}
    method = create_method(name, rate=0.4, round_to="auto")
    data = build_loaders(DataConfig(name="synthetic", num_samples=32, val_size=16, batch_size=16), seed=0)
    Trainer(model, data, TrainConfig(epochs=1, lr=0.01), methods=[method], progress=False).fit()
    after = {g.key: g.num_channels for g in build_groups(model, X) if g.prunable}
    assert method.round_to == 8
    assert all(a % 8 == 0 or a == before[k] for k, a in after.items()), after
    assert sorted(set(after.values())) == [8, 16, 32]  # 12 keeps 8 (not 7.2), 24 keeps 16, 48 keeps 32


def test_csgd_auto_cluster_counts(avx2):
    clusters = create_method("csgd", width=0.5, round_to="auto", cluster="even").plan(_model(), X)
    assert {len(c) for c in clusters.values()} == {8, 16, 24}


def test_cli_prune_round_to_auto(avx2, tmp_path, capsys):
    from prunus.cli import main

    src = prunus.save(_model(), tmp_path / "m", input_shape=(1, 28, 28))
    out = tmp_path / "o"
    assert main(["prune", str(src), "--remove-channels", "0.5", "--round-to", "auto", "--out", str(out), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["round_to"] == 8
    assert report["widths"]["layer1.0.conv1"] == [12, 8]
    assert (
        main(["prune", str(src), "--remove-channels", "0.5", "--round-to", "avto", "--out", str(out), "--force"]) == 2
    )
    assert "or 'auto'" in capsys.readouterr().err


def _row(runtime, dense_ms, pruned_ms, macs_ratio=4.0):
    speedup = dense_ms / pruned_ms
    return SpeedupRow(runtime, 64, dense_ms, pruned_ms, speedup, speedup / macs_ratio)


def test_deployed_efficiency_is_the_fastest_runtimes_not_the_best():
    # torch's dense model is slow, so its efficiency is the highest; the pruned model runs fastest on openvino
    rows = (_row("torch", 400.0, 100.0), _row("openvino", 80.0, 30.0), _row("onnxruntime", 90.0, 35.0))
    cmp = LatencyComparison(400, 100, 10, 5, rows, (), ())
    assert cmp.latency_efficiency(64) == pytest.approx(1.0)
    assert cmp.best_runtime(64) == "torch"
    runtime, eff = cmp.deployed_efficiency(64)
    assert runtime == "openvino"
    assert eff == pytest.approx((80.0 / 30.0) / 4.0)
