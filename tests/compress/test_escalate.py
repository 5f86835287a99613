"""The budget escalation: a missed auto-bits budget is retried with stronger settings, never over explicit ones."""

import dataclasses
import warnings

import pytest
import torch

import prunus
from prunus.cli import main
from prunus.compress import CompressConfig, compress
from prunus.compress.escalate import LADDER, next_setting, rungs
from prunus.errors import BudgetNotMetWarning

FAST = {"calib_size": 32, "rescore_size": 64, "cycles": 1, "generations": 1, "population": 3, "elite": 1}
# on this random model and batch: KL 0.0036 as given, 0.0021 after the 300-step distillation
MISSED_THEN_MET = {**FAST, "sparsity": 0.97, "max_drop": None, "max_kl": 0.003}
UNREACHABLE = {**FAST, "sparsity": 0.97, "max_drop": None, "max_kl": 0.0}  # KL is never exactly 0


def _model():
    torch.manual_seed(0)
    return prunus.create_model("lenet300_100", in_channels=1, num_classes=10, width_mult=0.1).eval()


def _x():
    return torch.randn(64, 1, 28, 28, generator=torch.Generator().manual_seed(0))


def _run(tmp_path, name, **config):
    """Compress the small model with `config` into tmp_path/name.prn; returns the report and the warnings."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", BudgetNotMetWarning)
        report = compress(_model(), _x(), CompressConfig(**config), out=tmp_path / f"{name}.prn", baselines=False)
    return report, [w for w in caught if issubclass(w.category, BudgetNotMetWarning)]


def test_escalation_stops_at_the_first_rung_that_meets_the_budget(tmp_path):
    report, caught = _run(tmp_path, "esc", **MISSED_THEN_MET)
    assert [(a["rung"], a["settings"], a["met"]) for a in report.attempts] == [
        (0, "as given", False),
        (1, "finetune_steps=300", True),
    ]
    assert caught == []
    assert report.budget["met"] is True
    assert (report.budget["rung"], report.budget["settings"]) == (1, "finetune_steps=300")
    assert report.config["finetune_steps"] == 300
    assert report.attempts[0]["kl"] > 0.003 >= report.attempts[1]["kl"]
    # the met rung is exactly the explicit config it stands for: same file, byte for byte
    explicit, _ = _run(tmp_path, "explicit", **MISSED_THEN_MET, finetune_steps=300, escalate=False)
    assert (tmp_path / "esc.prn").read_bytes() == (tmp_path / "explicit.prn").read_bytes()
    assert report.file_bytes == explicit.file_bytes == report.attempts[1]["file_bytes"]


def test_each_attempt_records_what_its_settings_give_on_their_own(tmp_path):
    """One record per rung run, its numbers those of a plain run with the rung's settings (all four rungs)."""
    report, caught = _run(tmp_path, "esc", **UNREACHABLE)
    assert [a["settings"] for a in report.attempts] == [
        "as given",
        "finetune_steps=300",
        "finetune_steps=2000",
        "finetune_steps=2000, codebook_steps=500",
    ]
    assert len(caught) == 1  # one warning, for the final verdict
    for a, (_, cfg) in zip(report.attempts, rungs(CompressConfig(**UNREACHABLE).resolved(_model())), strict=True):
        alone, _ = _run(tmp_path, f"rung{a['rung']}", **{**cfg.to_json(), "escalate": False})
        assert a["met"] is False
        assert a["kl"] == alone.kl == alone.budget["kl"]
        assert a["drop_pt"] == alone.budget["drop_pt"]
        assert a["file_bytes"] == alone.file_bytes
        assert a["ratio"] == pytest.approx(alone.ratio, rel=1e-12)
        assert (a["finetune_steps"], a["codebook_steps"]) == (cfg.finetune_steps or 0, cfg.codebook_steps or 0)
    assert report.file_bytes == report.attempts[-1]["file_bytes"]
    assert report.attempts[1]["kl"] < report.attempts[0]["kl"]  # the distillation did something


