"""The method contract as code: TrainerView, state keyed by state_key, optimizer rebuild/reset, old checkpoints."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from prunus.data import DataConfig, build_loaders
from prunus.engine import Method, TrainConfig, Trainer
from prunus.engine.checkpoint import load_checkpoint, save_checkpoint
from prunus.engine.method import DataView, TrainerView, state_keys
from prunus.engine.optim import build_optimizer, reset_optimizer_rows
from prunus.errors import ConfigError
from prunus.formats.header import make_header
from prunus.methods import create_method
from prunus.models import create_model

HEADER = set(make_header("prunus-checkpoint"))  # written by save_checkpoint itself


def _data():
    cfg = DataConfig(name="synthetic", num_samples=64, val_size=16, batch_size=16, image_size=12)
    return build_loaders(cfg, seed=0)


def _model(data, seed=0):
    torch.manual_seed(seed)
    return create_model("resnet20", in_channels=data.in_channels, num_classes=data.num_classes, width_mult=0.25)


@dataclasses.dataclass
class TrainOnlyData:
    """A DataView without a test loader: a method that reaches for the test set fails loudly."""

    train: Any
    val: Any
    input_shape: tuple[int, int, int]
    num_classes: int


class FakeTrainer:
    """Satisfies TrainerView without subclassing Trainer (as a population member or a test double would)."""

    def __init__(self, model: nn.Module, data: Any, config: TrainConfig) -> None:
        self.model, self.config = model, config
        self.data = TrainOnlyData(data.train, data.val, data.input_shape, data.num_classes)
        self.optimizer = build_optimizer(model, config)
        self.epoch = self.global_step = self.rank = 0
        self.world_size = 1
        self.device = torch.device("cpu")
        self.run_dir: Path | None = None
        self.peers = None
        self.logged: dict[str, Any] = {}
        self.rebuilt = 0

    def log_metrics(self, metrics: dict[str, Any]) -> None:
        self.logged.update(metrics)

    def rebuild_optimizer(self) -> torch.optim.Optimizer:
        self.rebuilt += 1
        self.optimizer = build_optimizer(self.model, self.config)
        return self.optimizer

    def reset_optimizer_rows(self, param, rows, dim=0) -> None:
        reset_optimizer_rows(self.optimizer, param, rows, dim)

    def scale_lr(self, factor: float) -> None:
        for group in self.optimizer.param_groups:
            group["base_lr"] *= factor
            group["lr"] *= factor

    def step(self, x, y) -> None:
        self.optimizer.zero_grad()
        nn.functional.cross_entropy(self.model(x), y).backward()


def test_trainer_and_a_fake_both_satisfy_the_view_and_the_view_has_no_test_set():
    data = _data()
    trainer = Trainer(_model(data), data, TrainConfig(epochs=1), progress=False)
    fake = FakeTrainer(_model(data), data, TrainConfig(epochs=1))
    assert isinstance(trainer, TrainerView)
    assert isinstance(fake, TrainerView)
    assert not issubclass(FakeTrainer, Trainer)
    assert isinstance(fake.data, DataView)
    assert not hasattr(fake.data, "test")
    assert "test" not in DataView.__annotations__
    assert "scheduler" not in TrainerView.__annotations__  # the old docstring promised one that never existed
    assert not isinstance(object(), TrainerView)


@pytest.mark.parametrize(
    ("name", "args"), [("sfp", {"rate": 0.5}), ("mfp", {"rate": 0.5, "holdout_size": 16}), ("csgd", {"width": 0.5})]
)
def test_methods_run_on_a_fake_trainer_without_the_test_set(name, args):
    """Every hook runs against the Protocol alone; C-SGD's merge no longer needs the test loader."""
    data = _data()
    fake = FakeTrainer(_model(data), data, TrainConfig(epochs=1, lr=0.05))
    method = create_method(name, **args)
    method.setup(fake)
    method.on_epoch_start(fake)
    for x, y in data.train:
        fake.step(x, y)
        method.after_backward(fake)
        fake.optimizer.step()
        fake.global_step += 1
        method.on_step_end(fake)
    method.on_epoch_end(fake)
    params_before = sum(p.numel() for p in fake.model.parameters())
    method.on_fit_end(fake)
    assert sum(p.numel() for p in fake.model.parameters()) < params_before  # removed or merged
    if name in ("sfp", "mfp"):
        assert fake.rebuilt == 1  # the sanctioned way: the method never assigns trainer.optimizer
        assert {id(p) for g in fake.optimizer.param_groups for p in g["params"]} == {
            id(p) for p in fake.model.parameters()
        }
    else:
        assert "csgd_max_logit_diff" in fake.logged
        assert "csgd_trained_acc" not in fake.logged  # test accuracy is the runner's to measure


def test_csgd_test_accuracies_come_from_the_runner():
    data = _data()
    method = create_method("csgd", width=0.5)
    trainer = Trainer(_model(data), data, TrainConfig(epochs=1, lr=0.05, checkpoint=False), [method], progress=False)
    result = trainer.fit()
    assert result["csgd_merged_acc"] == result["final_test_acc"] == trainer.evaluate(data.test)["acc"]
    assert 0.0 <= result["csgd_trained_acc"] <= 1.0
    assert method.measure_fit_end == ("csgd_trained_acc", "csgd_merged_acc")
    assert "csgd_trained_acc" not in method.merge_report
    assert create_method("csgd", merge_at_end=False).measure_fit_end is None


