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
from prunus.errors import ConfigError, CorruptFileError


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


def _dies_at_the_second_kill_point():
    """A `crash_point` stand-in that raises where the second checkpoint's kill point is (after cycle 2)."""
    calls = []

    def dying(label):
        calls.append(label)
        if len(calls) == 2:
            raise KeyboardInterrupt

    return dying


def test_compress_resumes_from_its_checkpoint_to_the_same_file(tmp_path, monkeypatch):
    from prunus.compress import checkpoint as ckpt_module
    from prunus.compress.prn import read_prn

    x = torch.randn(128, 1, 28, 28, generator=torch.Generator().manual_seed(2))
    full = compress(_model(), x, CFG, out=tmp_path / "full.prn", checkpoint=tmp_path / "full.ckpt")
    # a run that "dies" after cycle 2's checkpoint: the writer raises where the kill point is
    monkeypatch.setattr(ckpt_module, "crash_point", _dies_at_the_second_kill_point())
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
    return fingerprint(
        asdict(CFG.resolved(model).search_settings()), CFG.sparsity, [xs, xb, ts, tb, *model.state_dict().values()]
    )


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


# ---- gradual pruning with recovery: the student trained between cycles ----

RECOVERING = SearchSettings(population=4, generations=2, elite=1, cycles=3, seed=3, recovery_steps=4)


def _recovering_search(model, calls=None, **kw):
    """`_search` with RECOVERING settings and a real KD recovery (the one `compress` runs)."""
    from prunus.compress.api import distill

    x = _x()
    teacher = _net()

    def recover(cycle, masks):
        if calls is not None:
            calls.append((cycle, {n: m.clone() for n, m in masks.items()}))
        distill(model, teacher, x, masks, steps=RECOVERING.recovery_steps, lr=1e-2, temperature=4.0, seed=cycle)

    with torch.no_grad():
        t = teacher(x)
    return search(model, x, t, 0.6, RECOVERING, x_big=_x(64), teacher_big=teacher(_x(64)).detach(), recover=recover,
                  **kw)  # fmt: skip


def test_recovery_trains_the_survivors_between_cycles_and_keeps_removed_weights_at_zero():
    calls: list = []
    model = _net()
    result = _recovering_search(model, calls)
    assert [c for c, _ in calls] == [1, 2]  # after every cycle but the last
    layers = {n: m for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}
    for name, mask in result.masks.items():
        assert not layers[name].weight[~mask].any(), name  # removed stays removed through the training
    # the survivors moved: the student is not the input model with the masks applied
    plain = _net()
    assert any(not torch.equal(layers[n].weight[m], dict(plain.named_modules())[n].weight[m])
               for n, m in result.masks.items())  # fmt: skip
    # the masks handed to the recovery are the search's own, at that cycle's sparsity
    removed = [sum(int((~m).sum()) for m in masks.values()) for _, masks in calls]
    assert 0 < removed[0] < removed[1] < sum(int((~m).sum()) for m in result.masks.values())
    # and it changes what the search finds: the later cycles rank magnitudes of trained weights
    assert any(not torch.equal(result.masks[n], _search(_net()).masks[n]) for n in result.masks)


def test_recovery_steps_zero_calls_no_recovery():
    calls: list = []
    settings = SearchSettings(population=4, generations=2, elite=1, cycles=3, seed=3, recovery_steps=0)
    x = _x()
    search(_net(), x, _net()(x).detach(), 0.6, settings, recover=lambda c, m: calls.append(c))
    assert calls == []


@pytest.mark.parametrize("after", [1, 2])
def test_search_with_recovery_resumed_from_any_cycle_ends_identical(after, tmp_path):
    states: list[SearchState] = []
    full_model = _net()
    full = _recovering_search(full_model, on_cycle=states.append)
    assert states[0].weights is not None  # a recovered student is stored: it is not input + masks
    path = tmp_path / "ckpt.safetensors"  # through the file, as a restarted process reads it
    save_checkpoint(path, states[after - 1], "job", cycles=3)
    back = load_checkpoint(path, "job", {n: tuple(m.shape) for n, m in full.masks.items()}, cycles=3)
    assert back.weights.keys() == full_model.state_dict().keys()
    resumed_model = _net()
    again = _recovering_search(resumed_model, resume=back)
    assert all(torch.equal(full.masks[n], again.masks[n]) for n in full.masks)
    fs, rs = full_model.state_dict(), resumed_model.state_dict()
    assert all(torch.equal(fs[k], rs[k]) for k in fs)
    assert again.log == full.log


def test_a_stored_state_that_does_not_fit_is_refused(tmp_path):
    states: list[SearchState] = []
    _recovering_search(_net(), on_cycle=states.append)
    state = states[0]
    shapes = {n: tuple(m.shape) for n, m in state.masks.items()}
    path = tmp_path / "ckpt.safetensors"
    bad = dict(state.weights)
    bad["3.weight"] = bad["3.weight"][:, :5].contiguous()
    save_checkpoint(path, SearchState(1, state.masks, state.rng, state.log, state.kl, weights=bad), "job", cycles=3)
    with pytest.raises(CorruptFileError, match="no weight"):
        load_checkpoint(path, "job", shapes, cycles=3)
    missing = {k: v for k, v in state.weights.items() if k != "0.bias"}  # fits the file check, not the model
    resume = SearchState(1, state.masks, state.rng, state.log, state.kl, weights=missing)
    with pytest.raises(ConfigError, match="stored state does not fit"):
        _recovering_search(_net(), resume=resume)


