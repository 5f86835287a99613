"""The Method plug-in contract: a bag of no-op hooks the Trainer calls at fixed points.

A method (SFP, MFP, C-SGD, WE, grafting, ...) overrides the few hooks it needs. Several methods
may run in one training; the runner calls each hook on every method in the order given. Every
hook receives a `TrainerView`: the `typing.Protocol` below lists exactly what a method may read
and call. `prunus.engine.Trainer` satisfies it, and so does any object with those attributes (a
fake trainer in a test, one member of a population of trainers): methods never need the Trainer
class itself.

The rules that come with the view:

- Read `model` (the unwrapped nn.Module), `optimizer`, `config`, `epoch`, `global_step`,
  `device`, `rank`, `world_size`, `run_dir`, `peers` (other networks, for grafting), and `data`
  (`DataView`: the training and validation loaders and the input shape). The test set is not
  part of the view: measuring it is the runner's job, never a method's. A method that wants the test accuracy around its
  `on_fit_end` change names the metrics in `measure_fit_end` and the runner measures.
- Edit parameter values in place from the hooks (masks, merges, gradient rules). When a hook
  replaces parameters (physical removal), call `trainer.rebuild_optimizer()`; to clear the
  optimizer's memory of some rows (momentum of a reset filter), call
  `trainer.reset_optimizer_rows(param, rows)`; to change the learning rate for the whole run
  (grafting's per-network rates), call `trainer.scale_lr(factor)`. Never assign `trainer.optimizer`
  or edit its param groups' lr: a rebuild or a resume would drop the edit.
- Report numbers with `trainer.log_metrics({...})`, prefixed with the method's name.
- Exact resume: whatever the method needs to continue identically goes into `state_dict`
  (tensors, numbers, strings, lists and dicts only: it is loaded with
  `torch.load(weights_only=True)`). The checkpoint stores it as `{"methods": {state_key: state}}`;
  `state_key` defaults to `name`, and the runner makes it unique when the same method runs twice.

Example:
    >>> class CountSteps(Method):
    ...     name = "count-steps"
    ...     def __init__(self):
    ...         self.steps = 0
    ...     def on_step_end(self, trainer: TrainerView) -> None:
    ...         self.steps += 1
    ...     def state_dict(self):
    ...         return {"steps": self.steps}
    ...     def load_state_dict(self, state):
    ...         self.steps = int(state["steps"])
    >>> CountSteps().state_key
    'count-steps'
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, runtime_checkable

if TYPE_CHECKING:
    import torch
    from torch import nn

    from prunus.engine.config import TrainConfig

__all__ = ["DataView", "Method", "TrainerView", "state_keys"]


@runtime_checkable
class DataView(Protocol):
    """The data a method may see: training and validation loaders and the input shape (no test set)."""

    #: shuffled, augmented training loader (sharded under DDP; `train.data` is the whole split)
    train: Any
    #: validation loader, or None when no images are held out
    val: Any
    #: (C, H, W) of one input
    input_shape: tuple[int, int, int]
    num_classes: int


@runtime_checkable
class TrainerView(Protocol):
    """What a method may read and call on the run that hosts it (see the module docstring)."""

    #: the unwrapped model being trained (never the DDP wrapper)
    model: nn.Module
    #: the optimizer over `model`'s parameters; replace it only through `rebuild_optimizer`
    optimizer: torch.optim.Optimizer
    #: the run's training hyperparameters (epochs, lr, weight_decay, seed, ...)
    config: TrainConfig
    #: training and validation data, input shape
    data: DataView
    #: 0-based epoch running now (in `on_epoch_end`: the epoch just finished)
    epoch: int
    #: optimizer steps taken so far
    global_step: int
    device: torch.device
    #: this process's rank and the number of processes (1 without DDP)
    rank: int
    world_size: int
    #: run directory (checkpoint, metrics) or None when the run keeps nothing on disk
    run_dir: Path | None
    #: the other networks of a population (`prunus.engine.peers.Peers`: `ring_exchange`,
    #: `all_gather_scalars`), or None when this Trainer trains the only network
    peers: Any

    def log_metrics(self, metrics: dict[str, Any]) -> None:
        """Add numbers to the current epoch's record (or to the final result, from `on_fit_end`)."""
        ...

    def rebuild_optimizer(self) -> torch.optim.Optimizer:
        """Build a fresh optimizer over `model`'s current parameters (after shapes changed); returns it."""
        ...

    def scale_lr(self, factor: float) -> None:
        """Multiply the run's learning rate by `factor` for good (kept across rebuilds and resume)."""
        ...

    def reset_optimizer_rows(self, param: nn.Parameter, rows: Iterable[int] | torch.Tensor, dim: int = 0) -> None:
        """Zero the optimizer state (momentum, Adam moments) of `param` at `rows` along `dim`."""
        ...


