"""The one training loop. Methods plug in through hooks (see `prunus.engine.method.Method`).

Per step: forward -> loss -> backward -> `after_backward` hooks -> (clip) -> optimizer.step ->
`on_step_end` hooks. Per epoch: `on_epoch_start`, the steps, `on_epoch_end`, evaluation on the
validation and test loaders, one record in metrics.jsonl, an atomic checkpoint. After the last
epoch: `on_fit_end` (physical removal, merging), then a final evaluation of the resulting model.

Exact resume: the data order is a pure function of (seed, epoch), the lr a pure function of the
step, and the checkpoint holds model, optimizer, method states and the RNG state, so a resumed
run ends with the same weights as an uninterrupted one. A resume may change only the settings in
`RESUME_MAY_CHANGE` (more epochs, a new peak lr from the checkpoint on, device, threads); any
other difference from the checkpoint's config is refused before anything is written.

The Trainer is what methods see as a `prunus.engine.method.TrainerView`; the test loader is the
runner's alone (methods read `data.train`/`data.val`), and `rebuild_optimizer` /
`reset_optimizer_rows` are how a method changes parameters mid-run. Method states are stored as
`{"methods": {state_key: state}}`; checkpoints in the older list layout (with `method_names`)
still load.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from prunus._io.atomic import crash_point
from prunus.engine.config import TrainConfig
from prunus.engine.method import Method, state_keys
from prunus.engine.optim import build_optimizer, reset_optimizer_rows
from prunus.engine.parallel import DataParallel, Parallel
from prunus.engine.peers import Peers
from prunus.engine.progress import MetricsLog, Progress
from prunus.engine.schedule import LRSchedule
from prunus.errors import ConfigError, TrainingDivergedError
from prunus.formats.run_dir import RunDir
from prunus.measure.evaluation import evaluate

__all__ = ["RESUME_MAY_CHANGE", "Trainer", "resolve_device"]

# TrainConfig fields a resumed run may set differently from its checkpoint, and what happens:
# epochs (>= the epochs done; the schedule is recomputed for the new total), lr (the new peak lr
# applies from the next step), device and threads (where it runs, not what it computes).
RESUME_MAY_CHANGE = ("epochs", "lr", "device", "threads")


def resolve_device(name: str) -> torch.device:
    """ "auto" -> CUDA when available, else CPU; "cuda" without CUDA is a `ConfigError`."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} requested but CUDA is not available here; use --device cpu or auto")
    return torch.device(name)


