"""Stages that train: train (from scratch, any methods), finetune (an earlier model), csgd (rounds + merge).

All three go through `prunus.recipes.train_run`, so each leaves a normal run directory
(config.yaml, metrics.jsonl, checkpoint.pt, model/) inside its stage directory, and a killed
stage resumes from its last epoch checkpoint with the same final weights.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from prunus._safeio import read_json
from prunus.config import check_range
from prunus.data import DataConfig
from prunus.engine.config import TrainConfig
from prunus.engine.progress import read_records
from prunus.errors import ConfigError, CorruptFileError
from prunus.model_info import get_info
from prunus.pipeline._measure import measure
from prunus.pipeline.stages import StageConfig, StageContext, StageResult, register_stage
from prunus.recipes.config import MethodSpec, ModelConfig, RunConfig

__all__ = ["CsgdStage", "FinetuneStage", "TrainStage"]


@dataclass(frozen=True)
class TrainStage(StageConfig):
    """Train a model with any Method plug-ins (SFP, MFP, C-SGD, ...); from scratch unless `input` is set."""

    # Per-stage settings layered over the recipe's top-level model/data/train blocks.
    TRAIN_DEFAULTS: ClassVar[dict[str, Any]] = {}
    model: ModelConfig = field(default_factory=ModelConfig)  # built when the stage starts from scratch
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)  # its seed is replaced by the sweep's seed
    methods: tuple[MethodSpec, ...] = ()
    networks: int = 1  # independent networks trained side by side (grafting); network 0 goes on


@dataclass(frozen=True)
class FinetuneStage(TrainStage):
    """Train an earlier stage's model further (fine-tuning after pruning, or MFP/SFP on a trained model)."""

    # a tenth of the training lr and no warm-up: it starts from trained weights
    TRAIN_DEFAULTS: ClassVar[dict[str, Any]] = {"lr": 0.01, "warmup_epochs": 0.0, "milestones": []}


@dataclass(frozen=True)
class CsgdStage(StageConfig):
    """Centripetal SGD on an earlier model: cluster, train the clusters together, merge exactly."""

    # the phase's own schedule: never inherit the trained run's warm-up or milestones
    TRAIN_DEFAULTS: ClassVar[dict[str, Any]] = {
        "lr": 0.05,
        "schedule": "cosine",
        "warmup_epochs": 0.0,
        "milestones": [],
    }
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)  # each round trains train.epochs
    width: float = 0.625  # channels kept per coupled group after the last round
    rounds: int = 1  # cluster -> train -> merge, this many times, narrowing geometrically
    args: dict[str, Any] = field(default_factory=dict)  # other CentripetalSGD arguments: eps, cluster, ...

    def __post_init__(self) -> None:
        from prunus.methods import method_arguments

        check_range("csgd.width", self.width, 0.0, 1.0, low_inclusive=False)
        if isinstance(self.rounds, bool) or not isinstance(self.rounds, int) or self.rounds < 1:
            raise ConfigError(f"csgd.rounds must be an integer >= 1, got {self.rounds!r}")
        accepted = [a for a in method_arguments("csgd") if a != "width"]
        unknown = sorted(set(self.args) - set(accepted))
        if unknown:
            raise ConfigError(f"csgd.args has no argument(s) {', '.join(unknown)}; accepted: {', '.join(accepted)}")
        if self.rounds > 1 and "widths" in self.args:
            raise ConfigError("csgd.args.widths is not supported with rounds > 1; give one width")


def _metrics(run_dir: Path, threads: int | None) -> StageResult:
    """The stage's numbers from a finished run directory (summary.json + model/)."""
    from prunus.formats import load

    summary = read_json(run_dir / "summary.json", what="run summary")  # bounded: regular files only
    metrics = summary.get("metrics") if isinstance(summary, dict) else None
    if not isinstance(metrics, dict):
        raise CorruptFileError(f"run summary {run_dir / 'summary.json'} has no 'metrics' object")
    # a population (networks > 1, grafting) keeps each network in net<k>/; network 0 goes on
    run_dir = run_dir if (run_dir / "model").exists() else run_dir / "net0"
    model_dir = run_dir / "model"
    numbers = {k: v for k, v in metrics.items() if isinstance(v, (int, float, str, bool)) or v is None}
    numbers.update(measure(load(model_dir), model_dir, threads=threads, accuracy=metrics.get("final_test_acc")))
    epochs = read_records(run_dir / "metrics.jsonl")
    if epochs and all("val_acc" in e for e in epochs):  # never the best-of-epochs test accuracy
        best = max(range(len(epochs)), key=lambda i: (epochs[i]["val_acc"], -i))
        numbers.update(best_val_epoch=best + 1, best_val_test_acc=epochs[best].get("test_acc"))
    return StageResult(metrics=numbers, model=model_dir)


