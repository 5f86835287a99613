"""OpenVINO runtime: real CPU-plugin runs of exported and benchmarked models equal the eager model."""

from __future__ import annotations

import json
import sys

import numpy as np
import openvino as ov
import pytest
import torch
from torch import nn

from prunus.deploy import openvino_ir
from prunus.deploy.bench import compare_latency, measure_latency
from prunus.deploy.export import ExportError, MissingDependencyError
from prunus.deploy.openvino_ir import cpu_config, export_openvino, ov_compile, ov_model
from prunus.formats import save
from prunus.models import create_model
from prunus.pruning.config import PruneBudget

FAST = {"warmup": 1, "repeats": 3, "threads": 1}


class TinyNet(nn.Module):
    """Conv+BN stem, a residual add, a depthwise conv, flatten -> Linear."""

    def __init__(self, width: int = 4, hw: int = 8, classes: int = 5) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU())
        self.branch = nn.Sequential(nn.Conv2d(width, width, 3, padding=1), nn.BatchNorm2d(width))
        self.dw = nn.Conv2d(width, width, 3, padding=1, groups=width)
        self.fc = nn.Linear(width * hw * hw, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = torch.relu(x + self.branch(x))
        return self.fc(torch.flatten(self.dw(x), 1))


def _net() -> TinyNet:
    torch.manual_seed(0)
    net = TinyNet()
    with torch.no_grad():  # non-trivial BN statistics: a wrong train/eval mode or a missed fold would show
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
    return net


def _x(batch: int, seed: int = 1) -> torch.Tensor:
    return torch.randn((batch, 3, 8, 8), generator=torch.Generator().manual_seed(seed))


def _eager(net: nn.Module, x: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        return net.eval()(x).numpy()


def test_export_openvino_writes_an_ir_that_reproduces_eager(tmp_path):
    net = _net().train()
    res = export_openvino(net, tmp_path / "m.xml", _x(2))
    assert net.training  # converted in eval mode, handed back in training mode
    assert res.format == "openvino"
    assert res.checked_batches == (2, 4)
    assert res.folded_bn == 2
    assert 0.0 <= res.max_abs_diff <= 1e-5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.bin", "m.xml"]  # no temp file left
    assert res.bytes == (tmp_path / "m.xml").stat().st_size + (tmp_path / "m.bin").stat().st_size
    # the weights are stored float32 (save_model's default would halve them to float16): after the
    # fold the IR holds every conv/linear weight and bias, 4 bytes each
    from prunus.deploy.fold import fold_bn

    assert (tmp_path / "m.bin").stat().st_size >= 4 * sum(p.numel() for p in fold_bn(net)[0].parameters())
    # an independent reader: OpenVINO itself, at a batch size the check never used
    core = ov.Core()
    compiled = core.compile_model(core.read_model(tmp_path / "m.xml"), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    x = _x(7, seed=3)
    got = compiled(x.numpy())[compiled.output("logits")]
    np.testing.assert_allclose(got, _eager(net, x), atol=1e-5, rtol=0)
    assert compiled.input(0).get_any_name() == "input"


def test_export_openvino_without_fold_still_matches(tmp_path):
    res = export_openvino(_net(), tmp_path / "m.xml", _x(3), fold_bn=False, dynamic_batch=False)
    assert (res.folded_bn, res.checked_batches) == (0, (3,))
    assert res.max_abs_diff <= 1e-5


def test_openvino_tolerance_scales_with_the_outputs(tmp_path):
    net = _net()
    with torch.no_grad():  # logits near 100: only rtol * |torch| can absorb a negative atol
        net.fc.bias.fill_(100.0)
        net.fc.weight.mul_(0.01)
    res = export_openvino(net, tmp_path / "m.xml", _x(2), atol=-1e-6, rtol=1.0)
    assert res.checked_batches == (2, 4)
    with pytest.raises(ExportError, match=r"OpenVINO logits differ .*rtol 0 x"):
        export_openvino(net, tmp_path / "n.xml", _x(2), atol=-1e-6, rtol=0.0)
    assert not (tmp_path / "n.xml").exists()


def test_export_openvino_mismatch_raises_and_writes_nothing(tmp_path):
    with pytest.raises(ExportError, match="OpenVINO logits differ"):
        export_openvino(_net(), tmp_path / "m.xml", _x(2), atol=-1.0)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ExportError, match=r"NAME\.xml \+ NAME\.bin"):
        export_openvino(_net(), tmp_path / "m.onnx", _x(2))
    assert list(tmp_path.iterdir()) == []


def test_compile_is_f32_with_the_documented_properties():
    assert cpu_config(2) == {
        "INFERENCE_PRECISION_HINT": "f32",
        "EXECUTION_MODE_HINT": "ACCURACY",
        "INFERENCE_NUM_THREADS": 2,
        "PERFORMANCE_HINT": "LATENCY",
        "NUM_STREAMS": 1,
    }
    compiled = ov_compile(ov_model(_net(), _x(2)), threads=1)
    assert compiled.get_property("INFERENCE_PRECISION_HINT") == ov.Type.f32
    assert compiled.get_property("INFERENCE_NUM_THREADS") == 1
    assert compiled.get_property("NUM_STREAMS") == 1


def test_a_silent_precision_change_is_refused(monkeypatch):
    """On a CPU with bf16 units the plugin's default is bf16: the guard must catch a config that lets it through."""
    ov_default = ov.Core().get_property("CPU", "INFERENCE_PRECISION_HINT")
    if ov_default == ov.Type.f32:
        pytest.skip("this CPU runs f32 by default; nothing to refuse")
    monkeypatch.setattr(openvino_ir, "cpu_config", lambda threads=None: {"INFERENCE_NUM_THREADS": 1})
    with pytest.raises(ExportError, match="not f32; refusing a silent precision change"):
        ov_compile(ov_model(_net(), _x(2)), threads=1)


def test_static_batch_model_is_fixed_and_dynamic_one_is_not():
    static = ov_model(_net(), _x(3), dynamic_batch=False)
    dynamic = ov_model(_net(), _x(3))
    assert str(static.inputs[0].get_partial_shape()) == "[3,3,8,8]"
    assert str(dynamic.inputs[0].get_partial_shape()) == "[?,3,8,8]"


def test_measure_and_compare_latency_on_openvino():
    net = _net()
    rows = measure_latency(net, (3, 8, 8), batch_sizes=(1, 3), runtimes=("openvino",), **FAST)
    assert [(r.runtime, r.batch, r.repeats) for r in rows] == [("openvino", 1, 3), ("openvino", 3, 3)]
    assert all(r.median_ms > 0 for r in rows)
    cmp = compare_latency(net, TinyNet(width=2), (3, 8, 8), batch_sizes=(2,), runtimes=("torch", "openvino"), **FAST)
    assert [(r.runtime, r.batch) for r in cmp.rows] == [("torch", 2), ("openvino", 2)]


def test_the_benchmarked_openvino_runner_computes_the_model(monkeypatch):
    """The timed callable must run this model on these inputs (a runner timing nothing would be fast)."""
    from prunus.deploy import bench

    net = _net()
    with bench._inference([net]):
        runner = bench._runners(net, (3, 8, 8), (4,), ("openvino",), 1)["openvino", 4]
        out = runner()
    x = torch.randn((4, 3, 8, 8), generator=torch.Generator().manual_seed(0))  # the runners' own inputs
    np.testing.assert_allclose(out["logits"], _eager(net, x), atol=1e-5, rtol=0)


def test_latency_budget_accepts_openvino():
    assert PruneBudget(keep_latency=0.5, runtime="openvino").runtime == "openvino"


def test_latency_table_measures_on_openvino(tmp_path):
    from prunus.pruning.latency_table import build_table

    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1))
    seen = []

    def measure(module, shape, runtime, batch, threads):
        from prunus.pruning.latency_table import measure_ms

        seen.append(runtime)
        return measure_ms(module, shape, runtime, batch, threads)

    table = build_table(
        net, _x(1), [("0", "out")], runtime="openvino", batch=2, threads=1, cache_dir=tmp_path, measure=measure
    )
    assert set(seen) == {"openvino"}
    assert table.runtime == "openvino"
    assert table.layers["0"]["out"] == [2, 4, 6, 8]
    assert table.dense_ms > 0


