"""Pipelines: turn a RunConfig (code defaults < YAML < flags) into trained, saved models."""

from prunus.recipes.config import MethodSpec as MethodSpec
from prunus.recipes.config import ModelConfig as ModelConfig
from prunus.recipes.config import RunConfig as RunConfig
from prunus.recipes.config import resolve_run_config as resolve_run_config
from prunus.recipes.train import TrainResult as TrainResult
from prunus.recipes.train import train_run as train_run

__all__ = ["MethodSpec", "ModelConfig", "RunConfig", "TrainResult", "resolve_run_config", "train_run"]
