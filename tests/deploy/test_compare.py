"""Several models side by side: ratios to the first, end to end on each model's fastest runtime, paired spread.

Timings are never compared with each other: the ratio arithmetic is checked on runners whose "time"
is set by the test (`_timed` patched to return it), and the real measurement only for structure.
"""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from prunus.deploy import compare
from prunus.deploy.compare import Ratio, compare_models, interleaved_times
from prunus.errors import ConfigError
from prunus.formats import save
from prunus.measure import count
from prunus.models import create_model

SHAPE = (1, 6, 6)


def _net(width: int) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, width, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(width * 36, 3))


def test_ratio_is_the_median_of_per_repeat_ratios():
    assert Ratio.of([2.0, 4.0, 6.0], [1.0, 1.0, 2.0]) == Ratio(3.0, 2.5, 3.5)
    # paired: a load that doubles both in one repeat leaves the ratio alone
    assert Ratio.of([10.0, 20.0, 10.0, 20.0], [5.0, 10.0, 5.0, 10.0]) == Ratio(2.0, 2.0, 2.0)


def test_interleaved_times_rotates_and_reverses_the_order(monkeypatch):
    calls: list[str] = []
    monkeypatch.setattr(compare, "_timed", lambda fn: fn())

    def runner(name):
        return lambda: calls.append(name) or 1.0

    times = interleaved_times([runner("a"), runner("b"), runner("c")], warmup=1, repeats=4)
    assert times == [[1.0] * 4] * 3
    warm, timed = calls[:3], calls[3:]
    assert warm == ["a", "b", "c"]
    # repeat 0: a b c; 1: rotated by 1 (b c a) and reversed; 2: rotated by 2; 3: rotated by 3 = 0, reversed
    assert timed == ["a", "b", "c", "a", "c", "b", "c", "a", "b", "c", "b", "a"]


class _Fake(nn.Module):
    """A model whose 'latency' on each runtime is set by the test (ms per image)."""

    def __init__(self, width: int, ms: dict[str, float]) -> None:
        super().__init__()
        self.net = _net(width)
        self.ms = ms

    def forward(self, x):
        return self.net(x)


def test_end_to_end_is_reference_torch_over_each_models_fastest_runtime(monkeypatch):
    """Dense: torch 10 ms/img, onnxruntime 4; pruned: torch 6, onnxruntime 2 (x a load factor per repeat)."""
    load = [1.0, 3.0, 1.0, 3.0, 2.0]
    counters: dict[int, int] = {}

    def fake_runners(model, shape, batches, rts, threads):
        def runner(rt, b):
            key = id(model), rt, b

            def run():
                i = counters.get(key, 0)
                counters[key] = i + 1
                return model.ms[rt] * b * load[i % len(load)] / 1e3

            return run

        return {(rt, b): runner(rt, b) for rt in rts for b in batches}

    monkeypatch.setattr(compare, "_runners", fake_runners)
    monkeypatch.setattr(compare, "_timed", lambda fn: fn())
    dense = _Fake(8, {"torch": 10.0, "onnxruntime": 4.0})
    pruned = _Fake(4, {"torch": 6.0, "onnxruntime": 2.0})
    cmp = compare_models(
        [dense, pruned], SHAPE, names=["d", "p"], batch_sizes=(1, 4), runtimes=("torch", "onnxruntime"),
        warmup=0, repeats=5, threads=1,
    )  # fmt: skip
    assert cmp.fastest == ({1: "onnxruntime", 4: "onnxruntime"}, {1: "onnxruntime", 4: "onnxruntime"})
    for b in (1, 4):
        assert cmp.end_to_end[0][b] == Ratio(2.5, 2.5, 2.5)  # what the runtime alone buys
        assert cmp.end_to_end[1][b] == Ratio(5.0, 5.0, 5.0)  # 10 / 2: pruning and the runtime together
        assert cmp.per_runtime[1]["torch", b] == pytest.approx(Ratio(10 / 6, 10 / 6, 10 / 6))
        assert cmp.per_runtime[1]["onnxruntime", b] == Ratio(2.0, 2.0, 2.0)
        assert cmp.per_runtime[0]["torch", b] == Ratio(1.0, 1.0, 1.0)
    rows = {(r.runtime, r.batch): r for r in cmp.latency[1]}
    assert rows["onnxruntime", 4].median_ms == pytest.approx(2.0 * 4 * 2.0)  # median load factor 2
    assert cmp.macs == (count(dense, SHAPE).macs, count(pruned, SHAPE).macs)
    data = json.loads(json.dumps(cmp.to_dict()))
    assert data["reference"] == "d"
    p = data["models"][1]
    assert p["macs_ratio"] == cmp.macs[0] / cmp.macs[1]
    assert p["params_ratio"] == cmp.params[0] / cmp.params[1]
    assert p["end_to_end"]["4"] == {"runtime": "onnxruntime", "median": 5.0, "q25": 5.0, "q75": 5.0}


