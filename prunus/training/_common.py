"""What a single run and a population run share: building data and model, finishing a trained model."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from prunus.data import build_loaders
from prunus.engine.trainer import Trainer
from prunus.formats import save
from prunus.formats.limits import build_bounded
from prunus.formats.run_dir import RunDir
from prunus.measure import count
from prunus.models import create_model
from prunus.models.info import update_info
from prunus.training.config import RunConfig

__all__ = ["TrainResult", "build_data_and_model", "finish_model"]


@dataclass
class TrainResult:
    """What `train_run` returns: the trained model, its final metrics, and where files went."""

    model: nn.Module
    metrics: dict[str, Any]
    run_dir: Path | None


def build_data_and_model(
    config: RunConfig, seed: int, rank: int = 0, world_size: int = 1, model: nn.Module | None = None
) -> tuple[Any, nn.Module]:
    """The data bundle (this rank's shard) and the model (built with `seed`, unless given)."""
    torch.manual_seed(seed)  # same seed -> same initialisation in every arm
    data = build_loaders(config.data, seed=seed, rank=rank, world_size=world_size)
    if model is None:
        kwargs = dict(
            num_classes=data.num_classes,
            in_channels=data.in_channels,
            width_mult=config.model.width_mult,
            **config.model.kwargs,
        )
        # a config asking for an absurd width is refused from shapes alone, before memory is taken
        build_bounded(lambda: create_model(config.model.name, **kwargs), tuple(data.input_shape), "model")
        model = create_model(config.model.name, **kwargs)
    update_info(model, input_shape=tuple(data.input_shape))
    return data, model


def finish_model(
    trainer: Trainer, data: Any, metrics: dict[str, Any], start: float, out: Path | None, config: RunConfig
) -> nn.Module:
    """Add MACs/params/time to `metrics`; with `out`, write its final model and then its summary."""
    model = trainer.model
    counts = count(model, (1, *data.input_shape))
    metrics.update(
        macs=counts.macs, params=counts.params, seconds=time.perf_counter() - start, seed=trainer.config.seed
    )
    if out is not None:
        run = RunDir(out)
        save(model.cpu(), run.model, input_shape=data.input_shape, metrics=metrics)
        run.write_summary(config.to_dict(), metrics)  # last: the run is finished once it exists
    return model