def _train(cfg: TrainStage, ctx: StageContext, run_dir: Path | None = None) -> Path:
    from prunus.formats import load
    from prunus.recipes import train_run

    model = load(ctx.input_model) if ctx.input_model is not None else None
    config = RunConfig(
        model=cfg.model,
        data=cfg.data,
        train=dataclasses.replace(cfg.train, seed=ctx.seed),
        methods=cfg.methods,
        networks=getattr(cfg, "networks", 1),
    )
    run_dir = run_dir or ctx.dir
    train_run(config, run_dir, resume=True, progress=ctx.progress, model=model)
    return run_dir


@register_stage("train", TrainStage, needs_model=False, makes_model=True)
def run_train(cfg: TrainStage, ctx: StageContext) -> StageResult:
    """Train a model (from scratch, or the `input` stage's model) with any methods."""
    return _metrics(_train(cfg, ctx), cfg.train.threads)


@register_stage("finetune", FinetuneStage, needs_model=True, makes_model=True)
def run_finetune(cfg: FinetuneStage, ctx: StageContext) -> StageResult:
    """Train an earlier stage's model further (lr 0.01 unless set), with any methods."""
    return _metrics(_train(cfg, ctx), cfg.train.threads)


@register_stage("csgd", CsgdStage, needs_model=True, makes_model=True)
def run_csgd(cfg: CsgdStage, ctx: StageContext) -> StageResult:
    """C-SGD: cluster filters, train with the centripetal rule, merge exactly (optionally in rounds)."""
    import torch

    from prunus.formats import load
    from prunus.methods._clustering import target_width
    from prunus.methods.csgd import CentripetalSGD, group_widths, round_widths

    model = load(ctx.input_model)
    arch = dict(get_info(model).arch or {})
    model_cfg = ModelConfig(name=arch.get("name", "resnet20"), width_mult=arch.get("kwargs", {}).get("width_mult", 1.0))
    spec = TrainStage(model=model_cfg, data=cfg.data, train=cfg.train)
    if cfg.rounds == 1:
        methods = (MethodSpec(name="csgd", args={"width": cfg.width, **cfg.args}),)
        return _metrics(_train(dataclasses.replace(spec, methods=methods), ctx), cfg.train.threads)
    # Rounds: each round is a complete run in round<r>/; a finished round (summary.json written
    # after its model) is not repeated, an unfinished one resumes from its checkpoint.
    ignored = cfg.args.get("ignored_layers")
    example = torch.zeros(1, *get_info(model).input_shape)
    start = group_widths(model, example, ignored)
    CentripetalSGD(width=cfg.width, ignored_layers=ignored, cluster="even").plan(model, example)  # validates widths
    final = {key: target_width(n, cfg.width, key) for key, n in start.items()}
    source = ctx.input_model
    for r in range(1, cfg.rounds + 1):
        where = ctx.dir / f"round{r}"
        if (where / "summary.json").exists():  # written after the round's model: the round is done
            source = where / "model"
            continue
        current = group_widths(load(source), example, ignored)
        step = round_widths(start, final, current, r, cfg.rounds)
        args = {**cfg.args, "width": 1.0, "widths": {k: v for k, v in step.items() if v < current[k]}}
        methods = (MethodSpec(name="csgd", args=args),)
        round_ctx = dataclasses.replace(ctx, input_model=source)
        _train(dataclasses.replace(spec, methods=methods), round_ctx, run_dir=where)
        source = where / "model"
    return _metrics(ctx.dir / f"round{cfg.rounds}", cfg.train.threads)