class Trainer:
    """Train `model` on `data` with `config`, calling each method's hooks in order.

    Args:
        model: any nn.Module mapping a batch of images to logits.
        data: a `prunus.data.DataBundle` (train loader, optional val loader, test loader).
        config: the training hyperparameters.
        methods: Method plug-ins, called in this order at every hook.
        run_dir: where checkpoint.pt and metrics.jsonl go; None keeps everything in memory.
        resume: continue from run_dir/checkpoint.pt when it exists.
        progress: show a progress bar / epoch lines (rank 0 only).
        parallel: how this Trainer shares work with other processes or networks
            (`prunus.engine.parallel`); default: data-parallel over torchrun's ranks, if any.

    Example:
        >>> from prunus.data import DataConfig, build_loaders
        >>> from prunus.models import create_model
        >>> data = build_loaders(DataConfig(name="synthetic", val_size=0))
        >>> model = create_model("lenet5", in_channels=data.in_channels, num_classes=data.num_classes)
        >>> result = Trainer(model, data, TrainConfig(epochs=1), progress=False).fit()  # doctest: +SKIP
    """

    def __init__(
        self,
        model: nn.Module,
        data: Any,
        config: TrainConfig,
        methods: Sequence[Method] = (),
        run_dir: str | os.PathLike[str] | None = None,
        *,
        resume: bool = False,
        progress: bool = True,
        parallel: Parallel | None = None,
    ) -> None:
        self.config = config
        self.device = resolve_device(config.device)
        self.parallel = parallel if parallel is not None else DataParallel.from_env(self.device)
        self.rank, self.world_size = self.parallel.rank, self.parallel.world_size
        if config.threads is not None:
            torch.set_num_threads(config.threads)
        self.data = data
        self.train_loader, self.val_loader, self.test_loader = data.train, data.val, data.test
        self.model = model.to(self.device)
        self.methods = list(methods)
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.run = RunDir(run_dir) if run_dir is not None else None  # names every file the run writes
        self.loss_fn = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
        self.optimizer = build_optimizer(self.model, config)
        self.lr_scale = 1.0  # methods' standing lr multiplier (scale_lr): survives rebuilds and resume
        self.schedule = LRSchedule(config, steps_per_epoch=len(self.train_loader))
        self.use_amp = config.amp and self.device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda") if self.use_amp else None
        self.epoch = 0
        self.global_step = 0
        self.history: list[dict[str, Any]] = []
        self._epoch_metrics: dict[str, Any] = {}
        main = self.parallel.is_main
        self.metrics_log = MetricsLog(self.run if main else None)
        self.progress = Progress(config.epochs, len(self.train_loader), enabled=progress and main)
        self._forward_module: nn.Module = self.parallel.wrap(self.model)
        checkpoint = self._read_checkpoint() if resume else None
        if checkpoint is not None:  # before setup, for methods whose setup would re-plan what the run fixed
            saved = _method_states(checkpoint)
            for method, key in zip(self.methods, state_keys(self.methods), strict=True):
                if method.load_state_before_setup:
                    method.load_state_dict(saved[key])
        for method in self.methods:
            method.setup(self)
        if resume:
            self._resume(checkpoint)

    # ----------------------------------------------------------------------------------- API
    @property
    def peers(self) -> Peers | None:
        """The other networks of an independent population (grafting), else None."""
        return self.parallel.peers

    def log_metrics(self, metrics: dict[str, Any]) -> None:
        """Add numbers to the current epoch's record (methods call this from their hooks)."""
        self._epoch_metrics.update(metrics)

    def scale_lr(self, factor: float) -> None:
        """Multiply this run's learning rate by `factor` for good (grafting's per-network rates).

        The factor is kept by `rebuild_optimizer` and re-applied on resume, where a plain edit of
        the optimizer's param groups would be lost.
        """
        if not (math.isfinite(factor) and factor > 0):
            raise ValueError(f"lr factor must be a positive finite number, got {factor!r}")
        self.lr_scale *= factor
        for group in self.optimizer.param_groups:
            group["base_lr"] *= factor
            group["lr"] *= factor

    def rebuild_optimizer(self) -> torch.optim.Optimizer:
        """A fresh optimizer over the model's current parameters, for methods that replaced some.

        Call it after a hook changed parameter shapes (physical removal): an optimizer over the old
        tensors would silently stop training the new ones. Optimizer state (momentum) restarts
        from zero; the learning rate follows the schedule from the current step; under DDP the
        model is wrapped again (`parallel.wrap`) so gradient synchronisation covers the new tensors.
        """
        self.optimizer = build_optimizer(self.model, self.config)
        factor = self.schedule.factor(self.global_step)
        for group in self.optimizer.param_groups:
            group["base_lr"] = self.lr_scale * self.config.lr
            group["lr"] = group["base_lr"] * factor
        self._forward_module = self.parallel.wrap(self.model)
        return self.optimizer

    def reset_optimizer_rows(self, param: nn.Parameter, rows: Any, dim: int = 0) -> None:
        """Zero the optimizer's state for `param` at `rows` along `dim` (see `engine.optim.reset_optimizer_rows`)."""
        reset_optimizer_rows(self.optimizer, param, rows, dim)

    def fit(self) -> dict[str, Any]:
        """Train the remaining epochs, run `on_fit_end`, evaluate; returns the final metrics."""
        with self.progress:
            while self.epoch < self.config.epochs:
                self._run_epoch()
        self._epoch_metrics = {}  # what methods log in on_fit_end (merge reports) goes into the result
        for method in self.methods:
            names = method.measure_fit_end if self.test_loader is not None else None
            before = self.evaluate(self.test_loader)["acc"] if names else None
            method.on_fit_end(self)
            if names:  # the test set is measured here, by the runner, never by the method
                self.log_metrics({names[0]: before, names[1]: self.evaluate(self.test_loader)["acc"]})
        final = self._evaluate_all(prefix="final_")
        final.update(self._epoch_metrics)
        final["epochs"] = self.epoch
        return final

    def evaluate(self, loader: Any) -> dict[str, float]:
        """Mean loss, accuracy and count of the (unwrapped) model over `loader` (`prunus.measure.evaluate`)."""
        return evaluate(self.model, loader, device=self.device, amp=self.use_amp)

    # ------------------------------------------------------------------------------ internals
    def _call(self, hook: str) -> None:
        for method in self.methods:
            getattr(method, hook)(self)

    def _run_epoch(self) -> None:
        start = time.perf_counter()
        self._epoch_metrics = {}
        self.train_loader.set_epoch(self.epoch)
        self.model.train()
        self._call("on_epoch_start")
        self.progress.start_epoch(self.epoch)
        stats = torch.zeros(3, device=self.device, dtype=torch.float64)  # loss sum, correct, count
        for x, y in self.train_loader:
            loss, correct = self._train_step(x.to(self.device, non_blocking=True), y.to(self.device))
            stats += torch.tensor([loss * y.numel(), correct, y.numel()], device=self.device, dtype=torch.float64)
            self.progress.step(loss, correct / y.numel())
        self.parallel.end_epoch(self.model)  # data-parallel: BN statistics averaged over replicas
        self._call("on_epoch_end")
        stats = self.parallel.reduce_sum(stats)
        record = {
            "epoch": self.epoch,
            "step": self.global_step,
            "lr": self.optimizer.param_groups[0]["lr"],
            "train_loss": float(stats[0] / stats[2]),
            "train_acc": float(stats[1] / stats[2]),
        }
        record["train_seconds"] = time.perf_counter() - start  # steps + epoch-end hooks, without evaluation
        record.update(self._evaluate_all(prefix=""))
        record["seconds"] = time.perf_counter() - start
        record.update(self._epoch_metrics)
        self.epoch += 1
        self.history.append(record)
        self._save_checkpoint()
        crash_point("checkpointed")
        self.metrics_log.append(record)
        self.progress.end_epoch(record)

    def _train_step(self, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
        factor = self.schedule.factor(self.global_step)
        for group in self.optimizer.param_groups:
            group["lr"] = group["base_lr"] * factor
        with torch.autocast(self.device.type, enabled=self.use_amp):
            logits = self._forward_module(x)
            loss = self.loss_fn(logits.float(), y)
        loss_value = loss.item()
        if not math.isfinite(loss_value):
            where = f" (last good checkpoint: {self.run.checkpoint})" if self.run else ""
            raise TrainingDivergedError(
                f"loss became {loss_value} at epoch {self.epoch + 1}, step {self.global_step}{where}; "
                "try a lower --lr (a --resume may change it) or --warmup-epochs"
            )
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(self.optimizer)  # hooks and clipping must see true gradients
        else:
            loss.backward()
        self._call("after_backward")
        if self.config.max_grad_norm is not None:
            nn.utils.clip_grad_norm_(self.model.parameters(), self.config.max_grad_norm)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.global_step += 1
        self._call("on_step_end")
        return loss_value, float((logits.argmax(1) == y).sum())

    def _evaluate_all(self, prefix: str) -> dict[str, float]:
        out: dict[str, float] = {}
        for split, loader in (("val", self.val_loader), ("test", self.test_loader)):
            if loader is not None:
                result = self.evaluate(loader)
                if not math.isfinite(result["loss"]):  # outputs went NaN/inf although the training loss did not
                    where = f" (last good checkpoint: {self.run.checkpoint})" if self.run else ""
                    raise TrainingDivergedError(
                        f"the model's {split} loss is {result['loss']} after epoch {self.epoch}: its outputs are not "
                        f"finite{where}; try a lower --lr"
                    )
                out[f"{prefix}{split}_loss"] = result["loss"]
                out[f"{prefix}{split}_acc"] = result["acc"]
        return out

    def _state(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "global_step": self.global_step,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else {},
            "methods": dict(zip(state_keys(self.methods), (m.state_dict() for m in self.methods), strict=True)),
            "method_names": [m.name for m in self.methods],  # run order, for `prunus info`
            "rng": torch.get_rng_state(),
            "history": self.history,
            "config": self.config.to_dict(),
        }

    def _save_checkpoint(self) -> None:
        if self.config.checkpoint and self.run is not None:
            self.parallel.save_checkpoint(self.run, self._state())

    def _read_checkpoint(self) -> dict[str, Any] | None:
        """The checkpoint to resume from (None: a fresh start), its methods and config checked against
        this run's before any state is restored or any method's setup runs."""
        state = self.parallel.load_checkpoint(self.run, self.device) if self.run is not None else None
        if state is not None:
            saved, keys = list(_method_states(state)), state_keys(self.methods)
            if saved != keys:
                raise ConfigError(f"checkpoint was written with methods {saved}, this run has {keys}")
            self._check_resume_config(state.get("config") or {}, int(state["epoch"]))
        return state

    def _resume(self, state: dict[str, Any] | None) -> None:
        if state is None:
            self.metrics_log.truncate(0)  # records of epochs no checkpoint covers are redone
            return
        method_states = _method_states(state)
        keys = state_keys(self.methods)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        for group in self.optimizer.param_groups:  # a new --lr on resume takes effect from the next step
            group["base_lr"] = self.config.lr * self.lr_scale  # with the methods' standing factor (setup ran)
        if self.scaler is not None and state["scaler"]:
            self.scaler.load_state_dict(state["scaler"])
        for method, key in zip(self.methods, keys, strict=True):
            if not method.load_state_before_setup:  # those were restored before setup
                method.load_state_dict(method_states[key])
        torch.set_rng_state(state["rng"].cpu())
        self.epoch, self.global_step = int(state["epoch"]), int(state["global_step"])
        self.history = list(state["history"])
        self.metrics_log.rewrite(self.history)  # the log matches the checkpoint, whatever a crash left

    def _check_resume_config(self, saved: dict[str, Any], epochs_done: int) -> None:
        """Refuse a resume that changes anything but `RESUME_MAY_CHANGE` (before anything is loaded or written)."""
        current = self.config.to_dict()
        changed = sorted(
            k for k in saved.keys() & current.keys() if saved[k] != current[k] and k not in RESUME_MAY_CHANGE
        )
        if changed:
            diffs = ", ".join(f"{k}: {saved[k]!r} -> {current[k]!r}" for k in changed)
            raise ConfigError(
                f"a resumed run cannot change {diffs}; a resume may change only {', '.join(RESUME_MAY_CHANGE)}"
            )
        if self.config.epochs < epochs_done:
            raise ConfigError(f"epochs={self.config.epochs} is fewer than the {epochs_done} epochs already done")
        what = {  # what a resume with these changes does, said before it does it
            "epochs": "the lr schedule is recomputed for the new total",
            "lr": "the new peak lr applies from the next step",
            "device": "runs there from now on",
            "threads": "runs with them from now on",
        }
        told = [f"{k} {saved[k]!r} -> {current[k]!r} ({what[k]})" for k in RESUME_MAY_CHANGE
                if k in saved and saved[k] != current[k]]  # fmt: skip
        if told and self.parallel.is_main:
            print(f"resuming after epoch {epochs_done}: " + "; ".join(told), flush=True)


def _method_states(state: dict[str, Any]) -> dict[str, Any]:
    """`{state_key: state}` from a checkpoint; the older layout (a list plus `method_names`) is keyed here."""
    methods = state.get("methods", {})
    if isinstance(methods, dict):
        return methods
    names = [str(n) for n in state.get("method_names", [])]
    if len(names) != len(methods):
        raise ConfigError(f"checkpoint lists {len(names)} method names for {len(methods)} method states")
    keys: dict[str, int] = {}
    out = {}
    for name, method_state in zip(names, methods, strict=True):  # same de-duplication as state_keys
        keys[name] = keys.get(name, 0) + 1
        out[name if keys[name] == 1 else f"{name}#{keys[name]}"] = method_state
    return out
