"""Latency tables by value: monotone along BOTH width axes, and extrapolated below the narrowest timed width."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from prunus.pruning.latency_table import LatencyTable, build_table


def _noisy_ms(cin: int, cout: int) -> float:
    """A timer's answer with noise that makes some wider layers look faster, along both axes."""
    return cin * cout / 256 + 0.5 * ((cin * 7 + cout * 13) % 5)


def test_measured_grid_is_the_running_maximum_along_both_axes(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 24, 3, padding=1)).eval()

    def measure(module, shape, runtime, batch, threads):
        if isinstance(module, nn.Conv2d):
            return _noisy_ms(module.in_channels, module.out_channels)
        return 10.0

    table = build_table(
        model, torch.zeros(1, 3, 8, 8), [("0", "out"), ("2", "in"), ("2", "out")],
        runtime="torch", batch=1, cache_dir=tmp_path, measure=measure,
    )  # fmt: skip
    layer = table.layers["2"]
    ins, outs, ms = layer["in"], layer["out"], layer["ms"]
    assert len(ins) > 2
    assert len(outs) > 2
    raw = [[_noisy_ms(i, o) for o in outs] for i in ins]
    # the noise really goes the wrong way along each axis
    assert any(raw[i][j + 1] < raw[i][j] for i in range(len(ins)) for j in range(len(outs) - 1))
    assert any(raw[i + 1][j] < raw[i][j] for i in range(len(ins) - 1) for j in range(len(outs)))
    for i in range(len(ins)):
        for j in range(len(outs)):
            expected = max(raw[a][b] for a in range(i + 1) for b in range(j + 1))
            assert ms[i][j] == pytest.approx(expected), (ins[i], outs[j])


def _table(ms, depthwise=False):
    layer = {"in": [4, 8], "out": [4, 8], "ms": ms, "depthwise": depthwise}
    return LatencyTable("k", "torch", 1, 1, 1.0, {"c": layer})


def test_widths_below_the_narrowest_timed_one_follow_the_first_segment():
    t = _table([[1.0, 2.0], [1.5, 3.0]])
    # output width 2: each input row extrapolates its first segment (slope per channel 0.25 and 0.375)
    assert t.layer_ms("c", 8, 2) == pytest.approx(1.5 - 2 * 0.375)
    assert t.layer_ms("c", 4, 1) == pytest.approx(1.0 - 3 * 0.25)
    # input width 2 at output width 8: along the input axis, slope (3.0 - 2.0) / 4
    assert t.layer_ms("c", 2, 8) == pytest.approx(2.0 - 2 * 0.25)
    # never below zero
    assert t.layer_ms("c", 1, 1) >= 0.0
    steep = _table([[1.0, 9.0], [2.0, 10.0]])
    assert steep.layer_ms("c", 4, 1) == 0.0  # 1 - 3 * 2 < 0
    # inside the grid: plain bilinear interpolation
    assert t.layer_ms("c", 6, 6) == pytest.approx((1.5 + 2.25) / 2)


def test_depthwise_layers_extrapolate_along_their_diagonal():
    t = _table([[1.0, 0.0], [0.0, 3.0]], depthwise=True)
    assert t.layer_ms("c", 2, 2) == pytest.approx(1.0 - 2 * 0.5)
    assert t.layer_ms("c", 6, 6) == pytest.approx(2.0)
