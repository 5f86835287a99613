"""Pipelines: turn a RunConfig (code defaults < YAML < flags) into trained, saved models."""

from prunus.training.config import MethodSpec as MethodSpec
from prunus.training.config import ModelConfig as ModelConfig
from prunus.training.config import RunConfig as RunConfig
from prunus.training.config import resolve_run_config as resolve_run_config
from prunus.training.train import TrainResult as TrainResult
from prunus.training.train import train_run as train_run

__all__ = ["MethodSpec", "ModelConfig", "RunConfig", "TrainResult", "resolve_run_config", "train_run"]