def test_an_explicit_setting_is_never_escalated(tmp_path):
    report, _ = _run(tmp_path, "esc", **UNREACHABLE, finetune_steps=0)
    assert [a["settings"] for a in report.attempts] == ["as given", "codebook_steps=500"]
    assert [a["finetune_steps"] for a in report.attempts] == [0, 0]
    assert report.config["finetune_steps"] == 0
    report, _ = _run(tmp_path, "cb", **MISSED_THEN_MET, codebook_steps=0, finetune_steps=40)
    assert {(a["finetune_steps"], a["codebook_steps"]) for a in report.attempts} == {(40, 0)}
    assert len(report.attempts) == 1  # nothing left to escalate


def test_escalate_false_is_the_old_single_run(tmp_path):
    report, caught = _run(tmp_path, "off", **MISSED_THEN_MET, escalate=False)
    assert len(report.attempts) == 1
    assert report.budget["met"] is False
    assert report.config.get("finetune_steps") is None
    assert {r.bits for r in report.layers} == {8}
    assert report.budget["next"] == "finetune_steps=300"
    assert len(caught) == 1
    assert "Next to try: finetune_steps=300." in str(caught[0].message)
    # escalate is how a file was searched for, not what it holds: met as given, both give the same bytes
    met_on, _ = _run(tmp_path, "met_on", **{**MISSED_THEN_MET, "max_kl": 1.0})
    _run(tmp_path, "met_off", **{**MISSED_THEN_MET, "max_kl": 1.0, "escalate": False})
    assert [a["rung"] for a in met_on.attempts] == [0]
    assert (tmp_path / "met_on.prn").read_bytes() == (tmp_path / "met_off.prn").read_bytes()


def test_not_met_names_a_next_setting_that_was_not_tried(tmp_path):
    report, caught = _run(tmp_path, "esc", **UNREACHABLE, finetune_steps=100)
    tried = [a["settings"] for a in report.attempts]
    assert tried == ["as given", "codebook_steps=500"]
    assert report.budget["next"] == "finetune_steps=300 (finetune_steps was set to 100)"
    message = str(caught[0].message)
    assert "after escalating to rung 1 (codebook_steps=500)" in message
    assert message.endswith("Next to try: finetune_steps=300 (finetune_steps was set to 100).")
    # the whole ladder run: the next setting is no rung of it
    report, caught = _run(tmp_path, "all", **UNREACHABLE)
    assert len(report.attempts) == 1 + len(LADDER)
    assert report.budget["next"] == "sparsity=0.92 (from 0.97), or a larger max_kl"


def test_next_setting_skips_every_tried_rung():
    cfg = CompressConfig(sparsity=0.9, max_kl=0.1, finetune_steps=300)
    assert next_setting(cfg, tried=[]) == "finetune_steps=2000 (finetune_steps was set to 300)"
    tried = [CompressConfig(sparsity=0.9, finetune_steps=2000)]
    assert next_setting(cfg, tried) == "finetune_steps=2000, codebook_steps=500 (finetune_steps was set to 300)"
    per_layer = CompressConfig(
        sparsity={"fc1": 0.9}, finetune_steps=2000, codebook_steps=500, quant_drop=0.5, recovery_steps=100
    )
    assert (
        next_setting(per_layer, tried=[]) == "a lower sparsity, a smaller quant_drop (from 0.5), or a larger max_drop"
    )
    share_only = dataclasses.replace(per_layer, max_drop=None)  # the verdict is the share: a larger one
    assert next_setting(share_only, tried=[]) == "a lower sparsity, or a larger quant_drop"
    kl = dataclasses.replace(per_layer, max_drop=None, max_kl=0.1)
    assert next_setting(kl, tried=[]) == "a lower sparsity, a smaller quant_drop (from 0.5), or a larger max_kl"


