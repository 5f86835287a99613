"""Build everything a RunConfig describes, train it, and leave a complete run directory.

Run directory: config.yaml (resolved), metrics.jsonl, checkpoint.pt, model/ (final model:
safetensors + JSON), summary.json (final metrics, MACs, params, wall time).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from prunus._atomic import write_json
from prunus.config import load_yaml
from prunus.data import EXECUTION_ONLY_FIELDS, build_loaders
from prunus.engine.distributed import barrier, init_from_env
from prunus.engine.trainer import RESUME_MAY_CHANGE, Trainer, resolve_device
from prunus.errors import ConfigError
from prunus.formats import save
from prunus.formats.limits import build_bounded
from prunus.measure import count
from prunus.methods import create_method
from prunus.model_info import update_info
from prunus.models import create_model
from prunus.recipes.config import RunConfig, write_run_config

__all__ = ["TrainResult", "check_resume_config", "train_run"]


@dataclass
class TrainResult:
    """What `train_run` returns: the trained model, its final metrics, and where files went."""

    model: nn.Module
    metrics: dict[str, Any]
    run_dir: Path | None


def check_resume_config(config: RunConfig, run_dir: Path) -> None:
    """Refuse a resume whose model, data or methods differ from the run's config.yaml.

    The training settings are checked against the checkpoint by the Trainer (only
    `RESUME_MAY_CHANGE` may differ); the data's `EXECUTION_ONLY_FIELDS` (where the files are,
    the evaluation batch) may change too; everything else a run is made of must stay as it was.
    """
    saved_path = run_dir / "config.yaml"
    if not saved_path.exists():
        return

    def compared(cfg: dict[str, Any]) -> dict[str, Any]:
        data = {k: v for k, v in cfg.get("data", {}).items() if k not in EXECUTION_ONLY_FIELDS}
        return {**cfg, "data": data}

    saved = compared(RunConfig.from_dict(load_yaml(saved_path)).to_dict())
    current = compared(config.to_dict())
    changed = [k for k in ("model", "data", "methods") if saved.get(k) != current.get(k)]
    if changed:
        section = changed[0]
        old, new = saved.get(section), current.get(section)
        if isinstance(old, dict) and isinstance(new, dict):
            keys = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))
            detail = ", ".join(f"{section}.{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in keys)
        else:
            detail = f"{section}: {old!r} -> {new!r}"
        raise ConfigError(
            f"a resumed run cannot change {detail}; a resume may change only {', '.join(RESUME_MAY_CHANGE)} "
            f"and {', '.join(f'data.{k}' for k in sorted(EXECUTION_ONLY_FIELDS))}"
        )


def train_run(
    config: RunConfig,
    run_dir: str | os.PathLike[str] | None,
    *,
    resume: bool = False,
    progress: bool = True,
    model: nn.Module | None = None,
) -> TrainResult:
    """Train the run `config` describes; `model` (e.g. a loaded pruned model) replaces the registry build.

    Example:
        >>> from prunus.recipes.config import RunConfig
        >>> cfg = RunConfig.from_dict({"model": {"name": "lenet5"}, "data": {"name": "synthetic"},
        ...                            "train": {"epochs": 1}})
        >>> train_run(cfg, None, progress=False).metrics["final_test_acc"] > 0  # doctest: +SKIP
        True
    """
    start = time.perf_counter()
    run_dir = Path(run_dir) if run_dir is not None else None
    if run_dir is not None and (run_dir / "checkpoint.pt").exists() and not resume:
        raise ConfigError(f"{run_dir} already holds a run; pass --resume to continue it or choose another --out")
    if run_dir is not None and resume:
        check_resume_config(config, run_dir)
    device = resolve_device(config.train.device)
    dist = init_from_env(device)
    methods = [create_method(spec.name, **spec.args) for spec in config.methods]
    if config.networks > 1 or any(getattr(m, "needs_peers", False) for m in methods):
        from prunus.recipes.population import train_population

        return train_population(config, run_dir, resume, progress, model)
    data, model = build_data_and_model(config, config.train.seed, dist.rank, dist.world_size, model)
    trainer = Trainer(model, data, config.train, methods, run_dir, resume=resume, progress=progress)
    if run_dir is not None and dist.is_main:  # only now: a refused resume must leave config.yaml as it was
        write_run_config(config, run_dir / "config.yaml")
    metrics = trainer.fit()
    model = finish_model(trainer, data, metrics, start, run_dir if dist.is_main else None, config)
    barrier()
    return TrainResult(model=model, metrics=metrics, run_dir=run_dir)


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
    """Add MACs/params/time to `metrics`; with `out`, write out/model and out/summary.json."""
    model = trainer.model
    counts = count(model, (1, *data.input_shape))
    metrics.update(
        macs=counts.macs, params=counts.params, seconds=time.perf_counter() - start, seed=trainer.config.seed
    )
    if out is not None:
        save(model.cpu(), out / "model", input_shape=data.input_shape, metrics=metrics)
        write_json(out / "summary.json", {"config": config.to_dict(), "metrics": metrics})
    return model
