"""`RunConfig`: everything one run needs (model, data, training, methods), versioned.

Precedence: code defaults < YAML file < command-line flags (see `resolve_run_config`). The
resolved config is written to every run directory as config.yaml.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from prunus._io.atomic import write_text
from prunus.config import Config, check_count, check_range, load_yaml
from prunus.data import DataConfig
from prunus.engine.config import TrainConfig
from prunus.errors import ConfigError

__all__ = ["CONFIG_VERSION", "MethodSpec", "ModelConfig", "RunConfig", "resolve_run_config", "write_run_config"]

CONFIG_VERSION = 1


@dataclass(frozen=True)
class ModelConfig(Config):
    """Which registry model to build; num_classes/in_channels come from the dataset."""

    name: str = "resnet20"
    width_mult: float = 1.0
    kwargs: dict[str, Any] = field(default_factory=dict)  # family-specific, e.g. {"shortcut": "A"}

    def __post_init__(self) -> None:
        check_range("model.width_mult", self.width_mult, low=0.0, low_inclusive=False)
        from prunus.errors import CorruptFileError
        from prunus.formats.limits import check_kwargs

        try:  # a mapping of JSON scalars, as a model file's arch.kwargs must be
            check_kwargs(self.kwargs, "model.kwargs")
        except CorruptFileError as exc:
            raise ConfigError(str(exc)) from None
        from prunus.models import get_model_entry

        get_model_entry(self.name)  # unknown names fail here, listing the choices


@dataclass(frozen=True)
class MethodSpec(Config):
    """One Method plug-in and its arguments, resolved: `args` holds every field of the method's
    config (defaults included, validated), so config.yaml records exactly what ran."""

    name: str = ""
    args: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        from prunus.methods import method_config

        # unknown names and arguments fail here, listing the choices; values are checked too
        object.__setattr__(self, "args", method_config(self.name, **self.args).to_dict())


@dataclass(frozen=True)
class RunConfig(Config):
    """A whole training run.

    Example:
        >>> cfg = RunConfig.from_dict({"model": {"name": "lenet5"}, "train": {"epochs": 2}})
        >>> cfg.train.epochs, cfg.data.name
        (2, 'fashion-mnist')
    """

    version: int = CONFIG_VERSION
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    methods: tuple[MethodSpec, ...] = ()
    networks: int = 1  # independent networks trained side by side (grafting, ensembles); 1 = one model

    def __post_init__(self) -> None:
        check_count("networks", self.networks, 1, "networks")
        if self.version != CONFIG_VERSION:
            raise ConfigError(f"config version {self.version} is not supported (this prunus reads {CONFIG_VERSION})")


def resolve_run_config(
    yaml_path: str | os.PathLike[str] | None = None, overrides: Mapping[str, Mapping[str, Any]] | None = None
) -> RunConfig:
    """Defaults, then the YAML file, then `overrides` ({"train": {"lr": 0.05}, ...}; None = not given)."""
    config = RunConfig()
    if yaml_path is not None:
        config = RunConfig.from_dict({**config.to_dict(), **_nested_merge(config.to_dict(), load_yaml(yaml_path))})
    if overrides:
        data = config.to_dict()
        for section, values in overrides.items():
            given = {k: v for k, v in values.items() if v is not None} if isinstance(values, Mapping) else values
            if section == "methods":
                if given:
                    data["methods"] = given
            elif not isinstance(values, Mapping):  # a top-level scalar such as networks
                if values is not None:
                    data[section] = values
            elif given:
                data[section] = {**data[section], **given}
        config = RunConfig.from_dict(data)
    return config


def _nested_merge(base: dict[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict) and key != "kwargs":
            out[key] = _nested_merge(out[key], value)
        else:
            out[key] = value
    return out


def write_run_config(config: RunConfig, path: str | os.PathLike[str]) -> None:
    """Write the resolved config as YAML, atomically."""
    write_text(path, yaml.safe_dump(config.to_dict(), sort_keys=False))
