"""The Method plug-in contract: a bag of no-op hooks the Trainer calls at fixed points.

A method (SFP, MFP, C-SGD, WE, grafting, ...) overrides the few hooks it needs. Several methods
may run in one training; the Trainer calls each hook on every method in the order given.
Hooks receive the Trainer, whose public attributes are the method's view of the run:
`model` (the unwrapped nn.Module), `optimizer`, `scheduler`, `epoch`, `global_step`, `config`,
`train_loader`, `val_loader`, `device`, `rank`, `world_size`, `run_dir`, and
`log_metrics(dict)` to add numbers to the current epoch's record in metrics.jsonl.

Methods must not break exact resume: whatever they need to continue identically goes into
`state_dict` (tensors, numbers, strings, lists and dicts only: it is loaded with
`torch.load(weights_only=True)`).

Example:
    >>> class CountSteps(Method):
    ...     name = "count-steps"
    ...     def __init__(self):
    ...         self.steps = 0
    ...     def on_step_end(self, trainer):
    ...         self.steps += 1
    ...     def state_dict(self):
    ...         return {"steps": self.steps}
    ...     def load_state_dict(self, state):
    ...         self.steps = int(state["steps"])
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from prunus.engine.trainer import Trainer

__all__ = ["Method"]


class Method:
    """Base class of training plug-ins; every hook is a no-op unless overridden."""

    #: registry name, also the prefix of the metrics this method logs
    name: str = "method"

    def setup(self, trainer: Trainer) -> None:
        """Once, before the first epoch: after model, loaders, optimizer and scheduler exist, before a resume."""

    def on_epoch_start(self, trainer: Trainer) -> None:
        """At the start of every epoch, before its first batch (`trainer.epoch` is the epoch about to run)."""

    def after_backward(self, trainer: Trainer) -> None:
        """Every step between `loss.backward()` and `optimizer.step()`: edit gradients here."""

    def on_step_end(self, trainer: Trainer) -> None:
        """Every step right after `optimizer.step()` (and the LR scheduler's per-step update)."""

    def on_epoch_end(self, trainer: Trainer) -> None:
        """After the last batch of an epoch, before evaluation and the checkpoint: masks, evolution, grafts."""

    def on_fit_end(self, trainer: Trainer) -> None:
        """Once after the last epoch, before final evaluation: physical removal, merging."""

    def state_dict(self) -> dict[str, Any]:
        """What a resumed run needs to continue this method exactly (weights_only-loadable)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what `state_dict` returned."""
