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
import os
import time
import warnings
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from prunus._io.atomic import write_bytes
from prunus.compress.baselines import deep_compression_bits, generic_bytes
from prunus.compress.bits import allocate_bits, fixed_bits
from prunus.compress.codebooks import finetune_codebooks
from prunus.compress.codec import order0_bits
from prunus.compress.config import CompressConfig
from prunus.compress.kd import kd_losses
from prunus.compress.pack import CodedLayer, apply_quantized, pack, round_dense, unpack
from prunus.compress.prn import build_model, encode_prn, parse_prn, read_prn
from prunus.compress.progress import CompressProgress
from prunus.compress.report import CompressReport, LayerReport
from prunus.compress.runner import prunable_layers
from prunus.compress.search import SearchState, kl_per_candidate, magnitude_masks, search
from prunus.errors import BudgetNotMetWarning, ConfigError, require
from prunus.models.info import get_info, update_info

__all__ = ["compress", "decompress", "distill", "load"]

_DEFAULTS = CompressConfig().to_json()


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
) -> CompressReport:
    """Sparsify (DE), quantize and entropy-code `model`; write `out` (.prn) when given.

    Args:
        model: the trained teacher (not modified). A registry model (`prunus.create_model` /
            `prunus.load`) can be written to a file; any model can be compressed and reported.
        calib: calibration images (N, C, H, W) from the TRAINING split, or an (images, labels)
            pair. The first `calib_size` score DE candidates; the first `rescore_size` (>= the
            search batch) re-score the elite and measure the bit budget (accuracy on the labels,
            or top-1 agreement with the teacher when there are none).
        config: `CompressConfig`.
        out: path of the .prn file to write.
        baselines: also report one-shot magnitude pruning and generic/Deep-Compression coding.
        checkpoint: a file for the DE search's per-cycle checkpoint (`prunus.compress.checkpoint`):
            written atomically after every cycle, and when it holds this same job's search, the
            search resumes after its last cycle and ends exactly as an uninterrupted one.

    Returns:
        `CompressReport` (file bytes, ratio, per-layer bits/bytes/bound, accuracy on the budget
        batch, timings); `report.model` is the compressed model.
    """
    cfg = config or CompressConfig()
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
    student = copy.deepcopy(model).eval()
    x_search = x[: cfg.calib_size]
    x_big = x[: max(cfg.rescore_size, x_search.shape[0])]
    y_big = y[: x_big.shape[0]] if y is not None else None
    # one teacher pass over every calibration image serves the search, the budget and both fine-tunes
    with torch.no_grad():
        t_all = teacher(x)
    t_search, t_big = t_all[: x_search.shape[0]], t_all[: x_big.shape[0]]
    seconds: dict[str, float] = {}
    start = time.perf_counter()
    big = cfg.rescore_size > 0
    bar = CompressProgress(cfg.progress)
    resume, on_cycle = _checkpointing(checkpoint, cfg, model, [x_search, x_big, t_search, t_big])
    result = search(student, x_search, t_search, cfg.sparsity, cfg.search_settings(), x_big=x_big if big else None,
                    teacher_big=t_big if big else None, progress=bar, resume=resume, on_cycle=on_cycle)  # fmt: skip
    seconds["search"] = time.perf_counter() - start
    masks = result.masks
    if cfg.finetune_steps:
        start = time.perf_counter()
        distill(student, teacher, x, masks, steps=cfg.finetune_steps, lr=cfg.finetune_lr,
                temperature=cfg.temperature, seed=cfg.seed, progress=bar, teacher_logits=t_all)  # fmt: skip
        seconds["finetune"] = time.perf_counter() - start
    start = time.perf_counter()
    s_big = None
    if cfg.bits == "auto":  # the pruned (and distilled) model before quantization: the budget check needs it
        with torch.no_grad():
            s_big = student(x_big)
    if cfg.bits == "auto" and cfg.quant_drop is not None:  # quantization's own share, vs the pruned model
        quantizers = allocate_bits(student, masks, x_big, s_big, y_big, max_kl=None, max_drop=cfg.quant_drop,
                                   kind=cfg.quantizer, min_bits=cfg.min_bits, max_bits=cfg.max_bits)  # fmt: skip
    elif cfg.bits == "auto":
        quantizers = allocate_bits(student, masks, x_big, t_big, y_big, max_kl=cfg.max_kl, max_drop=cfg.max_drop,
                                   kind=cfg.quantizer, min_bits=cfg.min_bits, max_bits=cfg.max_bits)  # fmt: skip
    else:
        quantizers = fixed_bits(student, masks, cfg.bits, cfg.quantizer)  # type: ignore[arg-type]
    layers = prunable_layers(student)
    coded = {f"{n}.weight": apply_quantized(layers[n].weight, masks[n], quantizers[n]) for n in masks}
    seconds["quantize"] = time.perf_counter() - start
    bits = sorted(q.bits for q in quantizers.values())
    bar.line(f"bits per layer: {bits[0]}-{bits[-1]} (mean {sum(bits) / len(bits):.2f})" if bits else "bits: no layers")
    if cfg.codebook_steps:
        start = time.perf_counter()
        bar.line(f"codebook fine-tune: {cfg.codebook_steps} steps")
        coded = finetune_codebooks(student, teacher, x, coded, steps=cfg.codebook_steps, lr=cfg.codebook_lr,
                                   temperature=cfg.temperature, seed=cfg.seed, teacher_logits=t_all)  # fmt: skip
        seconds["codebook_finetune"] = time.perf_counter() - start
    round_dense(student, coded)
    with torch.no_grad():
        logits = student(x_big)
    labels = y_big if y_big is not None else t_big.argmax(1)
    kl = _kl(t_big, logits)
    budget = _check_budget(cfg, t_big, s_big, logits, y_big) if s_big is not None else None
    start = time.perf_counter()
    meta = {
        "arch": dict(arch or {}),
        "input_shape": list(info.input_shape or x.shape[1:]),
        "history": list(info.history),
        # every byte counts in this file: the config as its non-default fields (the defaults are
        # those of the prunus_version in the header), metrics to 6 digits; the search log stays in the report.
        # `progress` is how the run was watched, not what it made: a file must not depend on it
        "config": {k: v for k, v in cfg.to_json().items() if v != _DEFAULTS[k] and k != "progress"},
        "metrics": {
            "calib_kl": float(f"{kl:.6g}"),
            "calib_acc": float(f"{_accuracy(logits, labels):.6g}"),
            "teacher_calib_acc": float(f"{_accuracy(t_big, labels):.6g}"),
        },
    }
    header, tensors, entries = pack(student, coded, meta)
    blob = encode_prn(header, tensors)
    if out is not None:
        write_bytes(out, blob)
    seconds["encode"] = time.perf_counter() - start
    state = student.state_dict()
    reports = [_layer_report(e["name"], coded[e["name"]], list(state[e["name"]].shape), e["bytes"], e["counts"])
               for e in entries]  # fmt: skip
    total = sum(r.params for r in reports)
    report = CompressReport(
        layers=reports,
        file_bytes=len(blob),
        parts=parse_prn(blob).parts,  # also checks that the bytes read back
        fp32_bytes=_fp32_bytes(model),
        sparsity=1 - sum(r.kept for r in reports) / total if total else 0.0,
        kl=kl,
        teacher_acc=_accuracy(t_big, labels),
        acc=_accuracy(logits, labels),
        seconds=seconds,
        config=cfg.to_json(),
        search_log=result.log,
        budget=budget,
        path=None if out is None else str(out),
        model=student,
    )
    if baselines:
        report.baselines = _baselines(model, student, coded, masks, quantizers, x_big, labels)
    return report


