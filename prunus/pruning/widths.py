"""Channel counts a pruned group may keep: never zero, whole grouped-conv offsets, multiples of `round_to`.

Runtimes pick their fastest kernels for channel counts that are multiples of a vector width
(8 floats in AVX2 registers, 16 in AVX-512, tensor-core tiles on GPUs); a 37-channel conv often
runs no faster than a 40-channel one. `round_to` rounds every kept width UP to a multiple of it,
so a group keeps `round_to * ceil(kept / round_to)` channels, or all of them when that would
exceed its width (a group narrower than `round_to` is never cut).

Example:
    >>> num_to_prune(10, 0.4), num_to_prune(10, 0.3), num_to_prune(1, 0.9)
    (4, 3, 0)
    >>> num_to_prune(64, 0.5, round_to=8), num_to_prune(64, 0.45, round_to=8), num_to_prune(6, 0.5, round_to=8)
    (32, 24, 0)
    >>> kept_widths(20, round_to=8)
    [8, 16, 20]

`round_to="auto"` is this CPU's channel block (`channel_block`): 16 with AVX-512, 8 with AVX2.
"""

from __future__ import annotations

import math

import torch

from prunus.config import BOUNDS
from prunus.errors import ConfigError

__all__ = ["AUTO", "channel_block", "check_round_to", "kept_widths", "num_to_prune", "resolve_round_to", "round_kept"]

#: the `round_to` word for "this CPU's channel block"
AUTO = "auto"

# float32 lanes of one vector register, per ISA torch reports (`torch.backends.cpu.get_cpu_capability`).
# OpenVINO's and onnxruntime's CPU kernels (oneDNN brgconv, MLAS NCHWc) and torch's oneDNN convs lay
# channels out in blocks of this many and pad the last block: on AVX-512, a conv cut from 16 to 8
# output channels measured as slow as the uncut one (ResNet-56 stage 1 on OpenVINO: 13.8 vs 14.2 ms,
# benchmarks/results/ov_profile_resnet56_r1.json).
_BLOCKS = {"AVX512": 16, "AVX2": 8, "SVE256": 8, "ZVECTOR": 4, "VSX": 4}
_DEFAULT_BLOCK = 4  # 128-bit SIMD (SSE, NEON): 4 float32 lanes

# floor(N * rate) with a little slack, so 0.3 * 10 (= 2.9999999999999996) counts as 3
_EPS = 1e-9


def channel_block(capability: str | None = None) -> int:
    """Channels this CPU's runtimes compute together: the float32 lanes of its widest vector unit.

    Every CPU runtime prunus deploys to (torch, onnxruntime, OpenVINO) pads a conv's output
    channels to whole blocks of this size, so widths that are multiples of it turn every cut channel
    into time. `capability`: an ISA name as `torch.backends.cpu.get_cpu_capability()` reports it
    (default: this machine's).

    Example:
        >>> channel_block("AVX512"), channel_block("AVX2"), channel_block("DEFAULT")
        (16, 8, 4)
    """
    if capability is None:
        capability = torch.backends.cpu.get_cpu_capability()
    return _BLOCKS.get(str(capability).upper(), _DEFAULT_BLOCK)


def check_round_to(round_to: object) -> int | str:
    """`round_to` as an int >= 1 or the word "auto", else a `ConfigError` naming the bad value."""
    if round_to == AUTO:
        return AUTO
    # bounded like any count (prunus.config.BOUNDS): a block wider than any layer is a typo, not a setting
    if isinstance(round_to, bool) or not isinstance(round_to, int) or not 1 <= round_to <= BOUNDS["channels"]:
        raise ConfigError(
            f"round_to must be an integer from 1 to {BOUNDS['channels']} (1 = no rounding, e.g. 8 or 16) or 'auto' "
            f"(this CPU's channel block, {channel_block()} here), got {round_to!r}"
        )
    return round_to


def resolve_round_to(round_to: int | str) -> int:
    """A validated `round_to` as the int it means: "auto" -> `channel_block()`.

    Example:
        >>> resolve_round_to(8), resolve_round_to("auto") == channel_block()
        (8, True)
    """
    value = check_round_to(round_to)
    return channel_block() if value == AUTO else int(value)


def _floor_width(unit: int, least: int) -> int:
    """The narrowest width allowed: `least` channels (at least one) rounded up to whole units."""
    return unit * math.ceil(max(least, 1) / unit)


def round_kept(num_channels: int, kept: int, round_to: int = 1, blocks: int = 1, least: int = 1) -> int:
    """`kept` rounded up to a multiple of lcm(round_to, blocks), at least `least` (one unit), at most `num_channels`.

    `least` is the group's `min_channels` (one channel per piece of a split it feeds).
    """
    unit = math.lcm(round_to, blocks)
    return min(num_channels, max(_floor_width(unit, least), unit * math.ceil(kept / unit)))


def num_to_prune(num_channels: int, rate: float, round_to: int = 1, blocks: int = 1, least: int = 1) -> int:
    """floor(N * rate) channels, fewer so the kept width is a valid one (see `round_kept`); never all N.

    Shared by one-shot `prune` and the SFP-family methods.
    """
    k = min(math.floor(num_channels * rate + _EPS), num_channels - 1)
    return num_channels - round_kept(num_channels, num_channels - k, round_to, blocks, least)


def kept_widths(num_channels: int, round_to: int = 1, blocks: int = 1, least: int = 1) -> list[int]:
    """Every width a group of `num_channels` may keep, ascending (always ends with `num_channels`)."""
    unit = math.lcm(round_to, blocks)
    return sorted(set(range(_floor_width(unit, least), num_channels + 1, unit)) | {num_channels})
