"""The one tiny fixture the method contract tests share (also imported by the DDP worker).

A 4/8/16-channel ResNet-20 (BatchNorm, residual couplings: every structure case a method meets)
on 64 synthetic 12x12 images: a whole 2-epoch run takes a fraction of a second per method.
"""

from __future__ import annotations

import torch

from prunus.data import DataConfig, build_loaders
from prunus.engine import TrainConfig
from prunus.models import create_model

EPOCHS = 2


def tiny_data(rank: int = 0, world_size: int = 1):
    cfg = DataConfig(name="synthetic", num_samples=64, val_size=16, batch_size=16, image_size=12, channels=1)
    return build_loaders(cfg, seed=0, rank=rank, world_size=world_size)


def tiny_model(data, seed: int = 0):
    torch.manual_seed(seed)
    return create_model("resnet20", in_channels=data.in_channels, num_classes=data.num_classes, width_mult=0.25)


def tiny_config(**overrides) -> TrainConfig:
    return TrainConfig(**{"epochs": EPOCHS, "lr": 0.05, "seed": 0, **overrides})
