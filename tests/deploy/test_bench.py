"""Latency / size benchmarks: row structure, ratios and MACs consistency. Never asserts on timings."""

from __future__ import annotations

import json
import math
import sys

import pytest
import torch
from torch import nn

from prunus.deploy.bench import LatencyComparison, benchmark_model, compare_latency, measure_latency
from prunus.errors import ConfigError
from prunus.formats import save
from prunus.measure import count
from prunus.models import create_model

FAST = {"warmup": 1, "repeats": 3, "threads": 1}  # structure only: timings are never compared


def _net(width: int) -> nn.Module:
    """conv(1->2w) -> relu -> conv(2w->2w) -> flatten -> linear, no conv bias; on (1, 6, 6) inputs."""
    torch.manual_seed(0)
    c = 2 * width
    return nn.Sequential(
        nn.Conv2d(1, c, 3, padding=1, bias=False),
        nn.ReLU(),
        nn.Conv2d(c, c, 3, padding=1, bias=False),
        nn.BatchNorm2d(c),
        nn.Flatten(),
        nn.Linear(c * 36, 3),
    )


SHAPE = (1, 6, 6)


def _check_row(row, runtime: str, batch: int) -> None:
    assert (row.runtime, row.batch, row.repeats) == (runtime, batch, FAST["repeats"])
    assert math.isfinite(row.median_ms)
    assert row.median_ms > 0
    assert row.p90_ms >= row.median_ms
    assert row.iqr_ms >= 0
    assert row.images_per_s == pytest.approx(batch * 1e3 / row.median_ms)


def test_measure_latency_one_row_per_runtime_and_batch():
    net = _net(2).train()
    rows = measure_latency(net, SHAPE, batch_sizes=(1, 3), runtimes=("torch", "onnxruntime"), **FAST)
    assert [(r.runtime, r.batch) for r in rows] == [("torch", 1), ("torch", 3), ("onnxruntime", 1), ("onnxruntime", 3)]
    for row in rows:
        _check_row(row, row.runtime, row.batch)
    assert net.training  # measured in eval mode, handed back in the mode it came in
    assert torch.is_grad_enabled()


def test_default_runtimes_are_the_installed_ones(monkeypatch):
    from prunus.deploy.bench import RUNTIMES, available_runtimes

    assert available_runtimes() == RUNTIMES  # the dev set-up installs every extra
    monkeypatch.setitem(sys.modules, "openvino", None)  # `import openvino` fails: not installed
    assert available_runtimes() == ("torch", "torch-folded", "onnxruntime")
    rows = measure_latency(_net(1), SHAPE, batch_sizes=(1,), warmup=0, repeats=1, threads=1)
    assert [r.runtime for r in rows] == ["torch", "torch-folded", "onnxruntime"]


def test_measure_latency_restores_torch_threads():
    before = torch.get_num_threads()
    measure_latency(_net(1), SHAPE, batch_sizes=(1,), runtimes=("torch",), warmup=0, repeats=1, threads=1)
    assert torch.get_num_threads() == before


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"runtimes": ("tensorrt",)}, "choose from torch, torch-folded, onnxruntime, openvino"),
        ({"batch_sizes": (0, 4)}, "batch sizes must be positive"),
        ({"batch_sizes": ()}, "batch sizes must be positive"),
        ({"repeats": 0}, "repeats must be >= 1"),
    ],
)
def test_measure_latency_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        measure_latency(_net(1), SHAPE, **kwargs)


@pytest.mark.parametrize(
    ("shape", "match"),
    [
        ((1, 6), r"^input_shape \(1, 6\) does not fit the model: "),  # a 1-d shape for a 2-d conv net
        ((1, 6, 6, 6), r"^input_shape \(1, 6, 6, 6\) does not fit the model: "),
        ((0, 6, 6), r"^input_shape must be one sample's shape"),
        ((1, (6, 6)), r"^input_shape must be one sample's shape"),
    ],
)
def test_measure_latency_rejects_bad_input_shape(shape, match):
    with pytest.raises(ConfigError, match=match):
        measure_latency(_net(1), shape, runtimes=("torch",))
    with pytest.raises(ConfigError, match=match):
        benchmark_model(_net(1), shape, runtimes=("torch",))


def test_compare_latency_ratios_are_consistent_with_count():
    dense, half = _net(4), _net(2)
    cmp = compare_latency(dense, half, SHAPE, batch_sizes=(1, 4), **FAST)
    assert isinstance(cmp, LatencyComparison)
    # conv1 36*c*9 + conv2 36*c*c*9 + fc c*36*3 with c = 8 and 4: 24192 / 6912 MACs
    assert (cmp.dense_macs, cmp.pruned_macs) == (24192, 6912)
    assert cmp.macs_ratio == 3.5
    assert cmp.macs_ratio == count(dense, SHAPE).macs / count(half, SHAPE).macs
    assert cmp.params_ratio == count(dense, SHAPE).params / count(half, SHAPE).params
    assert [(r.runtime, r.batch) for r in cmp.rows] == [
        ("torch", 1),
        ("torch", 4),
        ("torch-folded", 1),
        ("torch-folded", 4),
        ("onnxruntime", 1),
        ("onnxruntime", 4),
        ("openvino", 1),
        ("openvino", 4),
    ]
    for row, d, p in zip(cmp.rows, cmp.dense, cmp.pruned):
        _check_row(d, row.runtime, row.batch)
        _check_row(p, row.runtime, row.batch)
        assert (row.dense_ms, row.pruned_ms) == (d.median_ms, p.median_ms)
        assert row.speedup == pytest.approx(d.median_ms / p.median_ms)
        assert row.efficiency == pytest.approx(row.speedup / 3.5)
    # headline: batch 64 is absent, so the largest measured batch, best runtime
    assert cmp.latency_efficiency() == max(r.efficiency for r in cmp.rows if r.batch == 4)
    assert cmp.latency_efficiency(1) == max(r.efficiency for r in cmp.rows if r.batch == 1)
    best = cmp.best_runtime(1)
    assert next(r.efficiency for r in cmp.rows if (r.runtime, r.batch) == (best, 1)) == cmp.latency_efficiency(1)
    with pytest.raises(ConfigError, match="batch 16 was not measured"):
        cmp.latency_efficiency(16)
    data = json.loads(json.dumps(cmp.to_dict()))
    assert data["macs_ratio"] == 3.5
    assert data["best_runtime"] == cmp.best_runtime()
    assert len(data["speedups"]) == len(data["dense"]) == len(data["pruned"]) == 8


