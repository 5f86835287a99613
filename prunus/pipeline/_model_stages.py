"""Stages that transform or ship an earlier model without training: prune, export, bench."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from prunus.config import check_choice, check_range
from prunus.data import DataConfig
from prunus.errors import ConfigError
from prunus.model_info import get_info
from prunus.pipeline._measure import measure, split_accuracy
from prunus.pipeline.stages import StageConfig, StageContext, StageResult, register_stage

__all__ = ["BenchStage", "ExportStage", "PruneStage"]


@dataclass(frozen=True)
class PruneStage(StageConfig):
    """One-shot structured pruning of an earlier model to a channel ratio or a MACs budget."""

    ratio: float | None = None  # fraction of channels REMOVED from every prunable group, in [0, 1)
    macs_ratio: float | None = None  # fraction of the dense MACs KEPT, in (0, 1]
    params_ratio: float | None = None  # fraction of the dense parameters KEPT, in (0, 1]
    latency_ratio: float | None = None  # fraction of the dense latency KEPT on `runtime`, in (0, 1]
    runtime: str = "onnxruntime"  # latency budgets: the runtime the latency is measured on
    latency_batch: int = 64  # latency budgets: the batch size the latency is measured at
    round_to: int = 1  # keep channel counts multiples of this (hardware-friendly widths)
    criterion: str = "l1"  # a name from prunus.criteria.list_criteria()
    global_pruning: bool = False  # rank channels across groups instead of a uniform rate
    ignore: tuple[str, ...] = ()  # modules whose outputs are kept (default: the model's stem and classifier)
    data: DataConfig = field(default_factory=DataConfig)  # test accuracy after pruning; data-driven criteria

    def __post_init__(self) -> None:
        from prunus.criteria import list_criteria

        targets = [t for t in ("ratio", "macs_ratio", "params_ratio", "latency_ratio") if getattr(self, t) is not None]
        if len(targets) != 1:
            raise ConfigError(
                "prune needs exactly one of ratio (channels removed), macs_ratio, params_ratio or latency_ratio "
                f"(fraction kept); got {', '.join(targets) or 'none'}"
            )
        for t in ("params_ratio", "latency_ratio"):
            if getattr(self, t) is not None:
                check_range(f"prune.{t}", getattr(self, t), 0.0, 1.0, low_inclusive=False)
        check_range("prune.round_to", self.round_to, 1)
        check_range("prune.latency_batch", self.latency_batch, 1)
        if self.ratio is not None:
            check_range("prune.ratio", self.ratio, 0.0, 1.0, high_inclusive=False)
        if self.macs_ratio is not None:
            check_range("prune.macs_ratio", self.macs_ratio, 0.0, 1.0, low_inclusive=False)
        check_choice("prune.criterion", self.criterion, list_criteria())


@register_stage("prune", PruneStage, needs_model=True, makes_model=True)
def run_prune(cfg: PruneStage, ctx: StageContext) -> StageResult:
    """Prune once (no training): score coupled groups, cut to the ratio or MACs budget, save."""
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
    model, report = prune(
        model,
        torch.randn(1, *shape),
        ratio=cfg.ratio,
        macs_ratio=cfg.macs_ratio,
        params_ratio=cfg.params_ratio,
        latency_ratio=cfg.latency_ratio,
        runtime=cfg.runtime,
        latency_batch=cfg.latency_batch,
        round_to=cfg.round_to,
        criterion=cfg.criterion,
        ignored_layers=list(cfg.ignore) or None,
        global_pruning=cfg.global_pruning,
        batch=batch,
    )
    acc = split_accuracy(model, cfg.data, ctx.seed)
    out = save(model.cpu(), ctx.dir / "model", input_shape=shape, metrics={"final_test_acc": acc},
               extra={"prune_report": report.to_dict(), "source": str(ctx.input_model)})  # fmt: skip
    metrics: dict[str, Any] = {
        "requested_ratio": report.requested_ratio,
        "requested_macs_ratio": report.requested_macs_ratio,
        "achieved_ratio": report.achieved_ratio,
        "achieved_macs_ratio": report.achieved_macs_ratio,
        "widths": report.widths,
    }
    metrics.update(measure(model, out, accuracy=acc))
    return StageResult(metrics=metrics, model=out)


EXPORT_FORMATS = ("onnx", "torchscript")


@dataclass(frozen=True)
class ExportStage(StageConfig):
    """Export an earlier model to ONNX (checked in onnxruntime) and/or TorchScript."""

    formats: tuple[str, ...] = ("onnx",)  # any of "onnx", "torchscript"
    opset: int = 17  # ONNX opset version

    def __post_init__(self) -> None:
        if not self.formats:
            raise ConfigError(f"export.formats is empty; choose from: {', '.join(EXPORT_FORMATS)}")
        for f in self.formats:
            check_choice("export.formats", f, EXPORT_FORMATS)
        check_range("export.opset", self.opset, 7)


@register_stage("export", ExportStage, needs_model=True, makes_model=False)
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
        res = export_onnx(model, ctx.dir / "model.onnx", x, opset=cfg.opset)
        metrics.update(onnx_bytes=res.bytes, onnx_max_abs_diff=res.max_abs_diff)
        files["onnx"] = "model.onnx"
    if "torchscript" in cfg.formats:
        res = export_torchscript(model, ctx.dir / "model.pt", x)
        metrics.update(torchscript_bytes=res.bytes, torchscript_max_abs_diff=res.max_abs_diff)
        files["torchscript"] = "model.pt"
    return StageResult(metrics=metrics, files=files)


@dataclass(frozen=True)
class BenchStage(StageConfig):
    """Latency (torch and onnxruntime), MACs, params and bytes of an earlier model, benchmarks.md protocol."""

    batch_sizes: tuple[int, ...] = (1, 64)
    runtimes: tuple[str, ...] = ("torch", "onnxruntime")
    warmup: int = 5
    repeats: int = 30
    threads: int | None = None  # intra-op threads for both runtimes; None = their defaults

    def __post_init__(self) -> None:
        from prunus.deploy.bench import RUNTIMES

        for r in self.runtimes:
            check_choice("bench.runtimes", r, RUNTIMES)
        for b in self.batch_sizes:
            check_range("bench.batch_sizes", b, 1)
        check_range("bench.warmup", self.warmup, 0)
        check_range("bench.repeats", self.repeats, 1)


@register_stage("bench", BenchStage, needs_model=True, makes_model=False)
def run_bench(cfg: BenchStage, ctx: StageContext) -> StageResult:
    """Measure latency per runtime and batch (medians), MACs, params and bytes on disk."""
    from prunus._atomic import write_json
    from prunus.deploy.bench import benchmark_model
    from prunus.formats import load

    model = load(ctx.input_model)
    res = benchmark_model(
        model, get_info(model).input_shape, model_dir=ctx.input_model, batch_sizes=cfg.batch_sizes,
        runtimes=cfg.runtimes, warmup=cfg.warmup, repeats=cfg.repeats, threads=cfg.threads,
    )  # fmt: skip
    write_json(ctx.dir / "bench.json", res)
    # not "bytes": after a compress stage the model's size on disk is its .prn, which the chain keeps
    metrics: dict[str, Any] = {"macs": res["macs"], "params": res["params"], "model_dir_bytes": res["bytes"]}
    for row in res["latency"]:
        metrics[f"latency_ms_{row['runtime']}_b{row['batch']}"] = row["median_ms"]
    return StageResult(metrics=metrics, files={"bench": "bench.json"})
