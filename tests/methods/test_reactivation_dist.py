"""Grafting across 2 real gloo processes == grafting in one process; a dead or hung rank fails fast."""

from __future__ import annotations

import importlib.util
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from prunus.engine.parallel import fit_population

pytestmark = [pytest.mark.distributed, pytest.mark.slow]

WORKER = Path(__file__).with_name("graft_dist_worker.py")


def _worker_module():
    spec = importlib.util.spec_from_file_location("graft_dist_worker", WORKER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_distributed_grafting_equals_in_process_grafting(tmp_path, torchrun):
    proc = torchrun([str(WORKER), str(tmp_path), "none"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    in_process = fit_population(_worker_module().make, 2)
    for rank, (trainer, _) in enumerate(in_process):
        remote = load_file(tmp_path / f"rank{rank}.safetensors")
        local = trainer.model.state_dict()
        assert remote.keys() == local.keys()
        for k in local:
            assert torch.equal(remote[k], local[k]), (rank, k)
    # the networks are saved as the last epoch scored them (no graft after it): they differ
    assert not torch.equal(
        load_file(tmp_path / "rank0.safetensors")["fc.weight"], load_file(tmp_path / "rank1.safetensors")["fc.weight"]
    )


@pytest.mark.parametrize("mode", ["hang", "die"])
def test_a_hung_or_dead_rank_is_an_error_not_a_hang(tmp_path, torchrun, monkeypatch, mode):
    monkeypatch.setenv("PRUNUS_PEER_TIMEOUT", "5")
    start = time.monotonic()
    proc = torchrun([str(WORKER), str(tmp_path), mode], tmp_path, timeout=120)
    assert proc.returncode != 0
    assert time.monotonic() - start < 100
    if mode == "hang":  # rank 0 itself reports the stuck peer, naming the limit
        assert "PeerError" in proc.stderr
        assert "peer exchange failed within 5s" in proc.stderr
    assert not (tmp_path / "rank0.safetensors").exists()
