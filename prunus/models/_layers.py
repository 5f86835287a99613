"""Small helpers shared by the model families: channel scaling and weight initialisation."""

from __future__ import annotations

import math
from typing import Any

from torch import nn

from prunus.config import check_range
from prunus.errors import ConfigError

__all__ = ["check_int", "init_weights", "make_divisible", "scaled"]


def check_int(field: str, value: Any, low: int) -> None:
    """Raise `ConfigError` unless `value` is an int (not a bool) and at least `low`."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{field} must be an integer, got {value!r}")
    check_range(field, value, low=low)


def scaled(channels: int, width_mult: float) -> int:
    """`channels * width_mult` rounded to the nearest integer, at least 1."""
    return max(1, int(round(channels * width_mult)))


def make_divisible(value: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Round `value` to a multiple of `divisor` (at least `min_value`, default `divisor`).

    Rounds to the nearest multiple, but never more than 10% below `value`, so that a width
    multiplier never removes more capacity than it promises (the MobileNet convention).
    """
    min_value = divisor if min_value is None else min_value
    rounded = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


def init_weights(model: nn.Module) -> None:
    """He (Kaiming) normal init for convs, unit/zero BN, PyTorch's default for Linear layers.

    fan_out mode keeps the variance of the gradients constant through ReLU networks, which is
    what deep CIFAR ResNets need to train from scratch without warm-up.
    """
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            # Same as nn.Linear's own reset, stated explicitly so it does not depend on the torch version.
            nn.init.kaiming_uniform_(m.weight, a=math.sqrt(5))
            if m.bias is not None:
                bound = 1.0 / math.sqrt(m.in_features)
                nn.init.uniform_(m.bias, -bound, bound)
