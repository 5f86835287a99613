"""Stages that train: train (from scratch, any methods), finetune (an earlier model), csgd (rounds + merge).

All three go through `prunus.training.train_run`, so each leaves a normal run directory
(config.yaml, metrics.jsonl, checkpoint.pt, model/) inside its stage directory, and a killed
stage resumes from its last epoch checkpoint with the same final weights.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar

from prunus.config import check_count, check_range
from prunus.data import DataConfig
from prunus.engine.config import TrainConfig
from prunus.errors import ConfigError
from prunus.formats.run_dir import RunDir
from prunus.methods.figures import method_figures
from prunus.models.info import get_info
from prunus.models.timm_models import arch_model_name
from prunus.pipeline._stage_metrics import measure
from prunus.pipeline.stages import StageConfig, StageContext, StageResult, register_stage
from prunus.pruning.config import BUDGETS
from prunus.training.config import MethodSpec, ModelConfig, RunConfig

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

    def __post_init__(self) -> None:
        check_count(f"{type(self).__name__}.networks", self.networks, 1, "networks")


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
    width: float | None = None  # channels kept per coupled group after the last round (None: 0.625, or args' budget)
    rounds: int = 1  # cluster -> train -> merge, this many times, narrowing geometrically
    args: dict[str, Any] = field(default_factory=dict)  # other CentripetalSGD arguments: eps, cluster, ...

    def __post_init__(self) -> None:
        from prunus.config import renamed_fields
        from prunus.methods import method_arguments
        from prunus.methods.csgd import CSGDConfig

        # budgets under their old names (macs_ratio, ...) are recorded under the new ones, so the
        # stage's record and hash do not depend on which spelling the recipe used
        if not isinstance(self.args, dict):
            raise ConfigError(f"csgd.args must be a mapping of CentripetalSGD arguments, got {self.args!r}")
        object.__setattr__(self, "args", renamed_fields(CSGDConfig.RENAMED, self.args, "csgd.args."))
        if self.width is not None:
            check_range("csgd.width", self.width, 0.0, 1.0, low_inclusive=False)
        check_count("csgd.rounds", self.rounds, 1, "rounds")
        accepted = [a for a in method_arguments("csgd") if a != "width"]
        unknown = sorted(set(self.args) - set(accepted))
        if unknown:
            raise ConfigError(f"csgd.args has no argument(s) {', '.join(unknown)}; accepted: {', '.join(accepted)}")
        if self.rounds > 1 and any(k in self.args for k in ("widths", *BUDGETS)):
            raise ConfigError("csgd.args widths and budgets are not supported with rounds > 1; give one width")


def _metrics(run: RunDir, threads: int | None) -> StageResult:
    """The stage's numbers from a finished run directory (its summary and final model)."""
    from prunus.formats import load

    metrics = run.read_summary()["metrics"]
    final = run.final_run()  # a population (networks > 1, grafting) keeps each network in net<k>/; network 0 goes on
    numbers = {k: v for k, v in metrics.items() if isinstance(v, (int, float, str, bool)) or v is None}
    numbers.update(measure(load(final.model), final.model, threads=threads, accuracy=metrics.get("final_test_acc")))
    epochs = final.read_metrics()
    numbers.update(method_figures(epochs))  # WE / grafting / MFP figures for the stage tables
    if epochs and all("val_acc" in e for e in epochs):  # never the best-of-epochs test accuracy
        best = max(range(len(epochs)), key=lambda i: (epochs[i]["val_acc"], -i))
        numbers.update(best_val_epoch=best + 1, best_val_test_acc=epochs[best].get("test_acc"))
    return StageResult(metrics=numbers, model=final.model)


def _train(cfg: TrainStage, ctx: StageContext, run: RunDir | None = None) -> RunDir:
    from prunus.formats import load
    from prunus.training import train_run

    model = load(ctx.input_model) if ctx.input_model is not None else None
    config = RunConfig(
        model=cfg.model,
        data=cfg.data,
        train=dataclasses.replace(cfg.train, seed=ctx.seed),
        methods=cfg.methods,
        networks=getattr(cfg, "networks", 1),
    )
    run = run or ctx.out
    train_run(config, run.root, resume=True, progress=ctx.progress, model=model)
    return run


@register_stage("train", TrainStage, needs_model=False, makes_model=True, example={"train": {"epochs": 1}})
def run_train(cfg: TrainStage, ctx: StageContext) -> StageResult:
    """Train a model (from scratch, or the `input` stage's model) with any methods."""
    return _metrics(_train(cfg, ctx), cfg.train.threads)


@register_stage("finetune", FinetuneStage, needs_model=True, makes_model=True, example={"train": {"epochs": 1}})
def run_finetune(cfg: FinetuneStage, ctx: StageContext) -> StageResult:
    """Train an earlier stage's model further (lr 0.01 unless set), with any methods."""
    return _metrics(_train(cfg, ctx), cfg.train.threads)


@register_stage(
    "csgd",
    CsgdStage,
    needs_model=True,
    makes_model=True,
    example={"width": 0.5, "args": {"eps": 0.1, "cluster": "even"}, "train": {"epochs": 1}},
)
def run_csgd(cfg: CsgdStage, ctx: StageContext) -> StageResult:
    """C-SGD: cluster filters, train with the centripetal rule, merge exactly (optionally in rounds).

    This is the one rounds loop in prunus (`prunus csgd --rounds` runs this stage): each round is
    a complete run in its own directory (`RunDir.round`); a finished round is not repeated, an
    unfinished one resumes from its checkpoint. Every round narrows each group by the same factor
    (`round_widths`), so the last round lands exactly on the widths one round would give.
    """
    import torch

    from prunus.formats import load
    from prunus.methods.csgd import DEFAULT_WIDTH, CentripetalSGD, group_widths, round_widths, target_width

    model = load(ctx.input_model)
    arch = dict(get_info(model).arch or {})
    name = arch_model_name(arch) or "resnet20"  # only recorded (a user factory's model is passed in as it is)
    model_cfg = ModelConfig(name=name, width_mult=arch.get("kwargs", {}).get("width_mult", 1.0))
    spec = TrainStage(model=model_cfg, data=cfg.data, train=cfg.train)
    if cfg.rounds == 1:
        width = {"width": cfg.width} if cfg.width is not None else {}
        methods = (MethodSpec(name="csgd", args={**width, **cfg.args}),)
        return _metrics(_train(dataclasses.replace(spec, methods=methods), ctx), cfg.train.threads)
    ignored = cfg.args.get("ignored_layers")
    example = torch.zeros(1, *get_info(model).input_shape)
    width = cfg.width if cfg.width is not None else DEFAULT_WIDTH
    start = group_widths(model, example, ignored)
    CentripetalSGD(width=width, ignored_layers=ignored, cluster="even").plan(model, example)  # validates widths
    final = {key: target_width(n, width, key) for key, n in start.items()}
    source = ctx.input_model
    for r in range(1, cfg.rounds + 1):
        where = ctx.out.round(r)
        if where.finished():  # its summary is written after its model: the round is done
            source = where.model
            continue
        current = group_widths(load(source), example, ignored)
        step = round_widths(start, final, current, r, cfg.rounds)
        args = {**cfg.args, "width": 1.0, "widths": {k: v for k, v in step.items() if v < current[k]}}
        methods = (MethodSpec(name="csgd", args=args),)
        round_ctx = dataclasses.replace(ctx, input_model=source)
        _train(dataclasses.replace(spec, methods=methods), round_ctx, run=where)
        source = where.model
    return _metrics(ctx.out.round(cfg.rounds), cfg.train.threads)