def test_a_spent_ladder_suggests_a_recovery_when_the_search_had_none():
    # the mlp preset: recovery_steps 0, 8 cycles
    spent = CompressConfig(sparsity=0.9, finetune_steps=2000, codebook_steps=500).resolved(_model())
    assert next_setting(spent, tried=[]) == (
        "recovery_steps=200 (re-learn between the search's cycles; a new search), sparsity=0.85 (from 0.9), "
        "or a larger max_drop"
    )
    one_cycle = dataclasses.replace(spent, cycles=1)  # nothing to recover between
    assert next_setting(one_cycle, tried=[]) == "sparsity=0.85 (from 0.9), or a larger max_drop"
    recovered = dataclasses.replace(spent, recovery_steps=50)
    assert next_setting(recovered, tried=[]) == "sparsity=0.85 (from 0.9), or a larger max_drop"


def test_fixed_bits_have_nothing_to_escalate():
    assert [c for c, _ in rungs(CompressConfig(bits=4, preset="mlp"))] == [{}]
    # the convnet preset's fine-tune start is not a rung: it is what the first try runs
    assert [c for c, _ in rungs(CompressConfig(bits=4, preset="convnet"))] == [{"finetune_steps": 1500}]


@pytest.mark.filterwarnings("ignore::prunus.errors.BudgetNotMetWarning")
def test_a_killed_escalation_does_not_run_its_missed_rungs_again(tmp_path, monkeypatch):
    from prunus.compress import api
    from prunus.compress import checkpoint as ckpt_module

    cfg = CompressConfig(**UNREACHABLE, finetune_steps=5)  # rungs: as given, codebook_steps=500
    full = compress(_model(), _x(), cfg, out=tmp_path / "full.prn", checkpoint=tmp_path / "full.ckpt", baselines=False)

    def die_after_a_rung(label):
        if label == "compress-rung":
            raise KeyboardInterrupt

    monkeypatch.setattr(ckpt_module, "crash_point", die_after_a_rung)
    with pytest.raises(KeyboardInterrupt):
        compress(_model(), _x(), cfg, out=tmp_path / "again.prn", checkpoint=tmp_path / "again.ckpt")
    assert not (tmp_path / "again.prn").exists()
    monkeypatch.undo()
    finished = []
    real_finish = api._finish
    monkeypatch.setattr(api, "_finish", lambda job, s, c: finished.append(c.codebook_steps) or real_finish(job, s, c))
    again = compress(_model(), _x(), cfg, out=tmp_path / "again.prn", checkpoint=tmp_path / "again.ckpt",
                     baselines=False)  # fmt: skip
    assert finished == [500]  # rung 0 was read from the checkpoint, not run again
    assert (tmp_path / "full.prn").read_bytes() == (tmp_path / "again.prn").read_bytes()
    assert again.attempts == [{**a, "seconds": b["seconds"]} for a, b in zip(full.attempts, again.attempts)]


def test_cli_shows_every_rung_and_the_verdict(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "250")
    d = tmp_path / "model"
    prunus.save(_model(), d, input_shape=(1, 28, 28))
    args = ["compress", str(d), "--data", "synthetic", "--sparsity", "0.97", "--bits", "auto", "--max-kl", "0",
            "--calib-size", "32", "--rescore-size", "64", "--cycles", "1", "--generations", "1", "--population", "3",
            "--elite", "1", "--finetune-steps", "3", "--out", str(tmp_path / "m.prn")]  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", BudgetNotMetWarning)
        assert main(args) == 0
    out = capsys.readouterr().out
    assert "budget escalation" in out
    assert "escalation rung 1 (codebook_steps=500): NOT MET" in out  # the progress line of the rung
    assert (
        "NOT MET at rung 1 (codebook_steps=500); next to try: finetune_steps=300 (finetune_steps was set to 3)" in out
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", BudgetNotMetWarning)
        assert main([*args, "--no-escalate", "--force"]) == 0
    out = capsys.readouterr().out
    assert "budget escalation" not in out
    assert "NOT MET at rung 0 (as given); next to try: finetune_steps=300 (finetune_steps was set to 3)" in out
