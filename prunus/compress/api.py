"""`compress(model, calib, config) -> CompressReport` and `decompress(path) -> nn.Module`.

compress: DE search to the sparsity targets (scored against the input model as teacher on the
calibration batch), an optional distillation fine-tune of the survivors, per-layer quantization
(fixed bits or greedy under a budget: vs the teacher, or with `quant_drop` quantization's own
share measured against the pruned model), an optional KD fine-tune of the shared codebook values
(`codebook_steps`), then lossless ANS coding into a .prn file. The input model
is not modified; the report's `model` is the compressed copy, equal bit for bit to what
`decompress` rebuilds from the file.

Example:
    >>> import tempfile, torch, prunus
    >>> from prunus.compress import CompressConfig, compress, decompress
    >>> model = prunus.create_model("lenet300_100", in_channels=1, width_mult=0.1).eval()
    >>> x = torch.randn(256, 1, 28, 28)
    >>> cfg = CompressConfig(sparsity=0.8, bits=4, calib_size=128, rescore_size=0, cycles=2, generations=1)
    >>> path = tempfile.mkdtemp() + "/m.prn"
    >>> report = compress(model, x, cfg, out=path)
    >>> round(report.sparsity, 2), report.file_bytes == __import__("os").path.getsize(path)
    (0.8, True)
    >>> torch.equal(decompress(path)(x), report.model(x))
    True
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import inspect
import json
import os
import time
import warnings
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from prunus._io.atomic import write_bytes
from prunus.compress.baselines import deep_compression_bits, generic_bytes
from prunus.compress.bits import allocate_bits, drop_se, fixed_bits, z_score
from prunus.compress.codebooks import finetune_codebooks
from prunus.compress.codec import order0_bits
from prunus.compress.config import CompressConfig
from prunus.compress.escalate import describe, next_setting, rungs, steps
from prunus.compress.kd import kd_losses
from prunus.compress.pack import CodedLayer, apply_quantized, fold_batchnorm, pack, round_dense, unpack
from prunus.compress.presets import PRESETS
from prunus.compress.prn import build_model, encode_prn, parse_prn, read_prn
from prunus.compress.progress import CompressProgress
from prunus.compress.report import CompressReport, LayerReport
from prunus.compress.runner import prunable_layers
from prunus.compress.search import SearchState, kl_per_candidate, magnitude_masks, search
from prunus.errors import BudgetNotMetWarning, ConfigError, first_line, require
from prunus.models.eager import check_eager
from prunus.models.info import get_info, update_info
from prunus.structure.parametrized import plain_copy

__all__ = ["compress", "decompress", "distill", "load"]

# a file's config is stored as its differences from its preset's defaults (and the preset's name)
_DEFAULTS = {name: dataclasses.replace(CompressConfig(), preset=name, **values).to_json()
             for name, values in PRESETS.items()}  # fmt: skip


def _split_calib(calib: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
    if isinstance(calib, torch.Tensor):
        return calib, None
    if isinstance(calib, (tuple, list)) and len(calib) == 2 and isinstance(calib[0], torch.Tensor):
        return calib[0], calib[1]
    raise ConfigError("calib must be a tensor of images or an (images, labels) pair of tensors")


def distill(student: nn.Module, teacher: nn.Module, x: torch.Tensor, masks: dict[str, torch.Tensor], *, steps: int,
            lr: float, temperature: float, seed: int, batch: int = 128,
            progress: CompressProgress | None = None, teacher_logits: torch.Tensor | None = None) -> None:  # fmt: skip
    """Short KD fine-tune of the survivors (Adam, soft targets at `temperature`); pruned weights stay 0."""
    layers = prunable_layers(student)
    opt = torch.optim.Adam(student.parameters(), lr=lr)
    bar = progress or CompressProgress(False)
    bar.start("fine-tune", steps)
    losses = kd_losses(student, teacher, x, steps=steps, temperature=temperature, seed=seed, batch=batch,
                       teacher_logits=teacher_logits)  # fmt: skip
    for step, loss in enumerate(losses, 1):
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            for name, mask in masks.items():
                layers[name].weight.mul_(mask)
        text = f"fine-tune step {step}/{steps}: KD loss {float(loss.detach()):.4f}"
        bar.advance(text)
        if step % max(1, steps // 10) == 0 or step == steps:
            bar.line(text)
    bar.stop()
    student.eval()


def _layer_report(name: str, c: CodedLayer, shape: list[int], nbytes: int, counts: list[int]) -> LayerReport:
    n = int(c.mask.numel())
    return LayerReport(name, shape, n, int(c.mask.sum()), c.quantizer.bits, c.quantizer.kind,
                       int(c.quantizer.codebook.numel()), nbytes, order0_bits(n, counts))  # fmt: skip


def _fp32_bytes(model: nn.Module) -> int:
    from safetensors.torch import save

    return len(save({k: v.detach().float().contiguous() if v.is_floating_point() else v.contiguous()
                     for k, v in model.state_dict().items()}))  # fmt: skip


#: Images per forward pass of the teacher over the calibration set: all 16384 of the convnet preset's
#: fine-tune images in one pass held ~24 GB of MobileNetV2 activations (killed by the OOM killer).
TEACHER_CHUNK = 1024


@torch.no_grad()
def teacher_logits(teacher: nn.Module, x: torch.Tensor, chunk: int = TEACHER_CHUNK) -> torch.Tensor:
    """`teacher(x)` in passes of at most `chunk` images (eval mode: each image's logits do not depend on the others)."""
    return torch.cat([teacher(part) for part in x.split(chunk)])


def _check_one_input_one_output(model: nn.Module, x: torch.Tensor) -> None:
    """ConfigError unless `model(x[:1])` runs on the one tensor and returns one (1, classes) logits tensor.

    DE scores candidates by the KL of one set of logits against the teacher's, on one calibration tensor;
    a model with several inputs or outputs (a detector's heads, an image + metadata net) has neither.
    """
    try:
        params = inspect.signature(model.forward).parameters.values()
    except (TypeError, ValueError):  # a builtin or C++ forward: nothing to read, the call below decides
        params = []
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    needed = [p.name for p in params if p.kind in positional and p.default is inspect.Parameter.empty]
    if len(needed) > 1:
        raise ConfigError(
            f"compress runs models with one input tensor; {type(model).__name__}.forward needs "
            f"{len(needed)} ({', '.join(needed)}). Wrap it in a module that takes one tensor."
        )
    try:
        with torch.no_grad():
            out = model(x[:1])
    except (RuntimeError, ValueError, TypeError, AssertionError) as exc:  # built for another input size or rank
        first = first_line(exc)[:160]
        raise ConfigError(
            f"{type(model).__name__} does not run on calibration samples of shape {tuple(x.shape[1:])}: {first}"
        ) from None
    if not isinstance(out, torch.Tensor) or out.dim() != 2:
        kind = f"a tensor of shape {tuple(out.shape)}" if isinstance(out, torch.Tensor) else type(out).__name__
        raise ConfigError(
            f"compress needs a model that returns one (batch, classes) logits tensor; {type(model).__name__} "
            f"returns {kind}. Wrap it in a module that returns the logits the budget is judged on."
        )


@torch.no_grad()
def _accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    return float((logits.argmax(1) == labels).float().mean())


def compress(
    model: nn.Module,
    calib: Any,
    config: CompressConfig | None = None,
    *,
    out: str | os.PathLike[str] | None = None,
    baselines: bool = True,
    checkpoint: str | os.PathLike[str] | None = None,
    holdout: Any = None,
) -> CompressReport:
    """Sparsify (DE), quantize and entropy-code `model`; write `out` (.prn) when given.

    With `bits="auto"` and `escalate` (the default), a missed budget is retried on the same DE
    result with the stronger settings of `prunus.compress.escalate.LADDER` (distillation fine-tune,
    then codebook fine-tune), filling only the settings left unset, until one meets it or the
    ladder ends; `report.attempts` has one record per rung run, `report.budget` the verdict, the
    rung and, on a miss, the next setting to try.

    Args:
        model: the trained teacher (not modified). A registry model (`prunus.create_model` /
            `prunus.load`) can be written to a file; any model can be compressed and reported.
        calib: calibration images (N, C, H, W) from the TRAINING split, or an (images, labels)
            pair. The first `calib_size` score DE candidates; the first `rescore_size` (>= the
            search batch; the budget batch) re-score the elite and choose the bits under the budget
            (accuracy on the labels, or top-1 agreement with the teacher when there are none); the
            next `verify_size` give the verdict (met or not) and the report's accuracies, on images
            nothing was chosen on (the budget batch shrinks, not below half, when `calib` runs
            short); the next `finetune_size` are what the fine-tunes train on (none there: they
            train on all of `calib`, budget batch included, and `report.budget["held_out"]` is False).
        config: `CompressConfig`.
        out: path of the .prn file to write (the final rung's; missed rungs write nothing).
        baselines: also report one-shot magnitude pruning and generic/Deep-Compression coding.
        holdout: images (or an (images, labels) pair) neither the teacher nor the fine-tunes
            trained on, e.g. the validation split: the elite is re-scored and the bits chosen on
            its first `rescore_size`, and the verdict read on its next `verify_size`, instead of on
            `calib` (whose images the teacher has learned, so that the teacher looks better there
            than on new images), and the fine-tunes train on all of `calib`. `prunus compress`
            passes the validation split when there is one.
        checkpoint: a file for the DE search's per-cycle checkpoint (`prunus.compress.checkpoint`):
            written atomically after every cycle and every missed escalation rung, and when it
            holds this same job, the search resumes after its last cycle (ending exactly as an
            uninterrupted one) and the rungs it records as missed are not run again.

    Returns:
        `CompressReport` (file bytes, ratio, per-layer bits/bytes/bound, accuracy on the budget
        batch, timings, escalation attempts); `report.model` is the compressed model.
    """
    # the fields left at "auto" come from the preset for this model (prunus.compress.presets)
    check_eager(model, "compress")
    cfg = (config or CompressConfig()).resolved(model)
    if out is not None:  # before minutes of search, not after: one line naming the extra
        require("constriction", "compress", "writing a .prn file")
    x, y = _split_calib(calib)
    if x.dim() < 2 or x.shape[0] < 1:
        raise ConfigError(f"calib must hold at least one image, got shape {tuple(x.shape)}")
    info = get_info(model)
    arch = info.arch
    if out is not None and arch is None:
        raise ConfigError("only a model built by prunus.create_model (or prunus.load) can be written to a .prn file")
    teacher = model.eval()
    _check_one_input_one_output(teacher, x)
    # weight_norm / spectral_norm / other parametrizations: the student holds their values as plain weights
    searched = plain_copy(model).eval()
    x_search = x[: cfg.calib_size]
    n_big = max(cfg.rescore_size, x_search.shape[0])
    # one teacher pass over every calibration image serves the search, the budget and both fine-tunes
    t_all = teacher_logits(teacher, x)
    t_search = t_all[: x_search.shape[0]]
    if holdout is not None:  # the budget on images nobody trained on; the fine-tunes on all of calib
        x_h, y_h = _split_calib(holdout)
        n_alloc, n_verify = _budget_split(x_h.shape[0], n_big, cfg.verify_size)
        t_h = teacher_logits(teacher, x_h[: n_alloc + n_verify])
        pool = (x_h, y_h, t_h)  # where the budget batch and the verdict's come from
        held_out, x_tune, t_tune = True, x, t_all
    else:
        # the search's images stay out of the verdict batch: the masks were chosen on them
        n_alloc, n_verify = _budget_split(x.shape[0], n_big, cfg.verify_size, at_least=x_search.shape[0])
        pool = (x, y, t_all)
        # the fine-tunes train on the images after the budget (and verdict) batch: trained on, the budget batch
        # would grade its own homework (a LeNet-300-100 met 1.0 pt there and lost 1.33 pt on the test split)
        first = n_alloc + n_verify
        tune = slice(first, first + cfg.finetune_size)
        held_out = cfg.finetune_size > 0 and x.shape[0] > first
        x_tune, t_tune = (x[tune], t_all[tune]) if held_out else (x, t_all)
    x_big, y_big, t_big = _rows(pool, slice(0, n_alloc))
    # the verdict is read apart from the batch the bits were chosen on: a greedy allocation that fits a
    # batch also fits its noise (a LeNet-300-100 "met" 0.99 pt there at 95% and lost 1.29 pt on test)
    judge = _rows(pool, slice(n_alloc, n_alloc + n_verify)) if n_verify else (x_big, y_big, t_big)
    seconds: dict[str, float] = {}
    start = time.perf_counter()
    big = cfg.rescore_size > 0
    bar = CompressProgress(cfg.progress)
    # the recovery's training images and settings are part of the job a checkpoint belongs to
    recovery = [x_tune, t_tune] if cfg.recovery_steps else []
    ckpt = _Checkpointing(checkpoint, cfg, model, [x_search, x_big[: cfg.elite_rescore_size], t_search,
                                                  t_big[: cfg.elite_rescore_size], *recovery])  # fmt: skip

    def recover(cycle: int, masks: dict[str, torch.Tensor]) -> None:
        # a quiet fine-tune (the search prints one line per recovery); seeded per cycle, so a resumed
        # search trains exactly as the uninterrupted one
        began = time.perf_counter()
        distill(searched, teacher, x_tune, masks, steps=cfg.recovery_steps, lr=cfg.finetune_lr,
                temperature=cfg.temperature, seed=cfg.seed + cycle, teacher_logits=t_tune)  # fmt: skip
        seconds["recovery"] = seconds.get("recovery", 0.0) + time.perf_counter() - began

    elite = slice(0, cfg.elite_rescore_size)  # None: the whole budget batch
    result = search(searched, x_search, t_search, cfg.sparsity, cfg.search_settings(),
                    x_big=x_big[elite] if big else None, teacher_big=t_big[elite] if big else None, progress=bar,
                    resume=ckpt.resume, on_cycle=ckpt.on_cycle if checkpoint is not None else None,
                    recover=recover)  # fmt: skip
    seconds["search"] = time.perf_counter() - start - seconds.get("recovery", 0.0)
    masks = result.masks
    source = "holdout" if holdout is not None else "calib"
    job = _Job(teacher, x, y_big, x_big, t_big, *judge, x_tune, t_tune, held_out, source, masks, info, arch,
               _fp32_bytes(model), bar, seconds, {})  # fmt: skip
    plan = rungs(cfg)
    recorded = {a.get("job"): a for a in (ckpt.resume.attempts if ckpt.resume is not None else [])}
    attempts: list[dict[str, Any]] = []
    for i, (change, rc) in enumerate(plan):
        key = _rung_key(rc)
        last = i == len(plan) - 1
        if not last and key in recorded and not recorded[key]["met"]:  # missed before a restart: not run again
            attempts.append(recorded[key])
            bar.line(f"escalation rung {i} ({describe(change)}): missed before the restart, not run again")
            continue
        if i:
            bar.line(f"budget not met: escalation rung {i}/{len(plan) - 1}: {describe(change)}")
        start = time.perf_counter()
        done = _finish(job, searched, rc)
        attempt = _attempt(i, change, key, rc, done, job.fp32_bytes, time.perf_counter() - start)
        attempts.append(attempt)
        if len(plan) > 1:
            bar.line(_attempt_line(attempt))
        if done.budget is None or done.budget["met"] or last:
            break
        ckpt.save_attempts(attempts)
    budget = done.budget
    if budget is not None:
        budget.update(rung=attempts[-1]["rung"], settings=attempts[-1]["settings"])
        if not budget["met"]:
            budget["next"] = next_setting(rc, [c for _, c in plan[: len(attempts)]])
            _warn_missed(rc, budget, escalated=len(attempts) > 1)
    if out is not None:
        write_bytes(out, done.blob)
    state = done.student.state_dict()
    reports = [_layer_report(e["name"], done.coded[e["name"]], list(state[e["name"]].shape), e["bytes"], e["counts"])
               for e in done.entries]  # fmt: skip
    total = sum(r.params for r in reports)
    x_judge, y_judge, t_judge = judge
    labels = y_judge if y_judge is not None else t_judge.argmax(1)
    report = CompressReport(
        layers=reports,
        file_bytes=len(done.blob),
        parts=parse_prn(done.blob).parts,  # also checks that the bytes read back
        fp32_bytes=job.fp32_bytes,
        sparsity=1 - sum(r.kept for r in reports) / total if total else 0.0,
        kl=done.kl,
        teacher_acc=_accuracy(t_judge, labels),
        acc=_accuracy(done.logits, labels),
        seconds=seconds,
        config=rc.to_json(),
        search_log=result.log,
        budget=budget,
        attempts=attempts,
        path=None if out is None else str(out),
        model=done.student,
    )
    if baselines:
        report.baselines = _baselines(model, done.student, done.coded, masks, done.quantizers, x_judge, labels)
    return report


@dataclass
class _Job:
    """What every rung of one compression shares: the teacher's batches and logits, the DE masks, the timings."""

    teacher: nn.Module
    x: torch.Tensor
    y_big: torch.Tensor | None
    x_big: torch.Tensor
    t_big: torch.Tensor
    x_judge: torch.Tensor  # the verdict's batch: apart from the budget batch (or it, with verify_size=0)
    y_judge: torch.Tensor | None
    t_judge: torch.Tensor
    x_tune: torch.Tensor  # what the fine-tunes train on: held out from the budget batch when `held_out`
    t_tune: torch.Tensor
    held_out: bool
    source: str  # where the budget batch comes from: "holdout" or "calib"
    masks: dict[str, torch.Tensor]
    info: Any
    arch: Any
    fp32_bytes: int
    bar: CompressProgress
    seconds: dict[str, float]  # summed over the rungs run
    distilled: dict[tuple[Any, ...], nn.Module]  # fine-tune settings -> the distilled model (rungs share it)


@dataclass
class _Done:
    """One rung's result: the compressed model, its coding and the file's bytes."""

    student: nn.Module
    coded: dict[str, CodedLayer]
    quantizers: dict[str, Any]
    logits: torch.Tensor  # on the verdict's batch, as `kl` and `budget`
    kl: float
    budget: dict[str, Any] | None
    blob: bytes
    entries: list[dict[str, Any]]


def _budget_split(n: int, n_big: int, verify_size: int, *, at_least: int = 1) -> tuple[int, int]:
    """(budget batch, verdict batch after it) out of `n` images: the budget batch shrinks (not below half, nor
    `at_least`) to leave the verdict `verify_size` images; (min(n_big, n), 0) without a verdict batch."""
    if verify_size == 0 or n < 2:
        return min(n_big, n), 0
    n_alloc = min(n_big, n, max(n - verify_size, (n + 1) // 2, at_least))
    return n_alloc, min(verify_size, n - n_alloc)


def _rows(batch: tuple[torch.Tensor, torch.Tensor | None, torch.Tensor], rows: slice) -> tuple[Any, ...]:
    """(images, labels or None, teacher logits) of `rows`."""
    x, y, t = batch
    return x[rows], None if y is None else y[rows], t[rows]


def _tick(job: _Job, what: str, start: float) -> None:
    job.seconds[what] = job.seconds.get(what, 0.0) + time.perf_counter() - start


def _finish(job: _Job, searched: nn.Module, cfg: CompressConfig) -> _Done:
    """The steps after the search for one rung's settings: fine-tune, bits, codebook fine-tune, coding."""
    masks, bar = job.masks, job.bar
    ft = steps(cfg, "finetune_steps")
    key = (ft, cfg.finetune_lr, cfg.temperature)
    if key not in job.distilled:  # the rungs that share a fine-tune run it once
        pre = copy.deepcopy(searched)
        if ft:
            start = time.perf_counter()
            distill(pre, job.teacher, job.x_tune, masks, steps=ft, lr=cfg.finetune_lr, temperature=cfg.temperature,
                    seed=cfg.seed, progress=bar, teacher_logits=job.t_tune)  # fmt: skip
            _tick(job, "finetune", start)
        job.distilled[key] = pre
    student = copy.deepcopy(job.distilled[key]).eval()
    x_big, t_big, y_big = job.x_big, job.t_big, job.y_big
    start = time.perf_counter()
    s_big = s_judge = None
    if cfg.bits == "auto":  # the pruned (and distilled) model before quantization: the budget check needs it
        with torch.no_grad():
            s_big = student(x_big)
            s_judge = s_big if job.x_judge is x_big else student(job.x_judge)
    greedy = {"kind": cfg.quantizer, "min_bits": cfg.min_bits, "max_bits": cfg.max_bits, "z": z_score(cfg.confidence)}
    greedy["progress"] = bar
    greedy["order"] = cfg.bit_order_for(len(masks))
    if cfg.bits == "auto" and cfg.quant_drop is not None:  # quantization's own share, vs the pruned model
        quantizers = allocate_bits(student, masks, x_big, s_big, y_big, max_kl=None, max_drop=cfg.quant_drop, **greedy)
    elif cfg.bits == "auto":
        quantizers = allocate_bits(student, masks, x_big, t_big, y_big, max_kl=cfg.max_kl, max_drop=cfg.max_drop,
                                   **greedy)  # fmt: skip
    else:
        quantizers = fixed_bits(student, masks, cfg.bits, cfg.quantizer)  # type: ignore[arg-type]
    layers = prunable_layers(student)
    coded = {f"{n}.weight": apply_quantized(layers[n].weight, masks[n], quantizers[n]) for n in masks}
    _tick(job, "quantize", start)
    bits = sorted(q.bits for q in quantizers.values())
    bar.line(f"bits per layer: {bits[0]}-{bits[-1]} (mean {sum(bits) / len(bits):.2f})" if bits else "bits: no layers")
    cb = steps(cfg, "codebook_steps")
    if cb:
        start = time.perf_counter()
        bar.line(f"codebook fine-tune: {cb} steps")
        coded = finetune_codebooks(student, job.teacher, job.x_tune, coded, steps=cb, lr=cfg.codebook_lr,
                                   temperature=cfg.temperature, seed=cfg.seed, teacher_logits=job.t_tune)  # fmt: skip
        _tick(job, "codebook_finetune", start)
    folded = fold_batchnorm(student)  # two values per BN channel in the file, not four
    round_dense(student, coded, folded)
    t_judge, y_judge = job.t_judge, job.y_judge
    with torch.no_grad():
        logits = student(job.x_judge)
    labels = y_judge if y_judge is not None else t_judge.argmax(1)
    kl = _kl(t_judge, logits)
    independent = job.x_judge is not x_big  # the verdict's images: nothing was chosen on them
    budget = None
    if s_judge is not None:
        budget = _check_budget(cfg, t_judge, s_judge, logits, y_judge, independent=independent)
    if budget is not None:
        # the verdict is optimistic when anything trained on the budget batch: a fine-tune or the search's recovery
        budget["held_out"] = job.held_out or not (steps(cfg, "finetune_steps") or cb or cfg.recovery_steps)
        budget["source"] = job.source
    start = time.perf_counter()
    meta = {
        "arch": dict(job.arch or {}),
        "input_shape": list(job.info.input_shape or job.x.shape[1:]),
        "history": list(job.info.history),
        # every byte counts in this file: the config as its preset and the fields that differ from the
        # preset's defaults (those of the prunus_version in the header), metrics to 6 digits; the search
        # log stays in the report.
        # `progress` and `escalate` are how the run was watched and searched, not what it made (the
        # rung's own settings are in the config): a file must not depend on them
        "config": {
            "preset": cfg.preset,
            **{
                k: v
                for k, v in cfg.to_json().items()
                if v != _DEFAULTS[cfg.preset][k] and k not in ("progress", "escalate")
            },
        },
        "metrics": {
            "calib_kl": float(f"{kl:.6g}"),
            "calib_acc": float(f"{_accuracy(logits, labels):.6g}"),
            "teacher_calib_acc": float(f"{_accuracy(t_judge, labels):.6g}"),
        },
    }
    header, tensors, entries = pack(student, coded, meta, folded)
    blob = encode_prn(header, tensors)
    _tick(job, "encode", start)
    return _Done(student, coded, quantizers, logits, kl, budget, blob, entries)


def _rung_key(cfg: CompressConfig) -> str:
    """What identifies a rung's settings in a checkpoint (every field but how it is watched)."""
    settings = {k: v for k, v in cfg.to_json().items() if k != "progress"}
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


def _attempt(i: int, change: dict[str, int], key: str, cfg: CompressConfig, done: _Done, fp32: int,
             seconds: float) -> dict[str, Any]:  # fmt: skip
    """One rung's record: its settings and what they gave (budget numbers, bytes, bits, seconds)."""
    bits = [q.bits for q in done.quantizers.values()]
    b = done.budget or {}
    return {
        "rung": i,
        "settings": describe(change),
        "finetune_steps": steps(cfg, "finetune_steps"),
        "codebook_steps": steps(cfg, "codebook_steps"),
        "met": b.get("met"),
        "drop_pt": b.get("drop_pt"),
        "kl": done.kl,
        "pruned_drop_pt": b.get("pruned_drop_pt"),
        "file_bytes": len(done.blob),
        "ratio": fp32 / len(done.blob),
        "mean_bits": sum(bits) / len(bits) if bits else None,
        "seconds": seconds,
        "job": key,
    }


def _attempt_line(a: dict[str, Any]) -> str:
    verdict = "met" if a["met"] else "NOT MET"
    return (f"escalation rung {a['rung']} ({a['settings']}): {verdict}, drop {a['drop_pt']:+.2f} pt, "
            f"KL {a['kl']:.4g}, {a['file_bytes']:,} bytes ({a['ratio']:.1f}x), {a['seconds']:.1f} s")  # fmt: skip


class _Checkpointing:
    """The search state to resume from (this job's checkpoint at `path`, if any), the per-cycle writer and
    the writer of the escalation's missed rungs (after the search, on its last state)."""

    def __init__(self, path: str | os.PathLike[str] | None, cfg: CompressConfig, model: nn.Module,
                 inputs: list[torch.Tensor]) -> None:  # fmt: skip
        self.path, self.resume, self.last = path, None, None
        if path is None:
            return
        from dataclasses import asdict

        from prunus.compress.checkpoint import fingerprint, load_checkpoint

        self.settings = cfg.search_settings()
        settings = asdict(self.settings)
        if cfg.recovery_steps:  # the recovery trains with these: another lr is another job
            settings.update(finetune_lr=cfg.finetune_lr, temperature=cfg.temperature)
        self.job = fingerprint(settings, cfg.to_json()["sparsity"],
                               [*inputs, *model.state_dict().values()])  # fmt: skip
        shapes = {n: tuple(m.weight.shape) for n, m in prunable_layers(model).items()}
        self.resume = self.last = load_checkpoint(path, self.job, shapes, cycles=self.settings.cycles)

    def on_cycle(self, state: SearchState) -> None:
        from prunus.compress.checkpoint import save_checkpoint

        self.last = state
        save_checkpoint(self.path, state, self.job, cycles=self.settings.cycles)

    def save_attempts(self, attempts: list[dict[str, Any]]) -> None:
        if self.path is None or self.last is None:
            return
        from prunus.compress.checkpoint import save_checkpoint

        state = dataclasses.replace(self.last, attempts=list(attempts))
        save_checkpoint(self.path, state, self.job, cycles=self.settings.cycles, point="compress-rung")


def _kl(ref: torch.Tensor, logits: torch.Tensor) -> float:
    """Mean KL(ref || logits) over the batch: the search's measure, for one candidate."""
    return float(kl_per_candidate(F.log_softmax(ref.float(), -1), logits)[0])


def _check_budget(cfg: CompressConfig, t_big: torch.Tensor, s_big: torch.Tensor, logits: torch.Tensor,
                  y_big: torch.Tensor | None, *, independent: bool = False) -> dict[str, Any]:  # fmt: skip
    """Whether the compressed model meets the auto-bits budget on the verdict's batch (`_warn_missed` says a miss).

    `independent`: nothing was chosen on these images (the verdict batch of `verify_size`). There the
    measured drop is an unbiased estimate on new images and decides `met`; its upper bound at
    `confidence` is reported beside it (`met_at_confidence`). On the batch the bits were chosen on,
    which flatters them, only the upper bound can say met. Why not the bound on independent images
    too: the allocation already spends its own z standard errors; a second margin of the same size
    (about 0.5 pt on 2048 images) left a 1-point budget no room at all (every rung missed on a
    LeNet-300-100 whose test drop was 0.75 pt).

    Measured as `allocate_bits` measures it (accuracy on the labels, or agreement with the
    reference's top-1 without labels). The greedy allocation only lowers bits while the budget
    holds, so a miss usually means it is missed at `max_bits` already (the pruning costs too
    much); the fp16 rounding and the codebook fine-tune that follow the allocation can also move it.
    """
    # `quant_drop` steers the bit allocation (quantization's share, vs the pruned model); the verdict is the
    # user's budget against the input model whenever there is one (max_drop defaults to 1 pt): a run "met"
    # on quantization's share alone could lose more than the budget it was asked to keep
    quant_only = cfg.quant_drop is not None and cfg.max_drop is None and cfg.max_kl is None
    ref = s_big if quant_only else t_big  # what the budget is measured against
    labels = y_big if y_big is not None else ref.argmax(1)
    drop = 100 * (_accuracy(ref, labels) - _accuracy(logits, labels))
    # the sampling error of that drop: per image, reference right minus compressed right (paired)
    se = drop_se(ref.argmax(1) == labels, logits.argmax(1) == labels) if labels.numel() > 1 else float("nan")
    # the budget holds at `confidence`: the drop's one-sided upper bound fits, not the measured drop alone
    upper = drop + z_score(cfg.confidence) * (se if se == se else 0.0)
    kl = _kl(ref, logits)
    max_drop = cfg.quant_drop if quant_only else cfg.max_drop
    max_kl = None if quant_only else cfg.max_kl
    kl_ok = max_kl is None or kl <= max_kl
    at_confidence = (max_drop is None or upper <= max_drop + 1e-9) and kl_ok
    measured = (max_drop is None or drop <= max_drop + 1e-9) and kl_ok
    met = measured if independent else at_confidence
    pruned_labels = y_big if y_big is not None else t_big.argmax(1)
    pruned_drop = 100 * (_accuracy(t_big, pruned_labels) - _accuracy(s_big, pruned_labels))
    # quantization's own share on these images (vs the pruned model), what quant_drop aimed the bits at
    quant_share = 100 * (_accuracy(s_big, labels) - _accuracy(logits, labels)) if cfg.quant_drop is not None else None
    return {
        "quant_drop": cfg.quant_drop,
        "quant_drop_pt": quant_share,
        "against": "pruned" if quant_only else "input",
        **{"max_drop": max_drop, "max_kl": max_kl, "drop_pt": drop, "drop_se_pt": se, "kl": kl},
        **{"confidence": cfg.confidence, "drop_upper_pt": upper},
        "pruned_drop_pt": pruned_drop,
        **{"images": int(labels.shape[0]), "independent": independent, "met": met, "met_at_confidence": at_confidence},
    }


def _warn_missed(cfg: CompressConfig, budget: dict[str, Any], *, escalated: bool) -> None:
    """The one warning of a final miss: the numbers, the rung it ended on and `budget["next"]`, the next setting."""
    limits = " and ".join(f"{k} {budget[k]:g}" for k in ("max_drop", "max_kl") if budget[k] is not None)
    after = f" after escalating to rung {budget['rung']} ({budget['settings']})" if escalated else ""
    warnings.warn(
        f"compression budget not met{after}: the compressed model loses {budget['drop_pt']:.2f} pt (at most "
        f"{budget['drop_upper_pt']:.2f} pt at {budget['confidence']:.0%} confidence; KL {budget['kl']:.4g}) against "
        f"the {budget['against']} model on the {budget['images']}-image budget "
        f"batch, over {limits}, with every layer allowed {cfg.max_bits} bits; pruning alone loses "
        f"{budget['pruned_drop_pt']:.2f} pt against the input model. Next to try: {budget['next']}.",
        BudgetNotMetWarning,
        stacklevel=3,
    )


def _baselines(teacher: nn.Module, student: nn.Module, coded: dict[str, CodedLayer], masks: dict[str, torch.Tensor],
               quantizers: dict[str, Any], x: torch.Tensor, labels: torch.Tensor) -> dict[str, Any]:  # fmt: skip
    """One-shot magnitude pruning at DE's per-layer sparsity and bits; generic and Deep-Compression coding."""
    mag = copy.deepcopy(teacher).eval()
    targets = {n: 1 - float(m.float().mean()) for n, m in masks.items()}
    mag_masks = magnitude_masks(mag, targets)
    layers = prunable_layers(mag)
    with torch.no_grad():
        for n, m in mag_masks.items():
            layers[n].weight.mul_(m)
        acc_pruned = _accuracy(mag(x), labels)
        bits = {n: q.bits for n, q in quantizers.items()}
        for n, q in fixed_bits(mag, mag_masks, bits, "kmeans").items():
            apply_quantized(layers[n].weight, mag_masks[n], q)
        acc_quant = _accuracy(mag(x), labels)
    return {
        "magnitude_acc_pruned": acc_pruned,
        "magnitude_acc_quantized": acc_quant,
        "dense": generic_bytes(teacher),
        "compressed_tensors": generic_bytes(student),
        "deep_compression_stream_bytes": deep_compression_bits(student, coded) / 8,
    }


def decompress(path: str | os.PathLike[str], *, trust_factory: bool = False) -> nn.Module:
    """Rebuild the model stored in a .prn file: a normal nn.Module in eval mode (exports to ONNX).

    Raises `CorruptFileError` for a corrupt, truncated, foreign or hostile file.

    Example:
        >>> decompress("model.prn")  # doctest: +SKIP
    """
    prn = read_prn(path)
    model = build_model(prn, trust_factory=trust_factory)
    masks = unpack(prn, model)
    h = prn.header
    update_info(model, arch=h["arch"], input_shape=tuple(h["input_shape"]), history=tuple(h["history"]),
                metrics=h.get("metrics") or {})  # fmt: skip
    model.prunus_masks = masks  # which weights are pruned (a codebook level may itself be 0)
    return model.eval()


def load(path: str | os.PathLike[str], *, trust_factory: bool = False, map_location: str = "cpu") -> nn.Module:
    """`prunus.load`: a model directory (`prunus.formats.load`) or a compressed `.prn` file (`decompress`).

    Example:
        >>> model = load("model.prn")  # doctest: +SKIP
    """
    if str(path).endswith(".prn") and not os.path.isdir(path):
        return decompress(path, trust_factory=trust_factory)
    from prunus.formats import load as load_dir

    return load_dir(path, trust_factory=trust_factory, map_location=map_location)