def test_benchmark_model_reports_counts_bytes_and_rows(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"x" * 100)
    (tmp_path / "model.json").write_text("{}")
    (tmp_path / "model.onnx").write_bytes(b"x" * 1000)  # an export next to the model: listed, not counted
    net = _net(2)
    res = benchmark_model(net, SHAPE, model_dir=tmp_path, batch_sizes=(2,), **FAST)
    assert (res["macs"], res["params"]) == (count(net, SHAPE).macs, count(net, SHAPE).params)
    assert res["macs"] == 6912
    assert res["files"] == {"model.json": 2, "model.onnx": 1000, "model.safetensors": 100}
    assert res["bytes"] == 102
    single = benchmark_model(
        net, SHAPE, model_dir=tmp_path / "model.onnx", batch_sizes=(1,), runtimes=("torch",), **FAST
    )
    assert (single["bytes"], single["files"]) == (1000, {"model.onnx": 1000})
    assert res["input_shape"] == [1, 6, 6]
    assert [(r["runtime"], r["batch"]) for r in res["latency"]] == [
        ("torch", 2),
        ("torch-folded", 2),
        ("onnxruntime", 2),
        ("openvino", 2),
    ]
    best = min(res["latency"], key=lambda r: r["median_ms"])
    assert res["fastest"] == {2: best["runtime"]}
    assert set(res["versions"]) == {"torch", "onnxruntime", "openvino"}
    json.dumps(res)  # JSON-able as is
    assert benchmark_model(net, SHAPE, batch_sizes=(1,), runtimes=("torch",), **FAST)["bytes"] is None


# ---- CLI -------------------------------------------------------------------------------------


@pytest.fixture
def model_dir(tmp_path):
    model = create_model("lenet5", num_classes=10, in_channels=1, width_mult=0.25)
    return save(model, tmp_path / "model", input_shape=(1, 28, 28))


def test_cli_bench_prints_table_and_writes_json(model_dir, tmp_path, capsys):
    from prunus.cli import main

    out = tmp_path / "res" / "bench.json"
    argv = ["bench", str(model_dir), "--batch-sizes", "1,2", "--repeats", "2", "--warmup", "0", "--threads", "1"]
    assert main([*argv, "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "onnxruntime" in printed
    assert "median ms" in printed
    data = json.loads(out.read_text())
    assert [p.name for p in out.parent.iterdir()] == ["bench.json"]  # written atomically, no temp left
    assert data["model_dir"] == str(model_dir)
    assert data["input_shape"] == [1, 28, 28]
    assert data["bytes"] == sum((model_dir / n).stat().st_size for n in ("model.json", "model.safetensors"))
    assert [(r["runtime"], r["batch"]) for r in data["latency"]] == [
        ("torch", 1),
        ("torch", 2),
        ("torch-folded", 1),
        ("torch-folded", 2),
        ("onnxruntime", 1),
        ("onnxruntime", 2),
        ("openvino", 1),
        ("openvino", 2),
    ]
    assert all(r["median_ms"] > 0 for r in data["latency"])
    for b in (1, 2):  # the winner is named, and it is the fastest row of that batch
        winner = min((r for r in data["latency"] if r["batch"] == b), key=lambda r: r["median_ms"])["runtime"]
        assert data["fastest"][str(b)] == winner
        assert f"fastest at batch {b}: {winner}" in printed


@pytest.mark.parametrize(
    ("flags", "match"),
    [
        (["--batch-sizes", "1,x"], "--batch-sizes must be comma-separated positive integers"),
        (["--batch-sizes", "0"], "--batch-sizes must be comma-separated positive integers"),
        (["--runtimes", "torch,tvm"], "choose from: torch, torch-folded, onnxruntime, openvino"),
        (["--repeats", "0"], "--repeats"),
    ],
)
def test_cli_bench_bad_flags_exit_2_one_line(model_dir, flags, match, capsys):
    from prunus.cli import main

    assert main(["bench", str(model_dir), *flags]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert match in err


def test_cli_bench_missing_dir_exit_2(tmp_path, capsys):
    from prunus.cli import main

    assert main(["bench", str(tmp_path / "nope"), "--repeats", "1"]) == 2
    assert "model directory not found" in capsys.readouterr().err


def test_bytes_of_a_run_directory_are_its_models_not_its_checkpoint(tmp_path):
    """`prunus bench runs/r20 runs/r20-half` names run directories: the bytes compared are the models'."""
    from prunus.deploy.bench import _files

    run = tmp_path / "run"
    save(create_model("lenet5", in_channels=1, width_mult=0.25), run / "model", input_shape=(1, 28, 28))
    (run / "checkpoint.pt").write_bytes(b"\0" * 100_000)  # what a training run leaves next to its model
    (run / "metrics.jsonl").write_text("{}\n")
    model_files = sum(p.stat().st_size for p in (run / "model").iterdir())
    assert _files(run)[1] == _files(run / "model")[1] == model_files
