"""Learning-rate schedules as pure functions of the global step (no hidden counter).

The trainer sets every param group's lr to `base_lr * schedule.factor(step)` before each step,
so a resumed run only needs the step number to continue the schedule exactly.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass

from prunus.engine.config import TrainConfig

__all__ = ["LRSchedule"]


@dataclass(frozen=True)
class LRSchedule:
    """Multiplier of the base learning rate at a given step.

    Example:
        >>> s = LRSchedule(TrainConfig(epochs=10, warmup_epochs=1), steps_per_epoch=10)
        >>> round(s.factor(0), 3), round(s.factor(10), 3), round(s.factor(100), 3)
        (0.1, 1.0, 0.0)
    """

    config: TrainConfig
    steps_per_epoch: int

    @property
    def total_steps(self) -> int:
        return self.config.epochs * self.steps_per_epoch

    def factor(self, step: int) -> float:
        """lr multiplier for the optimizer step number `step` (0-based)."""
        cfg = self.config
        warmup = int(round(cfg.warmup_epochs * self.steps_per_epoch))
        if step < warmup:
            return (step + 1) / warmup  # linear ramp; never exactly 0 so step 0 still learns
        if cfg.schedule == "constant":
            return 1.0
        if cfg.schedule == "step":
            epoch = step / self.steps_per_epoch
            return cfg.gamma ** bisect.bisect_right(list(cfg.milestones), epoch)
        # cosine from the end of warm-up to 0 at the last step
        span = max(1, self.total_steps - warmup)
        progress = min(1.0, (step - warmup) / span)
        return 0.5 * (1.0 + math.cos(math.pi * progress))
