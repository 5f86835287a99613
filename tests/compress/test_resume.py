"""The DE search resumes after a kill exactly where it stopped, and shows progress while it runs."""

from __future__ import annotations

import copy
import json
import struct

import pytest
import torch
from torch import nn

from prunus.compress import CompressConfig, compress
from prunus.compress.checkpoint import fingerprint, load_checkpoint, save_checkpoint
from prunus.compress.search import SearchSettings, SearchState, search
from prunus.errors import CorruptFileError


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 6, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(6 * 36, 16), nn.ReLU(), nn.Linear(16, 4)
    ).eval()


def _x(n: int = 48) -> torch.Tensor:
    return torch.randn((n, 1, 6, 6), generator=torch.Generator().manual_seed(1))


SETTINGS = SearchSettings(population=4, generations=2, elite=1, cycles=3, seed=3)


def _search(model, resume=None, on_cycle=None, **kw):
    x = _x()
    with torch.no_grad():
        t = _net()(x)
    return search(model, x, t, 0.6, SETTINGS, x_big=_x(64), teacher_big=_net()(_x(64)).detach(),
                  resume=resume, on_cycle=on_cycle, **kw)  # fmt: skip


@pytest.mark.parametrize("after", [1, 2])
def test_search_resumed_from_any_cycle_ends_identical(after, capsys):
    from prunus.compress.progress import CompressProgress

    states: list[SearchState] = []
    full_model = _net()
    full = _search(full_model, on_cycle=states.append)
    assert [s.cycle for s in states] == [1, 2, 3]
    resumed_model = _net()  # a fresh copy of the input model, as a new process has
    lines = CompressProgress(True, interactive=False)
    again = _search(resumed_model, resume=copy.deepcopy(states[after - 1]), progress=lines)
    shown = [line.split(":")[0] for line in capsys.readouterr().out.splitlines()]
    assert shown == [f"DE search resumed after cycle {after}/3"] + [f"DE cycle {c}/3" for c in range(after + 1, 4)]
    assert full.masks.keys() == again.masks.keys()
    assert all(torch.equal(full.masks[n], again.masks[n]) for n in full.masks)
    fs, rs = full_model.state_dict(), resumed_model.state_dict()
    assert all(torch.equal(fs[k], rs[k]) for k in fs)  # bit for bit, zeros included
    assert again.log == full.log
    assert again.kl == full.kl


def test_a_resume_restores_the_generator_not_just_the_masks():
    """Without the generator state the later cycles draw other candidates: the result must differ then."""
    states: list[SearchState] = []
    full = _search(_net(), on_cycle=states.append)
    fresh_rng = SearchState(1, states[0].masks, torch.Generator().manual_seed(99).get_state(), states[0].log,
                            states[0].kl)  # fmt: skip
    other = _search(_net(), resume=fresh_rng)
    assert any(not torch.equal(full.masks[n], other.masks[n]) for n in full.masks)


def test_checkpoint_file_round_trip_and_refusals(tmp_path):
    states: list[SearchState] = []
    _search(_net(), on_cycle=states.append)
    path = tmp_path / "ckpt.safetensors"
    shapes = {n: tuple(m.shape) for n, m in states[1].masks.items()}
    save_checkpoint(path, states[1], "job", cycles=3)
    back = load_checkpoint(path, "job", shapes, cycles=3)
    assert back.cycle == 2
    assert all(torch.equal(back.masks[n], states[1].masks[n]) for n in shapes)
    assert torch.equal(back.rng, states[1].rng)
    assert back.log == states[1].log
    assert back.kl == states[1].kl
    assert load_checkpoint(path, "another job", shapes, cycles=3) is None  # changed job: start over
    assert load_checkpoint(path, "job", shapes, cycles=4) is None
    assert load_checkpoint(tmp_path / "none", "job", shapes, cycles=3) is None
    with pytest.raises(CorruptFileError, match="masks|tensors do not match"):
        load_checkpoint(path, "job", {**shapes, "extra": (2,)}, cycles=3)
    with pytest.raises(CorruptFileError, match="mask of 0 is"):
        load_checkpoint(path, "job", {**shapes, "0": (1, 2)}, cycles=3)
    for bad in (b"", b"\x00" * 7, struct.pack("<Q", 1 << 40) + b"{}", struct.pack("<Q", 2) + b"{}"):
        path.write_bytes(bad)
        with pytest.raises(CorruptFileError):
            load_checkpoint(path, "job", shapes, cycles=3)