class Method:
    """Base class of training plug-ins; every hook is a no-op unless overridden."""

    #: registry name, also the prefix of the metrics this method logs
    name: str = "method"

    #: the method's frozen config dataclass (set by `prunus.methods.register_method`); an instance
    #: keeps its resolved arguments as `self.config`, which a run records in config.yaml
    config_class: ClassVar[type | None] = None

    #: (before, after) metric names under which the runner logs the test accuracy of the model just
    #: before and just after this method's `on_fit_end` (e.g. C-SGD: trained vs merged); None = none
    measure_fit_end: tuple[str, str] | None = None

    #: True: on resume the Trainer calls `load_state_dict` BEFORE `setup` (and not after), for a
    #: method whose setup would otherwise re-plan what the run already fixed (C-SGD: a latency
    #: budget re-measured into other widths, other clusters, other optimizer groups)
    load_state_before_setup: ClassVar[bool] = False

    @property
    def state_key(self) -> str:
        """Key of this method's state in the checkpoint (default: `name`; the runner de-duplicates)."""
        return self.name

    def setup(self, trainer: TrainerView) -> None:
        """Once, before the first epoch: after model, loaders and optimizer exist, before a resume
        (unless `load_state_before_setup`)."""

    def on_epoch_start(self, trainer: TrainerView) -> None:
        """At the start of every epoch, before its first batch (`trainer.epoch` is the epoch about to run).

        A change the previous epoch must be scored without (Weight Evolution, grafting: their
        reference code runs train -> test -> change) goes here, for `trainer.epoch > 0`: the
        previous epoch's record and checkpoint are written by then, and nothing follows the last epoch.
        """

    def after_backward(self, trainer: TrainerView) -> None:
        """Every step between `loss.backward()` and `optimizer.step()`: edit gradients here."""

    def on_step_end(self, trainer: TrainerView) -> None:
        """Every step right after `optimizer.step()` (and the per-step learning-rate update)."""

    def on_epoch_end(self, trainer: TrainerView) -> None:
        """After the last batch of an epoch, before evaluation and the checkpoint: masks, anything the
        epoch's scores must include."""

    def on_fit_end(self, trainer: TrainerView) -> None:
        """Once after the last epoch, before final evaluation: physical removal, merging."""

    def state_dict(self) -> dict[str, Any]:
        """What a resumed run needs to continue this method exactly (weights_only-loadable)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what `state_dict` returned."""


def state_keys(methods: Sequence[Method]) -> list[str]:
    """Checkpoint keys of `methods`: each `state_key`, with `#2`, `#3`, ... on repeats.

    Example:
        >>> class A(Method):
        ...     name = "a"
        >>> state_keys([A(), A(), Method()])
        ['a', 'a#2', 'method']
    """
    seen: dict[str, int] = {}
    keys = []
    for method in methods:
        key = method.state_key
        seen[key] = seen.get(key, 0) + 1
        keys.append(key if seen[key] == 1 else f"{key}#{seen[key]}")
    return keys