def test_compare_models_real_measurement_structure():
    dense, half = _net(8), _net(4)
    cmp = compare_models([dense, half], SHAPE, batch_sizes=(2,), runtimes=("torch", "openvino"), warmup=1, repeats=3)
    assert cmp.names == ("model0", "model1")
    assert [(r.runtime, r.batch, r.repeats) for r in cmp.latency[1]] == [("torch", 2, 3), ("openvino", 2, 3)]
    for k in (0, 1):
        best = min(cmp.latency[k], key=lambda r: r.median_ms).runtime
        assert cmp.fastest[k] == {2: best}
        e = cmp.end_to_end[k][2]
        assert e.q25 <= e.median <= e.q75


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"runtimes": ("onnxruntime",)}, "runtimes must include 'torch'"),
        ({"names": ["a"]}, "2 models but 1 names"),
    ],
)
def test_compare_models_rejects(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        compare_models([_net(2), _net(1)], SHAPE, batch_sizes=(1,), repeats=1, **kwargs)
    with pytest.raises(ConfigError, match="two or more models"):
        compare_models([_net(2)], SHAPE, batch_sizes=(1,), runtimes=("torch",), repeats=1)


# ---- CLI -------------------------------------------------------------------------------------


@pytest.fixture
def two_models(tmp_path):
    torch.manual_seed(0)
    dense = create_model("lenet5", num_classes=10, in_channels=1, width_mult=0.5)
    small = create_model("lenet5", num_classes=10, in_channels=1, width_mult=0.25)
    return save(dense, tmp_path / "dense", input_shape=(1, 28, 28)), save(
        small, tmp_path / "small", input_shape=(1, 28, 28)
    )


def test_cli_bench_two_models_side_by_side(two_models, tmp_path, capsys):
    from prunus.cli import main

    dense, small = two_models
    out = tmp_path / "cmp.json"
    argv = ["bench", str(dense), str(small), "--batch-sizes", "1,3", "--repeats", "3", "--warmup", "0"]
    assert main([*argv, "--threads", "1", "--runtimes", "torch,onnxruntime", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    data = json.loads(out.read_text())
    assert data["reference"] == str(dense)
    assert data["input_shape"] == [1, 28, 28]
    d, s = data["models"]
    assert (d["name"], s["name"]) == (str(dense), str(small))
    assert s["macs_ratio"] == d["macs"] / s["macs"] > 1
    size = sum((small / n).stat().st_size for n in ("model.json", "model.safetensors"))
    assert s["bytes"] == size
    assert s["bytes_ratio"] == d["bytes"] / size
    for m in (d, s):
        for b in ("1", "3"):
            rows = [r for r in m["latency"] if r["batch"] == int(b)]
            assert m["fastest"][b] == min(rows, key=lambda r: r["median_ms"])["runtime"]
            assert m["end_to_end"][b]["runtime"] == m["fastest"][b]
            assert f"fastest at batch {b} for {m['name']}: {m['fastest'][b]}" in printed
    assert "end to end" in printed


@pytest.mark.parametrize(
    ("extra", "match"),
    [
        (["--runtimes", "onnxruntime"], "runtimes must include 'torch': the first model is taken in eager torch"),
        (["--input-shape", "1,20,20", "--runtimes", "torch"], "does not fit the model"),
    ],
)
def test_cli_bench_compare_bad_input_one_line(two_models, extra, match, capsys):
    from prunus.cli import main

    dense, small = two_models
    assert main(["bench", str(dense), str(small), "--repeats", "1", *extra]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert match in err


def test_cli_bench_compare_refuses_mismatched_inputs(two_models, tmp_path, capsys):
    from prunus.cli import main

    dense, _ = two_models
    other = save(create_model("lenet5", num_classes=10, in_channels=3, width_mult=0.25), tmp_path / "rgb",
                 input_shape=(3, 28, 28))  # fmt: skip
    assert main(["bench", str(dense), str(other), "--repeats", "1", "--runtimes", "torch"]) == 2
    assert "takes input 3x28x28, the first model 1x28x28" in capsys.readouterr().err