def test_compress_with_recovery_resumes_to_the_same_file(tmp_path, monkeypatch):
    from prunus.compress import checkpoint as ckpt_module
    from prunus.compress.prn import read_prn

    cfg = CompressConfig(**{**CFG.to_json(), "recovery_steps": 5})
    x = torch.randn(128, 1, 28, 28, generator=torch.Generator().manual_seed(2))
    full = compress(_model(), x, cfg, out=tmp_path / "full.prn", checkpoint=tmp_path / "full.ckpt")
    assert full.seconds["recovery"] > 0
    plain = compress(_model(), x, CFG, baselines=False)
    assert "recovery" not in plain.seconds
    assert full.search_log != plain.search_log  # the flag is not ignored
    monkeypatch.setattr(ckpt_module, "crash_point", _dies_at_the_second_kill_point())
    with pytest.raises(KeyboardInterrupt):
        compress(_model(), x, cfg, out=tmp_path / "again.prn", checkpoint=tmp_path / "again.ckpt")
    monkeypatch.undo()
    # another recovery lr is another job (the search must start over); without recovery the lr is not the search's
    from prunus.compress.api import _Checkpointing

    def job(c):
        return _Checkpointing(tmp_path / "none.ckpt", c.resolved(_model()), _model(), [x]).job

    assert job(cfg) != job(CompressConfig(**{**cfg.to_json(), "finetune_lr": 5e-4}))
    assert job(cfg) != job(CompressConfig(**{**cfg.to_json(), "temperature": 2.0}))
    assert job(CFG) == job(CompressConfig(**{**CFG.to_json(), "finetune_lr": 5e-4}))
    again = compress(_model(), x, cfg, out=tmp_path / "again.prn", checkpoint=tmp_path / "again.ckpt")
    a, b = read_prn(tmp_path / "full.prn"), read_prn(tmp_path / "again.prn")
    assert a.header == b.header
    assert all((a.tensors[k] == b.tensors[k]).all() for k in a.tensors)
    assert again.search_log == full.search_log


def test_recovery_steps_must_be_a_count():
    from prunus.errors import ConfigError as Err

    with pytest.raises(Err, match="recovery_steps"):
        CompressConfig(recovery_steps=-1)


def test_the_elite_is_rescored_on_the_first_elite_rescore_size_images_of_the_budget_batch(monkeypatch):
    from prunus.compress import api

    seen = {}
    real = api.search

    def spy(model, x, teacher_logits, targets, cfg, *, x_big=None, teacher_big=None, **kw):
        seen.update(x=x, x_big=x_big, teacher_big=teacher_big)
        return real(model, x, teacher_logits, targets, cfg, x_big=x_big, teacher_big=teacher_big, **kw)

    monkeypatch.setattr(api, "search", spy)
    x = torch.randn(256, 1, 28, 28, generator=torch.Generator().manual_seed(2))
    holdout = torch.randn(160, 1, 28, 28, generator=torch.Generator().manual_seed(3))
    teacher = _model()
    cfg = CompressConfig(**{**CFG.to_json(), "elite_rescore_size": 40})
    compress(teacher, x, cfg, holdout=holdout, baselines=False)
    assert torch.equal(seen["x_big"], holdout[:40])  # the budget batch's first 40, not all 96 of it
    with torch.no_grad():
        assert torch.allclose(seen["teacher_big"], teacher(holdout[:40]))
    compress(teacher, x, CFG, holdout=holdout, baselines=False)
    assert torch.equal(seen["x_big"], holdout[:96])  # unset: the whole budget batch, as before
    with pytest.raises(ConfigError, match="elite_rescore_size"):
        CompressConfig(elite_rescore_size=0)


def test_the_recovery_images_belong_to_the_checkpointed_job(monkeypatch, tmp_path):
    """The images the recovery trains on are part of the job only when there is a recovery."""
    from prunus.compress import api

    jobs = []

    class Spy(api._Checkpointing):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            jobs.append(self.job)

    monkeypatch.setattr(api, "_Checkpointing", Spy)
    x = torch.randn(128, 1, 28, 28, generator=torch.Generator().manual_seed(2))
    holdout = torch.randn(160, 1, 28, 28, generator=torch.Generator().manual_seed(3))
    other = x.clone()
    other[100:] += 1.0  # only fine-tune images: the search scores x[:64], the budget is the holdout's
    recovering = CompressConfig(**{**CFG.to_json(), "recovery_steps": 2})
    for cfg in (recovering, CFG):
        for images in (x, other):
            compress(_model(), images, cfg, holdout=holdout, checkpoint=tmp_path / f"{len(jobs)}.ckpt",
                     baselines=False)  # fmt: skip
    assert jobs[0] != jobs[1]  # recovered on other images: another job
    assert jobs[2] == jobs[3]  # no recovery: those images never reach the search


def test_the_bit_allocation_shows_progress_every_ten_bits(capsys):
    x = torch.randn(128, 1, 28, 28, generator=torch.Generator().manual_seed(2))
    cfg = CompressConfig(**{**CFG.to_json(), "bits": "auto", "max_kl": 1e9, "max_drop": None, "progress": True,
                            "escalate": False, "finetune_steps": 0})  # fmt: skip
    report = compress(_model(), x, cfg, baselines=False)
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("bit allocation: ")]
    lowered = sum(8 - r.bits for r in report.layers)  # an unbounded budget: every layer down to 2 bits
    assert lowered == 6 * len(report.layers)
    assert len(lines) == lowered // 10
    assert lines[-1].endswith(f"{10 * (lowered // 10)} bits lowered)")