def test_rebuild_optimizer_covers_new_parameters_and_follows_the_schedule():
    data = _data()
    cfg = TrainConfig(epochs=2, lr=0.1, schedule="cosine", warmup_epochs=0)
    trainer = Trainer(_model(data), data, cfg, progress=False)
    trainer._run_epoch()
    trainer.model.fc = nn.Linear(trainer.model.fc.in_features, 3)  # a hook replaced a parameter
    old = trainer.optimizer
    new = trainer.rebuild_optimizer()
    assert new is trainer.optimizer is not old
    assert {id(p) for g in new.param_groups for p in g["params"]} == {id(p) for p in trainer.model.parameters()}
    assert new.param_groups[0]["lr"] == pytest.approx(0.1 * trainer.schedule.factor(trainer.global_step))
    assert new.state == {}  # momentum restarts


def test_a_methods_lr_factor_survives_a_rebuilt_optimizer():
    data = _data()
    trainer = Trainer(_model(data), data, TrainConfig(epochs=2, lr=0.1, schedule="cosine"), progress=False)
    trainer.scale_lr(0.25)
    trainer._run_epoch()
    new = trainer.rebuild_optimizer()
    assert new.param_groups[0]["base_lr"] == pytest.approx(0.025)
    assert new.param_groups[0]["lr"] == pytest.approx(0.025 * trainer.schedule.factor(trainer.global_step))
    with pytest.raises(ValueError, match="positive finite"):
        trainer.scale_lr(float("nan"))


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_reset_optimizer_rows_zeroes_exactly_those_rows(optimizer):
    layer = nn.Conv2d(2, 4, 3)
    opt = build_optimizer(layer, TrainConfig(optimizer=optimizer, lr=0.1))
    layer(torch.randn(2, 2, 5, 5)).square().sum().backward()
    opt.step()
    before = {k: v.clone() for k, v in opt.state[layer.weight].items() if torch.is_tensor(v)}
    edited = reset_optimizer_rows(opt, layer.weight, [1, 3])
    assert edited == (1 if optimizer == "sgd" else 2)
    for key, value in opt.state[layer.weight].items():
        if torch.is_tensor(value) and value.shape == layer.weight.shape:
            assert value[[1, 3]].abs().sum() == 0
            assert torch.equal(value[[0, 2]], before[key][[0, 2]])  # other rows untouched
            assert before[key][[1, 3]].abs().sum() > 0
    assert reset_optimizer_rows(opt, nn.Parameter(torch.zeros(3)), [0]) == 0  # no state yet: nothing to do


class Counter(Method):
    name = "counter"

    def __init__(self, step: int = 1):
        self.step, self.count = step, 0

    def on_step_end(self, trainer):
        self.count += self.step

    def state_dict(self):
        return {"count": self.count}

    def load_state_dict(self, state):
        self.count = int(state["count"])


def test_state_keys_are_unique_per_instance_and_restore_each_its_own_state(tmp_path):
    assert state_keys([Counter(), Counter(), Counter()]) == ["counter", "counter#2", "counter#3"]
    data = _data()
    cfg = TrainConfig(epochs=2, lr=0.05)
    Trainer(_model(data), data, cfg, [Counter(1), Counter(10)], tmp_path, progress=False)._run_epoch()
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    steps = len(data.train)
    assert state["methods"] == {"counter": {"count": steps}, "counter#2": {"count": 10 * steps}}
    a, b = Counter(1), Counter(10)
    Trainer(_model(data), data, cfg, [a, b], tmp_path, resume=True, progress=False)
    assert (a.count, b.count) == (steps, 10 * steps)


def test_checkpoint_in_the_old_list_layout_still_resumes_identically(tmp_path):
    """Checkpoints written before state keys held `methods` as a list plus `method_names`."""
    data = _data()
    cfg = TrainConfig(epochs=2, lr=0.05)
    full = Trainer(_model(data), data, cfg, [create_method("sfp", rate=0.5)], tmp_path / "full", progress=False)
    full.fit()
    part = Trainer(_model(data), data, cfg, [create_method("sfp", rate=0.5)], tmp_path / "part", progress=False)
    part._run_epoch()
    path = tmp_path / "part" / "checkpoint.pt"
    state = load_checkpoint(path)
    assert isinstance(state["methods"], dict)
    old = {k: v for k, v in state.items() if k not in HEADER}
    old["methods"] = [state["methods"]["sfp"]]  # the layout older prunus versions wrote
    old["method_names"] = ["sfp"]
    save_checkpoint(path, old)
    assert load_checkpoint(path)["methods"] == [state["methods"]["sfp"]]
    resumed_method = create_method("sfp", rate=0.5)
    resumed = Trainer(_model(data, seed=7), data, cfg, [resumed_method], tmp_path / "part", resume=True, progress=False)
    assert resumed_method.masks == part.methods[0].masks
    assert resumed_method.masks
    resumed.fit()
    for (name, a), (_, b) in zip(full.model.state_dict().items(), resumed.model.state_dict().items(), strict=True):
        assert torch.equal(a, b), name


def test_old_layout_with_mismatched_names_is_refused(tmp_path):
    data = _data()
    cfg = TrainConfig(epochs=2)
    Trainer(_model(data), data, cfg, [Counter()], tmp_path, progress=False)._run_epoch()
    state = load_checkpoint(tmp_path / "checkpoint.pt")
    state["methods"], state["method_names"] = [{"count": 1}], ["sfp"]
    save_checkpoint(tmp_path / "checkpoint.pt", {k: v for k, v in state.items() if k not in HEADER})
    with pytest.raises(ConfigError, match=r"checkpoint was written with methods \['sfp'\], this run has \['counter'\]"):
        Trainer(_model(data), data, cfg, [Counter()], tmp_path, resume=True, progress=False)
