"""The training engine: one Trainer, Method hooks, configs, checkpoints, distributed helpers."""

from prunus.engine.config import TrainConfig as TrainConfig
from prunus.engine.method import Method as Method
from prunus.engine.trainer import Trainer as Trainer

__all__ = ["Method", "TrainConfig", "Trainer"]
