"""Trainer: learns, hooks fire in order, exact resume, NaN stops with the checkpoint kept."""

from __future__ import annotations

import json

import pytest
import torch

from prunus.data import DataConfig, build_loaders
from prunus.engine import Method, TrainConfig, Trainer
from prunus.engine.checkpoint import load_checkpoint
from prunus.errors import ConfigError, TrainingDivergedError
from prunus.models import create_model


def _data(**kw):
    cfg = {"name": "synthetic", "val_size": 64, "batch_size": 32, "eval_batch_size": 256}
    cfg.update(kw)
    return build_loaders(DataConfig(**cfg), seed=0)


def _model(data, seed=0):
    torch.manual_seed(seed)
    return create_model("lenet5", in_channels=data.in_channels, num_classes=data.num_classes, width_mult=0.5)


class Recorder(Method):
    name = "recorder"

    def __init__(self):
        self.calls: list[str] = []

    def setup(self, trainer):
        self.calls.append("setup")

    def on_epoch_start(self, trainer):
        self.calls.append(f"epoch_start{trainer.epoch}")

    def after_backward(self, trainer):
        # gradients exist here and the step has not happened yet
        assert all(p.grad is not None for p in trainer.model.parameters())
        self.calls.append("after_backward")

    def on_step_end(self, trainer):
        self.calls.append("step_end")

    def on_epoch_end(self, trainer):
        trainer.log_metrics({"recorder_calls": len(self.calls)})
        self.calls.append(f"epoch_end{trainer.epoch}")

    def on_fit_end(self, trainer):
        self.calls.append("fit_end")


def test_trainer_learns_synthetic_data_well_above_chance():
    data = _data()
    result = Trainer(_model(data), data, TrainConfig(epochs=4, lr=0.05), progress=False).fit()
    chance = 1.0 / data.num_classes
    assert result["final_test_acc"] > chance + 0.4, result
    assert result["epochs"] == 4


def test_hooks_fire_in_documented_order_and_methods_log():
    data = _data()
    rec = Recorder()
    trainer = Trainer(_model(data), data, TrainConfig(epochs=2), methods=[rec], progress=False)
    trainer.fit()
    steps = len(data.train)
    expected = ["setup"]
    for e in range(2):
        expected += [f"epoch_start{e}"] + ["after_backward", "step_end"] * steps + [f"epoch_end{e}"]
    expected.append("fit_end")
    assert rec.calls == expected
    assert trainer.history[0]["recorder_calls"] == 1 + 1 + 2 * steps


def test_resume_gives_the_same_weights_as_an_uninterrupted_run(tmp_path):
    data = _data()
    cfg = TrainConfig(epochs=3, lr=0.05, warmup_epochs=0.5)
    full = Trainer(_model(data), data, cfg, run_dir=tmp_path / "full", progress=False)
    full.fit()

    # "crash" after epoch 1: train a 3-epoch config but stop the loop by hand
    part = Trainer(_model(data), data, cfg, run_dir=tmp_path / "part", progress=False)
    part._run_epoch()
    assert load_checkpoint(tmp_path / "part" / "checkpoint.pt")["epoch"] == 1
    resumed = Trainer(_model(data, seed=123), data, cfg, run_dir=tmp_path / "part", resume=True, progress=False)
    assert resumed.epoch == 1
    resumed.fit()
    for (name, a), (_, b) in zip(full.model.state_dict().items(), resumed.model.state_dict().items()):
        assert torch.equal(a, b), name
    records = [json.loads(x) for x in (tmp_path / "part" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [0, 1, 2]


def test_resume_with_different_methods_is_refused(tmp_path):
    data = _data()
    cfg = TrainConfig(epochs=2)
    Trainer(_model(data), data, cfg, run_dir=tmp_path, progress=False)._run_epoch()
    with pytest.raises(ConfigError, match="methods"):
        Trainer(_model(data), data, cfg, methods=[Recorder()], run_dir=tmp_path, resume=True, progress=False)


class Poison(Method):
    """Makes the weights NaN during the second epoch."""

    name = "poison"

    def on_step_end(self, trainer):
        if trainer.epoch == 1:
            with torch.no_grad():
                for p in trainer.model.parameters():
                    p.fill_(float("nan"))


def test_nan_loss_stops_with_message_and_keeps_last_good_checkpoint(tmp_path):
    data = _data()
    trainer = Trainer(_model(data), data, TrainConfig(epochs=3), methods=[Poison()], run_dir=tmp_path, progress=False)
    with pytest.raises(TrainingDivergedError, match=r"loss became nan at epoch 2.*checkpoint"):
        trainer.fit()
    state = load_checkpoint(tmp_path / "checkpoint.pt")
    assert state["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


def test_step_schedule_and_adamw_and_label_smoothing_run():
    data = _data()
    cfg = TrainConfig(
        epochs=2, optimizer="adamw", lr=1e-3, schedule="step", milestones=(1,), gamma=0.5, label_smoothing=0.1
    )
    trainer = Trainer(_model(data), data, cfg, progress=False)
    trainer.fit()
    assert trainer.history[0]["lr"] == pytest.approx(1e-3)
    assert trainer.history[1]["lr"] == pytest.approx(5e-4)
    assert type(trainer.optimizer).__name__ == "AdamW"


def test_train_seconds_include_epoch_end_hooks_and_exclude_evaluation():
    import time

    class Slow(Method):
        name = "slow"

        def on_epoch_end(self, trainer):
            time.sleep(0.2)  # a method's epoch-end work (grafting's exchange) counts as training time

    data = _data()
    trainer = Trainer(_model(data), data, TrainConfig(epochs=1), methods=[Slow()], progress=False)
    trainer.fit()
    record = trainer.history[0]
    assert 0.2 <= record["train_seconds"] <= record["seconds"]
