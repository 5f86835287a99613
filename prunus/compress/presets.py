"""The settings `prunus.compress` starts from, chosen by the kind of model it is given.

A DE compression of an MLP and of a conv net want different settings, and a newcomer should not
have to know which. Every `CompressConfig` field listed in `AUTO_FIELDS` defaults to `"auto"`:
`resolve` fills it from the preset (`CompressConfig.preset`, itself `"auto"` by default: `convnet`
when a convolution is among the layers the search prunes, else `mlp`). A value the user gives is
kept; only `"auto"` is replaced, and the resolved config names the preset it used.

- `mlp`: the settings LeNet-300-100 meets its budgets with (uniform sparsity, 8 cycles, 1024
  calibration images, no recovery).
- `convnet`: the measured ResNet-20 command that met a 1-point budget by its own verdict (24.9x,
  9.6 minutes on 2 cores): the search spreads one sparsity over the layers (`allocation="global"`;
  uniform when the sparsity is per layer), 4 cycles with 300 distillation steps of recovery after
  each but the last, 128 calibration images (the im2col candidates of 1024 took 10-14 GB and most
  of the 53 minutes the MLP settings ran), quantization its own 0.3-point share, and a 1500-step
  fine-tune before the bits. Without recovery the same teacher escalated through every rung and
  stopped NOT MET (+3.5 pt).

The fine-tune is not a fixed value: `finetune_steps` left unset starts at the preset's
`FINETUNE_START` and the budget escalation (`prunus.compress.escalate`) raises it from there.

Example:
    >>> import torch.nn as nn
    >>> from prunus.compress.config import CompressConfig
    >>> mlp = nn.Sequential(nn.Flatten(), nn.Linear(784, 10))
    >>> resolve(CompressConfig(), mlp).calib_size
    1024
    >>> net = nn.Sequential(nn.Conv2d(1, 8, 3), nn.Flatten(), nn.Linear(8 * 26 * 26, 10))
    >>> cfg = resolve(CompressConfig(cycles=6), net)
    >>> cfg.preset, cfg.cycles, cfg.recovery_steps, cfg.allocation
    ('convnet', 6, 300, 'global')
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import torch.nn as nn

from prunus.compress.runner import CONVS

__all__ = ["AUTO", "AUTO_FIELDS", "FINETUNE_START", "PRESETS", "model_kind", "resolve", "start_steps"]

#: The value of a field that the preset fills.
AUTO = "auto"

#: Each preset's value of every field that defaults to "auto".
PRESETS: dict[str, dict[str, Any]] = {
    "mlp": {
        "allocation": "uniform",
        "calib_size": 1024,
        "rescore_size": 4096,
        "elite_rescore_size": None,
        "generations": 4,
        "cycles": 8,
        "recovery_steps": 0,
        "finetune_size": 4096,
        "quant_drop": None,
    },
    "convnet": {
        "allocation": "global",
        "calib_size": 128,
        "rescore_size": 2048,
        "elite_rescore_size": 512,
        "generations": 3,
        "cycles": 4,
        "recovery_steps": 300,
        "finetune_size": 16384,
        "quant_drop": 0.3,
    },
}
AUTO_FIELDS: tuple[str, ...] = tuple(PRESETS["mlp"])

#: Where an unset `finetune_steps` starts, per preset; the escalation ladder raises it from there.
FINETUNE_START: dict[str, int] = {"mlp": 0, "convnet": 1500}


def model_kind(model: nn.Module) -> str:
    """`"convnet"` when the model has a convolution of any rank (DE prunes convs and Linear), else `"mlp"`."""
    return "convnet" if any(isinstance(m, CONVS) for m in model.modules()) else "mlp"


def resolve(cfg: Any, model: nn.Module) -> Any:
    """`cfg` with its preset chosen (for `model` when "auto") and every "auto" field filled from it.

    A resolved config resolves to itself, so `prunus.compress` and the compress stage can both call it.
    """
    preset = model_kind(model) if cfg.preset == AUTO else cfg.preset
    values = PRESETS[preset]
    fill = {name: values[name] for name in AUTO_FIELDS if getattr(cfg, name) == AUTO}
    if fill.get("allocation") == "global" and isinstance(cfg.sparsity, Mapping):
        fill["allocation"] = "uniform"  # a per-layer sparsity is its own allocation
    return dataclasses.replace(cfg, preset=preset, **fill)


def start_steps(cfg: Any) -> dict[str, int]:
    """Where the unset escalated fields of a resolved `cfg` start: `{"finetune_steps": n}`, or {} at 0."""
    if cfg.preset not in FINETUNE_START:
        raise ValueError(f"CompressConfig.preset={cfg.preset!r} is not resolved; call prunus.compress.presets.resolve")
    n = FINETUNE_START[cfg.preset]
    return {"finetune_steps": n} if n and cfg.finetune_steps is None else {}
