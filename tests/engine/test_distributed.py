"""Real torch.distributed (gloo, 2 processes): replicas end identical; the CLI runs under torchrun."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

pytestmark = [pytest.mark.distributed, pytest.mark.slow]

WORKER = Path(__file__).with_name("ddp_worker.py")


def test_two_process_ddp_replicas_end_with_identical_weights(tmp_path, torchrun):
    proc = torchrun([str(WORKER), str(tmp_path)], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    w0 = load_file(tmp_path / "rank0.safetensors")
    w1 = load_file(tmp_path / "rank1.safetensors")
    assert w0.keys() == w1.keys()
    for k in w0:
        assert torch.equal(w0[k], w1[k]), k
    with safe_open(tmp_path / "rank0.safetensors", "pt") as f:
        meta = f.metadata()
    # each rank saw half the data per epoch: steps = 2 epochs x ceil(shard / batch)
    assert int(meta["steps"]) > 0
    assert float(meta["acc"]) > 0.3  # it learned, through the all-reduced gradients
    # only rank 0 wrote the checkpoint and the metrics
    assert (tmp_path / "run" / "checkpoint.pt").exists()
    assert len((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()) == 2


def test_cli_train_runs_under_torchrun(tmp_path, torchrun):
    out = tmp_path / "run"
    proc = torchrun(
        [
            "-m",
            "prunus",
            "train",
            "--model",
            "lenet5",
            "--width-mult",
            "0.5",
            "--data",
            "synthetic",
            "--epochs",
            "1",
            "--batch-size",
            "16",
            "--val-size",
            "0",
            "--no-progress",
            "--out",
            str(out),
        ],
        tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (out / "model" / "model.safetensors").exists()
    assert proc.stdout.count("run directory:") == 1  # rank 0 alone prints the summary


STATS_WORKER = Path(__file__).with_name("ddp_stats_worker.py")


def test_ddp_averages_bn_statistics_and_reduces_epoch_metrics_over_ranks(tmp_path, torchrun):
    proc = torchrun([str(STATS_WORKER), str(tmp_path)], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert r0["pre"].keys() == r0["post"].keys()
    assert r0["pre"]
    differed = 0
    for name in r0["pre"]:
        differed += not torch.equal(r0["pre"][name], r1["pre"][name])
        mean = (r0["pre"][name] + r1["pre"][name]) / 2
        torch.testing.assert_close(r0["post"][name], mean, msg=name)  # the average, not rank 0's copy
        assert torch.equal(r0["post"][name], r1["post"][name])
    assert differed > 0  # the ranks' own statistics did differ, so the average is a real check
    total = r0["local"] + r1["local"]
    assert r0["local"][0] / r0["local"][2] != pytest.approx(r1["local"][0] / r1["local"][2])
    for record in (r0["record"], r1["record"]):  # every rank reports the loss and accuracy over all ranks
        assert record["train_loss"] == pytest.approx(float(total[0] / total[2]), rel=1e-5)
        assert record["train_acc"] == pytest.approx(float(total[1] / total[2]))