def _checkpointing(path: str | os.PathLike[str] | None, cfg: CompressConfig, model: nn.Module,
                   inputs: list[torch.Tensor]) -> tuple[SearchState | None, Any]:  # fmt: skip
    """The search state to resume from (this job's checkpoint at `path`, if any) and the per-cycle writer."""
    if path is None:
        return None, None
    from dataclasses import asdict

    from prunus.compress.checkpoint import fingerprint, load_checkpoint, save_checkpoint

    settings = cfg.search_settings()
    job = fingerprint(asdict(settings), cfg.to_json()["sparsity"], [*inputs, *model.state_dict().values()])
    shapes = {n: tuple(m.weight.shape) for n, m in prunable_layers(model).items()}
    resume = load_checkpoint(path, job, shapes, cycles=settings.cycles)
    return resume, lambda state: save_checkpoint(path, state, job, cycles=settings.cycles)


def _kl(ref: torch.Tensor, logits: torch.Tensor) -> float:
    """Mean KL(ref || logits) over the batch: the search's measure, for one candidate."""
    return float(kl_per_candidate(F.log_softmax(ref.float(), -1), logits)[0])


def _check_budget(cfg: CompressConfig, t_big: torch.Tensor, s_big: torch.Tensor, logits: torch.Tensor,
                  y_big: torch.Tensor | None) -> dict[str, Any]:  # fmt: skip
    """Whether the compressed model meets the auto-bits budget on the budget batch; warns when it does not.

    Measured as `allocate_bits` measures it (accuracy on the labels, or agreement with the
    reference's top-1 without labels). The greedy allocation only lowers bits while the budget
    holds, so a miss usually means it is missed at `max_bits` already (the pruning costs too
    much); the fp16 rounding and the codebook fine-tune that follow the allocation can also move it.
    """
    quant_only = cfg.quant_drop is not None
    ref = s_big if quant_only else t_big  # what the budget is measured against
    labels = y_big if y_big is not None else ref.argmax(1)
    drop = 100 * (_accuracy(ref, labels) - _accuracy(logits, labels))
    kl = _kl(ref, logits)
    max_drop = cfg.quant_drop if quant_only else cfg.max_drop
    max_kl = None if quant_only else cfg.max_kl
    met = (max_drop is None or drop <= max_drop + 1e-9) and (max_kl is None or kl <= max_kl)
    pruned_labels = y_big if y_big is not None else t_big.argmax(1)
    pruned_drop = 100 * (_accuracy(t_big, pruned_labels) - _accuracy(s_big, pruned_labels))
    budget = {
        "against": "pruned" if quant_only else "input",
        **{"max_drop": max_drop, "max_kl": max_kl, "drop_pt": drop, "kl": kl, "pruned_drop_pt": pruned_drop},
        **{"images": int(labels.shape[0]), "met": met},
    }
    if not met:
        limits = " and ".join(f"{k} {v:g}" for k, v in (("max_drop", max_drop), ("max_kl", max_kl)) if v is not None)
        warnings.warn(
            f"compression budget not met: the compressed model loses {drop:.2f} pt (KL {kl:.4g}) against the "
            f"{budget['against']} model on the {budget['images']}-image budget batch, over {limits}, with every "
            f"layer allowed {cfg.max_bits} bits; pruning alone loses {pruned_drop:.2f} pt against the input model. "
            "Lower the sparsity, or add a distillation fine-tune (finetune_steps, e.g. 300).",
            BudgetNotMetWarning,
            stacklevel=3,
        )
    return budget


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