def test_fingerprint_names_the_job():
    a = fingerprint({"seed": 0}, 0.5, [torch.ones(2), torch.zeros(3)])
    assert a == fingerprint({"seed": 0}, 0.5, [torch.ones(2), torch.zeros(3)])
    assert a != fingerprint({"seed": 1}, 0.5, [torch.ones(2), torch.zeros(3)])
    assert a != fingerprint({"seed": 0}, 0.6, [torch.ones(2), torch.zeros(3)])
    assert a != fingerprint({"seed": 0}, 0.5, [torch.ones(2), torch.zeros(2)])
    assert a != fingerprint({"seed": 0}, 0.5, [torch.ones(2), torch.tensor([0.0, 0.0, 1e-30])])


def _model():
    import prunus

    torch.manual_seed(0)
    return prunus.create_model("lenet300_100", in_channels=1, width_mult=0.1).eval()


CFG = CompressConfig(sparsity=0.7, bits=4, calib_size=64, rescore_size=96, verify_size=32, cycles=3, population=4,
                     generations=1, elite=1, finetune_steps=20)  # fmt: skip


def test_compress_resumes_from_its_checkpoint_to_the_same_file(tmp_path, monkeypatch):
    from prunus.compress import checkpoint as ckpt_module
    from prunus.compress.prn import read_prn

    x = torch.randn(128, 1, 28, 28, generator=torch.Generator().manual_seed(2))
    full = compress(_model(), x, CFG, out=tmp_path / "full.prn", checkpoint=tmp_path / "full.ckpt")
    # a run that "dies" after cycle 2's checkpoint: the writer raises where the kill point is
    calls = []

    def dying(label):
        calls.append(label)
        if len(calls) == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(ckpt_module, "crash_point", dying)
    with pytest.raises(KeyboardInterrupt):
        compress(_model(), x, CFG, out=tmp_path / "again.prn", checkpoint=tmp_path / "again.ckpt")
    assert not (tmp_path / "again.prn").exists()
    state = load_checkpoint(tmp_path / "again.ckpt", _job(x), _shapes(), cycles=3)
    assert state.cycle == 2
    monkeypatch.undo()
    again = compress(_model(), x, CFG, out=tmp_path / "again.prn", checkpoint=tmp_path / "again.ckpt")
    a, b = read_prn(tmp_path / "full.prn"), read_prn(tmp_path / "again.prn")
    assert a.header == b.header
    assert a.tensors.keys() == b.tensors.keys()
    assert all((a.tensors[k] == b.tensors[k]).all() for k in a.tensors)
    assert again.search_log == full.search_log


def _job(x):
    from dataclasses import asdict

    model = _model()
    xs, xb = x[: CFG.calib_size], x[: CFG.rescore_size]
    with torch.no_grad():
        ts, tb = model(xs), model(xb)
    return fingerprint(asdict(CFG.search_settings()), CFG.sparsity, [xs, xb, ts, tb, *model.state_dict().values()])


def _shapes():
    from prunus.compress.runner import prunable_layers

    return {n: tuple(m.weight.shape) for n, m in prunable_layers(_model()).items()}


def test_progress_lines_show_cycles_candidates_and_finetune_steps(capsys, tmp_path):
    from prunus.compress.prn import read_prn

    x = torch.randn(128, 1, 28, 28, generator=torch.Generator().manual_seed(2))
    watched = CompressConfig(**{**CFG.to_json(), "progress": True})
    report = compress(_model(), x, watched, baselines=False, out=tmp_path / "watched.prn")
    lines = capsys.readouterr().out.splitlines()
    cycles = [line for line in lines if line.startswith("DE cycle ")]
    assert [line.split(":")[0] for line in cycles] == ["DE cycle 1/3", "DE cycle 2/3", "DE cycle 3/3"]
    # per cycle and layer that removes weights: the magnitude set, P-1 random sets, G * (P-1-E)
    # children, then 1+E finalists on the re-score batch: 1 + 3 + 1*2 + 2 = 8 candidates
    per_cycle = {}
    for rec in report.search_log:
        per_cycle[rec["cycle"]] = per_cycle.get(rec["cycle"], 0) + 8
    for line in cycles:
        cycle = int(line.split("/")[0].split()[-1])
        assert f"candidates {per_cycle[cycle]} " in line
    sparsity = [float(line.split("sparsity ")[1].split()[0]) for line in cycles]
    assert sparsity == sorted(sparsity)
    assert sparsity[-1] == pytest.approx(0.7, abs=0.01)
    steps = [line for line in lines if line.startswith("fine-tune step ")]
    assert [line.split(":")[0] for line in steps] == [f"fine-tune step {s}/20" for s in range(2, 21, 2)]
    assert any(line.startswith("bits per layer: 4-4") for line in lines)
    quiet = compress(_model(), x, CFG, baselines=False, out=tmp_path / "quiet.prn")
    assert capsys.readouterr().out == ""
    assert json.dumps(quiet.search_log) == json.dumps(report.search_log)  # watching changes nothing
    assert read_prn(tmp_path / "watched.prn").header == read_prn(tmp_path / "quiet.prn").header
