"""The compress stage: DE sparsification + per-layer quantization + entropy coding into a .prn file.

The chain's "bytes on disk" after this stage is the .prn file's size. The decoded model (what
`prunus.decompress` rebuilds from the file, bit for bit) is saved as a normal model directory so
export and bench read it like any other stage's model; it is dense with zeros, so its latency and
MACs are those of the input model (unstructured sparsity is a size win, not a speed win).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prunus.compress import CompressConfig, CompressReport
from prunus.data import DataBundle, DataConfig
from prunus.pipeline._stage_metrics import measure, split_accuracy
from prunus.pipeline.stages import StageConfig, StageContext, StageResult, register_stage

__all__ = ["CompressStage", "compress_model"]

# the report numbers a stage record keeps (the per-layer rows go in as "layers")
SUMMARY_KEYS = ("ratio", "sparsity", "kl", "teacher_acc", "file_bytes", "stream_bytes", "bound_bits",
                "stream_over_bound", "file_over_bound", "file_over_floor")  # fmt: skip


@dataclass(frozen=True)
class CompressStage(StageConfig):
    """Compress an earlier model into model.prn (DE sparsity, quantization, ANS coding).

    `compress` holds every `prunus.compress.CompressConfig` setting. Its `seed` is offset by the
    chain's seed, so the seeds of a sweep give different searches. The calibration images are
    max(calib_size, rescore_size) unaugmented images from the TRAINING split (never the test set).
    """

    compress: CompressConfig = field(default_factory=CompressConfig)
    data: DataConfig = field(default_factory=DataConfig)  # calibration images and test accuracy


def has_validation(data: DataBundle) -> bool:
    """Whether `compress_model` measures the budget on `data`'s validation split (it has images)."""
    return data.val is not None and len(data.val.data) > 0


def compress_model(
    cfg: CompressStage, model: Any, prn: Path, *, seed: int, progress: bool, checkpoint: Path | None = None
) -> tuple[CompressReport, DataBundle]:
    """Compress `model` into the file `prn` as `cfg` says: the one implementation (stage and `prunus compress`).

    The budget batch (max(calib_size, rescore_size)) and the verdict's batch after it (verify_size)
    are unaugmented VALIDATION images drawn with `seed` (the teacher never trained on them when it
    was trained with the same data settings: the split's seed is `split_seed`; a split too small
    for both shrinks the budget batch, see `compress`); the search and the fine-tunes use
    max(calib_size, finetune_size) TRAINING images. Without a validation split, both batches are
    the first budget batch + verify_size + finetune_size training images and the fine-tunes train
    on the rest. The search's seed is `cfg.compress.seed + seed` (a sweep's seeds give different searches).
    With `checkpoint`, the DE search is checkpointed there after every cycle and resumed from it
    (`prunus.compress.compress(checkpoint=)`). Returns the report and the data bundle (its test
    split scores the result).
    """
    from prunus.compress import compress
    from prunus.data import build_loaders, training_slice

    # the preset fills the fields left at "auto" before the image counts below are read from them
    settings = dataclasses.replace(cfg.compress, seed=cfg.compress.seed + seed, progress=progress).resolved(model)
    data = build_loaders(dataclasses.replace(cfg.data, augment=False), seed=seed)
    budget_batch = max(settings.calib_size, settings.rescore_size) + settings.verify_size
    if has_validation(data):  # the budget on images the teacher never trained on
        holdout = training_slice(data.val, budget_batch, seed=seed)
        calib = training_slice(data, max(settings.calib_size, settings.finetune_size), seed=seed)
    else:
        holdout, calib = None, training_slice(data, budget_batch + settings.finetune_size, seed=seed)
    return compress(model, calib, settings, out=prn, checkpoint=checkpoint, holdout=holdout), data


@register_stage(
    "compress",
    CompressStage,
    needs_model=True,
    makes_model=True,
    example={"compress": {"sparsity": 0.5, "bits": 4, "calib_size": 16, "rescore_size": 16, "cycles": 1,
                          "generations": 1, "population": 2, "elite": 1, "finetune_steps": 0}},
)  # fmt: skip
def run_compress(cfg: CompressStage, ctx: StageContext) -> StageResult:
    """DE-compress an earlier model into model.prn; the decoded model goes on to export and bench.

    The search is checkpointed after every cycle in the stage directory (`RunDir.compress_checkpoint`),
    so a rerun after a kill resumes mid-search and writes the same file an uninterrupted run would;
    the budget escalation's missed rungs are recorded there too and not run again by the rerun.
    """
    from prunus.compress import decompress
    from prunus.formats import load, save
    from prunus.models.info import get_info

    model = load(ctx.input_model)
    report, _ = compress_model(
        cfg, model, ctx.out.prn, seed=ctx.seed, progress=ctx.progress, checkpoint=ctx.out.compress_checkpoint
    )
    decoded = decompress(ctx.out.prn)
    out = save(decoded, ctx.out.model, input_shape=tuple(get_info(model).input_shape),
               extra={"compressed_from": str(ctx.input_model)})  # fmt: skip
    acc = split_accuracy(decoded, cfg.data, ctx.seed)
    summary = report.to_json()
    metrics: dict[str, Any] = {k: summary[k] for k in SUMMARY_KEYS if k in summary}
    metrics["compress_seconds"] = summary["seconds"]  # search / finetune / quantize / encode
    metrics["layers"] = [
        {"name": x["name"], "bits": 8 * x["bytes"], "bound": x["bound_bits"], "quant_bits": x["bits"],
         "sparsity": x["sparsity"]}
        for x in summary["layers"]
    ]  # fmt: skip
    if report.budget is not None:  # auto bits: the verdict, the escalation rung it ended on, and every rung run
        metrics["budget_met"] = report.budget["met"]
        metrics["attempts"] = [{k: v for k, v in a.items() if k != "job"} for a in report.attempts]
    metrics.update(measure(decoded, ctx.out.prn, accuracy=acc))  # "bytes": the .prn file, every byte of it
    ctx.out.compress_checkpoint.unlink(missing_ok=True)  # the stage is done: its record is what a rerun reads
    return StageResult(metrics=metrics, model=out, files={"prn": ctx.out.relative(ctx.out.prn)})
