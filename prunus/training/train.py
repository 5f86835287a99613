"""Build everything a RunConfig describes, train it, and leave a complete run directory.

The run directory (`prunus.formats.run_dir.RunDir`) holds the resolved config, the metrics log,
the checkpoint, the final model and the summary (final metrics, MACs, params, wall time).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from torch import nn

from prunus.config import load_yaml
from prunus.data import EXECUTION_ONLY_FIELDS
from prunus.engine.distributed import barrier, init_from_env
from prunus.engine.trainer import RESUME_MAY_CHANGE, Trainer, resolve_device
from prunus.errors import ConfigError
from prunus.formats.run_dir import RunDir
from prunus.methods import create_method
from prunus.training._common import TrainResult, build_data_and_model, finish_model
from prunus.training.config import RunConfig, write_run_config
from prunus.training.population import train_population

__all__ = ["TrainResult", "check_resume_config", "train_run"]


def check_resume_config(config: RunConfig, run_dir: Path) -> None:
    """Refuse a resume whose model, data or methods differ from the run's config.yaml.

    The training settings are checked against the checkpoint by the Trainer (only
    `RESUME_MAY_CHANGE` may differ); the data's `EXECUTION_ONLY_FIELDS` (where the files are,
    the evaluation batch) may change too; everything else a run is made of must stay as it was.
    """
    saved_path = RunDir(run_dir).config
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
        >>> from prunus.training.config import RunConfig
        >>> cfg = RunConfig.from_dict({"model": {"name": "lenet5"}, "data": {"name": "synthetic"},
        ...                            "train": {"epochs": 1}})
        >>> train_run(cfg, None, progress=False).metrics["final_test_acc"] > 0  # doctest: +SKIP
        True
    """
    start = time.perf_counter()
    run_dir = Path(run_dir) if run_dir is not None else None
    if run_dir is not None and RunDir(run_dir).checkpoint.exists() and not resume:
        raise ConfigError(f"{run_dir} already holds a run; pass --resume to continue it or choose another --out")
    if run_dir is not None and resume:
        check_resume_config(config, run_dir)
    device = resolve_device(config.train.device)
    dist = init_from_env(device)
    methods = [create_method(spec.name, **spec.args) for spec in config.methods]
    if config.networks > 1 or any(getattr(m, "needs_peers", False) for m in methods):
        return train_population(config, run_dir, resume, progress, model)
    data, model = build_data_and_model(config, config.train.seed, dist.rank, dist.world_size, model)
    trainer = Trainer(model, data, config.train, methods, run_dir, resume=resume, progress=progress)
    if run_dir is not None and dist.is_main:  # only now: a refused resume must leave config.yaml as it was
        write_run_config(config, RunDir(run_dir).config)
    metrics = trainer.fit()
    model = finish_model(trainer, data, metrics, start, run_dir if dist.is_main else None, config)
    barrier()
    return TrainResult(model=model, metrics=metrics, run_dir=run_dir)