# ---- CLI -------------------------------------------------------------------------------------


@pytest.fixture
def model_dir(tmp_path):
    torch.manual_seed(0)
    model = create_model("lenet5", num_classes=10, in_channels=1, width_mult=0.25)
    return save(model, tmp_path / "model", input_shape=(1, 28, 28))


def test_cli_export_openvino_default_path_and_check(model_dir, capsys):
    from prunus.cli import main
    from prunus.formats import load

    assert main(["export", str(model_dir), "--format", "openvino"]) == 0
    captured = capsys.readouterr()
    printed = captured.out
    assert "prunus: OpenVINO export: converting" in captured.err  # progress: conversion can take minutes
    assert "prunus: OpenVINO export: compiling (f32) and checking at batch 1 and 3" in captured.err
    assert f"wrote {model_dir / 'model.xml'}" in printed
    assert f"wrote {model_dir / 'model.bin'}" in printed
    core = ov.Core()
    compiled = core.compile_model(core.read_model(model_dir / "model.xml"), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    x = torch.randn(5, 1, 28, 28)
    np.testing.assert_allclose(compiled(x.numpy())[0], _eager(load(model_dir), x), atol=1e-5, rtol=0)
    # a second export needs --force (the pair exists now), and with it replaces both
    assert main(["export", str(model_dir), "--format", "openvino"]) == 2
    assert "--force" in capsys.readouterr().err
    assert main(["export", str(model_dir), "--format", "openvino", "--force"]) == 0


def test_cli_bench_openvino_names_the_fastest(model_dir, tmp_path, capsys):
    from prunus.cli import main

    out = tmp_path / "b.json"
    argv = ["bench", str(model_dir), "--batch-sizes", "1,2", "--repeats", "2", "--warmup", "0", "--threads", "1"]
    assert main([*argv, "--runtimes", "torch,openvino", "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    assert [(r["runtime"], r["batch"]) for r in data["latency"]] == [
        ("torch", 1),
        ("torch", 2),
        ("openvino", 1),
        ("openvino", 2),
    ]
    assert data["versions"]["openvino"] == ov.__version__
    for b in (1, 2):
        winner = min((r for r in data["latency"] if r["batch"] == b), key=lambda r: r["median_ms"])["runtime"]
        assert data["fastest"][str(b)] == winner


@pytest.mark.parametrize(
    "argv",
    [
        ["bench", "MODEL", "--runtimes", "openvino", "--repeats", "1"],
        ["export", "MODEL", "--format", "openvino"],
    ],
)
def test_missing_openvino_is_one_line_naming_the_extra(argv, model_dir, monkeypatch, capsys):
    from prunus.cli import main

    monkeypatch.setitem(sys.modules, "openvino", None)  # makes `import openvino` raise ImportError
    before = sorted(p.name for p in model_dir.iterdir())
    assert main([str(model_dir) if a == "MODEL" else a for a in argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "pip install 'prunus[openvino]'" in err
    assert sorted(p.name for p in model_dir.iterdir()) == before


def test_missing_openvino_in_the_api(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "openvino", None)
    with pytest.raises(MissingDependencyError, match=r"needs openvino: pip install 'prunus\[openvino\]'"):
        export_openvino(_net(), tmp_path / "m.xml", _x(2))
    with pytest.raises(MissingDependencyError, match=r"runtime openvino needs openvino"):
        measure_latency(_net(), (3, 8, 8), batch_sizes=(1,), runtimes=("openvino",), **FAST)
    assert list(tmp_path.iterdir()) == []


def test_force_replaces_only_an_openvino_pair_prunus_wrote(model_dir, tmp_path, capsys):
    """The IR carries a prunus entry in its <rt_info>; a foreign model.xml / model.bin is never replaced."""
    from prunus.cli import main
    from prunus.formats.outputs import written_by_prunus

    out = tmp_path / "ir" / "m.xml"
    out.parent.mkdir()
    assert main(["export", str(model_dir), "--format", "openvino", "--out", str(out)]) == 0
    assert written_by_prunus(out)
    assert written_by_prunus(out.with_suffix(".bin"))
    foreign = tmp_path / "ir" / "other.xml"
    foreign.write_text('<?xml version="1.0"?><net name="theirs"><rt_info><x value="1"/></rt_info></net>')
    foreign.with_suffix(".bin").write_bytes(b"\0" * 16)
    assert not written_by_prunus(foreign)
    assert not written_by_prunus(foreign.with_suffix(".bin"))
    capsys.readouterr()
    assert main(["export", str(model_dir), "--format", "openvino", "--out", str(foreign), "--force"]) == 2
    assert "was not written by prunus" in capsys.readouterr().err
    assert foreign.read_text().startswith('<?xml version="1.0"?><net name="theirs">')
