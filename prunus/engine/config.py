"""`TrainConfig`: every hyperparameter of the training loop in one visible, validated block."""

from __future__ import annotations

from dataclasses import dataclass

from prunus.config import Config, check_choice, check_count, check_range
from prunus.errors import ConfigError

__all__ = ["OPTIMIZERS", "SCHEDULES", "TrainConfig"]

OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("cosine", "step", "constant")
DEVICES = ("auto", "cpu", "cuda")


@dataclass(frozen=True)
class TrainConfig(Config):
    """Training hyperparameters; defaults are the benchmarks.md protocol (SGD nesterov, cosine).

    Example:
        >>> TrainConfig(epochs=2, lr=0.05).schedule
        'cosine'
        >>> TrainConfig(lr=-1)
        Traceback (most recent call last):
        ...
        prunus.errors.ConfigError: lr=-1 is out of range; expected a value in (0.0, inf)
    """

    epochs: int = 30  # full passes over the training split
    optimizer: str = "sgd"  # "sgd" (momentum, nesterov) or "adamw"
    lr: float = 0.1  # peak learning rate (after warm-up); 0.1 for SGD at batch 128
    momentum: float = 0.9  # SGD momentum; beta1 for AdamW
    nesterov: bool = True  # SGD only
    weight_decay: float = 5e-4  # L2 for SGD, decoupled for AdamW; methods may exempt tensors
    schedule: str = "cosine"  # "cosine" to 0 at the end, "step" (x gamma at milestones), "constant"
    milestones: tuple[int, ...] = ()  # epochs at which "step" multiplies the lr by gamma
    gamma: float = 0.1  # "step" decay factor
    warmup_epochs: float = 0.0  # linear warm-up from 0, in (fractional) epochs
    label_smoothing: float = 0.0  # cross-entropy label smoothing
    max_grad_norm: float | None = None  # clip the global gradient norm; None = no clipping
    amp: bool = False  # mixed precision on CUDA (ignored on CPU)
    device: str = "auto"  # "auto" = CUDA when available, else CPU
    seed: int = 0  # initialisation, data order and augmentation all derive from it
    checkpoint: bool = True  # write run_dir/checkpoint.pt atomically after every epoch
    threads: int | None = None  # torch intra-op threads on CPU; None = torch's default

    def __post_init__(self) -> None:
        check_count("epochs", self.epochs, 1, "epochs")
        check_count("seed", abs(self.seed) if isinstance(self.seed, int) and not isinstance(self.seed, bool)
                    else self.seed, 0, "seed")  # fmt: skip
        check_choice("optimizer", self.optimizer, OPTIMIZERS)
        check_range("lr", self.lr, low=0.0, low_inclusive=False)
        check_range("momentum", self.momentum, low=0.0, high=1.0, high_inclusive=False)
        check_range("weight_decay", self.weight_decay, low=0.0)
        check_choice("schedule", self.schedule, SCHEDULES)
        check_range("gamma", self.gamma, low=0.0, high=1.0, low_inclusive=False)
        check_range("warmup_epochs", self.warmup_epochs, low=0.0)
        if self.warmup_epochs >= self.epochs:
            raise ConfigError(f"warmup_epochs={self.warmup_epochs} must be smaller than epochs={self.epochs}")
        check_range("label_smoothing", self.label_smoothing, low=0.0, high=1.0, high_inclusive=False)
        if self.max_grad_norm is not None:
            check_range("max_grad_norm", self.max_grad_norm, low=0.0, low_inclusive=False)
        check_choice("device", self.device, DEVICES)
        for m in self.milestones:
            if not 0 < m < self.epochs:
                raise ConfigError(f"milestone {m} must lie strictly between 0 and epochs={self.epochs}")
        if list(self.milestones) != sorted(set(self.milestones)):
            raise ConfigError(f"milestones must be increasing and distinct, got {list(self.milestones)}")
        if self.schedule == "step" and not self.milestones:
            raise ConfigError("schedule='step' needs milestones, e.g. milestones=[60, 120]")
        check_count("threads", self.threads, 1, "threads", optional=True)
