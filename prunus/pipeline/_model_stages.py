"""Stages that make, transform or ship a model without training: create, prune, export, bench."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from prunus.config import check_choice, check_count, check_range
from prunus.data import DataConfig
from prunus.errors import ConfigError
from prunus.models.info import example_input, get_info
from prunus.pipeline._stage_metrics import measure, model_bytes, split_accuracy
from prunus.pipeline.stages import StageConfig, StageContext, StageResult, register_stage
from prunus.pruning.config import PruneConfig
from prunus.training.config import ModelConfig

__all__ = ["BenchStage", "CreateStage", "ExportStage", "PruneStage"]


@dataclass(frozen=True)
class CreateStage(StageConfig):
    """A fresh model with random initialisation (seeded by the chain's seed), built from `model` at `input_shape`.

    What a chain starts from when there is no trained model: `prunus prune --model timm:resnet18
    --input-shape 3,64,64` runs create -> prune. `in_channels` is `input_shape`'s C; `num_classes`
    None leaves the model's own default (10 for the zoo, 1000 for timm).
    """

    model: ModelConfig = field(default_factory=ModelConfig)
    input_shape: tuple[int, ...] = ()
    num_classes: int | None = None

    def __post_init__(self) -> None:
        shape = self.input_shape
        if len(shape) != 3 or not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in shape):
            raise ConfigError(f"create.input_shape must be [C, H, W] of positive integers, got {list(shape)}")
        if self.num_classes is not None:
            check_range("create.num_classes", self.num_classes, 0)


@register_stage("create", CreateStage, needs_model=False, makes_model=True, example={"input_shape": [1, 28, 28]})
def run_create(cfg: CreateStage, ctx: StageContext) -> StageResult:
    """Build a model with random initialisation (no training, no pretrained weights) and save it."""
    import torch

    from prunus.formats import save
    from prunus.formats.limits import build_bounded
    from prunus.measure import count
    from prunus.models import create_model
    from prunus.models.info import update_info

    shape = tuple(cfg.input_shape)
    kwargs = dict(num_classes=cfg.num_classes, in_channels=shape[0], width_mult=cfg.model.width_mult,
                  **cfg.model.kwargs)  # fmt: skip
    build_bounded(lambda: create_model(cfg.model.name, **kwargs), shape, cfg.model.name)  # shapes first
    torch.manual_seed(ctx.seed)
    model = create_model(cfg.model.name, **kwargs)
    update_info(model, input_shape=shape)
    counts = count(model, shape)
    numbers = {"macs": int(counts.macs), "params": int(counts.params)}
    out = save(model, ctx.out.model, input_shape=shape, metrics=numbers, extra={"initialisation": "random"})
    return StageResult(metrics={**numbers, "bytes": model_bytes(out), "initialisation": "random"}, model=out)


@dataclass(frozen=True)
class PruneStage(StageConfig, PruneConfig):
    """One-shot structured pruning of an earlier model: its settings are a `prunus.pruning.PruneConfig`.

    Exactly one target (`remove_channels` removed, or `keep_macs` / `keep_params` / `keep_latency` kept;
    the old names `ratio`, `macs_ratio`, ... are deprecated aliases);
    every other field as `PruneConfig` documents it (`prunus prune --help` lists them).
    """

    _PREFIX = "prune."  # messages name the fields as recipes do

    data: DataConfig = field(default_factory=DataConfig)  # test accuracy after pruning; data-driven criteria
    evaluate: bool = True  # score the pruned model on data's test split (prunus prune: only with --data)
    threads: int | None = None  # torch/runtime threads while pruning (latency budgets time on these); how, not what

    def __post_init__(self) -> None:
        super().__post_init__()  # PruneConfig: ranges, criterion, at most one target
        try:
            self.require_target()
        except ConfigError:
            raise ConfigError(
                "prune needs exactly one of remove_channels (channels removed), keep_macs, keep_params or keep_latency "
                "(fraction kept); got none"
            ) from None
        if self.threads is not None:
            check_count("prune.threads", self.threads, 1, "threads")
        if not isinstance(self.evaluate, bool):
            raise ConfigError(f"prune.evaluate must be true or false, got {self.evaluate!r}")

    def data_used(self) -> DataConfig | None:
        """Its data only when it evaluates the pruned model or its criterion scores on a batch."""
        from prunus.criteria import get_criterion

        return self.data if self.evaluate or get_criterion(self.criterion).needs_data else None

    def prune_config(self) -> PruneConfig:
        """The `PruneConfig` this stage holds (its own fields, without the stage's)."""
        return PruneConfig(**{f.name: getattr(self, f.name) for f in dataclasses.fields(PruneConfig)})


@register_stage("prune", PruneStage, needs_model=True, makes_model=True, example={"remove_channels": 0.5})
def run_prune(cfg: PruneStage, ctx: StageContext) -> StageResult:
    """Prune once (no training): score coupled groups, cut to the share removed or the budget, save the model."""
    import torch

    from prunus.criteria import get_criterion
    from prunus.data import build_loaders, training_slice
    from prunus.formats import load, save
    from prunus.pruning import prune

    model = load(ctx.input_model)
    shape = tuple(get_info(model).input_shape)
    batch = None
    if get_criterion(cfg.criterion).needs_data:  # a fixed, unaugmented training batch, in dataset order
        data = build_loaders(DataConfig(**{**cfg.data.to_dict(), "augment": False}), seed=ctx.seed)
        batch = training_slice(data, data.train.batch_size)
    torch.manual_seed(ctx.seed)
    model, report = prune(model, example_input(shape, model), cfg.prune_config(), batch=batch, threads=cfg.threads)
    acc = split_accuracy(model, cfg.data, ctx.seed) if cfg.evaluate else None
    numbers = {"macs": report.pruned_macs, "params": report.pruned_params}
    if acc is not None:
        numbers["final_test_acc"] = acc
    out = save(model.cpu(), ctx.out.model, input_shape=shape, metrics=numbers,
               extra={"prune_report": report.to_dict(), "source": str(ctx.input_model)})  # fmt: skip
    metrics: dict[str, Any] = {
        "requested_ratio": report.requested_ratio,
        "requested_macs_ratio": report.requested_macs_ratio,
        "achieved_ratio": report.achieved_ratio,
        "achieved_macs_ratio": report.achieved_macs_ratio,
        "widths": report.widths,
        "report": report.to_dict(),
    }
    metrics.update(measure(model, out, accuracy=acc))
    return StageResult(metrics=metrics, model=out)


EXPORT_FORMATS = ("onnx", "torchscript", "openvino")


@dataclass(frozen=True)
class ExportStage(StageConfig):
    """Export an earlier model to ONNX (checked in onnxruntime), TorchScript and/or OpenVINO IR."""

    formats: tuple[str, ...] = ("onnx",)  # any of "onnx", "torchscript", "openvino"
    opset: int = 17  # ONNX opset version

    def __post_init__(self) -> None:
        if not self.formats:
            raise ConfigError(f"export.formats is empty; choose from: {', '.join(EXPORT_FORMATS)}")
        for f in self.formats:
            check_choice("export.formats", f, EXPORT_FORMATS)
        check_range("export.opset", self.opset, 7)


@register_stage("export", ExportStage, needs_model=True, makes_model=False, example={"formats": ["onnx"]})
def run_export(cfg: ExportStage, ctx: StageContext) -> StageResult:
    """Export to ONNX (logits checked against torch in onnxruntime) and/or TorchScript."""
    import torch

    from prunus.deploy.export import export_onnx, export_torchscript
    from prunus.formats import load

    model = load(ctx.input_model)
    x = torch.randn(2, *get_info(model).input_shape, generator=torch.Generator().manual_seed(ctx.seed))
    metrics: dict[str, Any] = {}
    files: dict[str, str] = {}
    if "onnx" in cfg.formats:
        res = export_onnx(model, ctx.out.onnx, x, opset=cfg.opset)
        metrics.update(onnx_bytes=res.bytes, onnx_max_abs_diff=res.max_abs_diff)
        files["onnx"] = ctx.out.relative(ctx.out.onnx)
    if "torchscript" in cfg.formats:
        res = export_torchscript(model, ctx.out.torchscript, x)
        metrics.update(torchscript_bytes=res.bytes, torchscript_max_abs_diff=res.max_abs_diff)
        files["torchscript"] = ctx.out.relative(ctx.out.torchscript)
    if "openvino" in cfg.formats:
        from prunus.deploy.openvino_ir import export_openvino

        res = export_openvino(model, ctx.out.openvino, x)
        metrics.update(openvino_bytes=res.bytes, openvino_max_abs_diff=res.max_abs_diff)
        files["openvino"] = ctx.out.relative(ctx.out.openvino)
        files["openvino_weights"] = ctx.out.relative(ctx.out.openvino_weights)
    return StageResult(metrics=metrics, files=files)


@dataclass(frozen=True)
class BenchStage(StageConfig):
    """Latency (torch and onnxruntime), MACs, params and bytes of an earlier model, benchmarks.md protocol."""

    batch_sizes: tuple[int, ...] = (1, 64)
    runtimes: tuple[str, ...] = ("torch", "onnxruntime")
    warmup: int = 5
    repeats: int = 30
    threads: int | None = None  # intra-op threads for every runtime; None = their defaults

    def __post_init__(self) -> None:
        from prunus.deploy.bench import RUNTIMES

        for r in self.runtimes:
            check_choice("bench.runtimes", r, RUNTIMES)
        for b in self.batch_sizes:
            check_count("bench.batch_sizes", b, 1, "batch")
        check_count("bench.warmup", self.warmup, 0, "repeats")
        check_count("bench.repeats", self.repeats, 1, "repeats")
        check_count("bench.threads", self.threads, 1, "threads", optional=True)


@register_stage(
    "bench",
    BenchStage,
    needs_model=True,
    makes_model=False,
    example={"batch_sizes": [1], "runtimes": ["torch"], "repeats": 1, "warmup": 0},
)
def run_bench(cfg: BenchStage, ctx: StageContext) -> StageResult:
    """Measure latency per runtime and batch (medians), MACs, params and bytes on disk."""
    from prunus.deploy.bench import benchmark_model
    from prunus.formats import load

    model = load(ctx.input_model)
    res = benchmark_model(
        model, get_info(model).input_shape, model_dir=ctx.input_model, batch_sizes=cfg.batch_sizes,
        runtimes=cfg.runtimes, warmup=cfg.warmup, repeats=cfg.repeats, threads=cfg.threads,
    )  # fmt: skip
    ctx.out.write_json(ctx.out.bench, res)
    # not "bytes": after a compress stage the model's size on disk is its .prn, which the chain keeps
    metrics: dict[str, Any] = {"macs": res["macs"], "params": res["params"], "model_dir_bytes": res["bytes"]}
    for row in res["latency"]:
        metrics[f"latency_ms_{row['runtime']}_b{row['batch']}"] = row["median_ms"]
    return StageResult(metrics=metrics, files={"bench": ctx.out.relative(ctx.out.bench)})
