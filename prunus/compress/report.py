"""What a compression produced: per layer shape, sparsity, bits, bytes, the order-0 bound and the gap.

The order-0 bound of a layer with n weights, k survivors (p = k / n) and codebook-index
distribution q is `n * H_b(p) + k * H(q)` bits (mask + values); the coder's gap is its stream
bits over that bound. Every byte of the file is accounted for in `parts`: the ANS `streams`, the
coding `tables`, the tensors stored verbatim (`codebooks`, `dense` biases/BatchNorm, `ints`), the
JSON `header` and the safetensors `framing`. Two ratios are reported: `file_over_bound` (the whole
file over the weights' order-0 bound, the strict one) and `file_over_floor`, over the bound plus
the verbatim tensors (what any file holding those fp16 tensors and order-0-coded weights needs).

Example:
    >>> r = LayerReport("fc.weight", [2, 4], 8, 2, 4, "kmeans", 3, 4, 10.0)
    >>> r.sparsity, r.gap
    (0.75, 3.2)
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from prunus.errors import FormatError, PrunusError

__all__ = ["LAYER_COLUMNS", "VERBATIM", "CompressReport", "LayerReport", "bound_summary", "describe_prn", "layer_rows"]


@dataclass(frozen=True)
class LayerReport:
    """One coded weight tensor."""

    name: str
    shape: list[int]
    params: int
    kept: int
    bits: int
    kind: str
    levels: int
    bytes: int  # ANS stream bytes
    bound_bits: float  # order-0 bound n*H_b(p) + k*H(q)

    @property
    def sparsity(self) -> float:
        return 1.0 - self.kept / self.params if self.params else 0.0

    @property
    def gap(self) -> float:
        """Stream bits over the order-0 bound (1.0 = at the bound)."""
        return 8 * self.bytes / self.bound_bits if self.bound_bits else float("inf") if self.bytes else 1.0


@dataclass
class CompressReport:
    """Result of `prunus.compress`; `model` is the compressed model (what `decompress` returns)."""

    layers: list[LayerReport]
    file_bytes: int  # the .prn file's size (as written, or as it would be written)
    fp32_bytes: int  # model.safetensors of the dense fp32 model (what `prunus.save` writes)
    sparsity: float  # over all coded weights
    kl: float  # KL(teacher || compressed) on the budget batch
    teacher_acc: float | None  # on the budget batch (labels, or agreement when there are none)
    acc: float | None
    seconds: dict[str, float] = field(default_factory=dict)
    baselines: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    search_log: list[dict[str, Any]] = field(default_factory=list)  # per cycle and layer: removed, sparsity, KL
    # auto bits: the budget, the compressed model's drop / KL against it on the budget batch, and `met`
    budget: dict[str, Any] | None = None
    # auto bits: one record per escalation rung run (`prunus.compress.escalate`): settings, met, drop, KL, bytes
    attempts: list[dict[str, Any]] = field(default_factory=list)
    parts: dict[str, int] = field(
        default_factory=dict
    )  # file bytes by part (`prn.file_parts`), adding up to file_bytes
    path: str | None = None
    model: nn.Module | None = field(default=None, repr=False)

    @property
    def ratio(self) -> float:
        """fp32 file bytes over .prn file bytes."""
        return self.fp32_bytes / self.file_bytes

    @property
    def stream_bytes(self) -> int:
        return sum(layer.bytes for layer in self.layers)

    @property
    def bound_bits(self) -> float:
        return sum(layer.bound_bits for layer in self.layers)

    @property
    def overhead_bytes(self) -> int:
        """Everything in the file that is not a coded stream: tables, verbatim tensors, header, framing."""
        return self.file_bytes - self.stream_bytes

    def to_json(self) -> dict[str, Any]:
        """Every number of the report (the model itself is left out)."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in ("layers", "model")}
        out["layers"] = [
            {**dataclasses.asdict(layer), "sparsity": layer.sparsity, "gap": layer.gap} for layer in self.layers
        ]
        out.update(ratio=self.ratio, stream_bytes=self.stream_bytes, overhead_bytes=self.overhead_bytes,
                   **bound_summary(self.file_bytes, self.stream_bytes, self.bound_bits, self.parts))  # fmt: skip
        return out


VERBATIM = ("codebooks", "dense", "ints")


def bound_summary(file_bytes: int, stream_bytes: int, bound_bits: float, parts: dict[str, int]) -> dict[str, Any]:
    """The file against the order-0 bound: strict (`file_over_bound`) and with the verbatim tensors (`file_over_floor`).

    Example:
        >>> s = bound_summary(1100, 1000, 8000.0, {"streams": 1000, "dense": 50, "header": 50})
        >>> s["file_over_bound"], s["floor_bytes"], round(s["file_over_floor"], 4)
        (1.1, 1050.0, 1.0476)
    """
    verbatim = sum(parts.get(k, 0) for k in VERBATIM)
    floor = bound_bits / 8 + verbatim
    return {
        "bound_bits": bound_bits,
        "bound_bytes": bound_bits / 8,
        "stream_over_bound": 8 * stream_bytes / bound_bits if bound_bits else None,
        "file_over_bound": 8 * file_bytes / bound_bits if bound_bits else None,
        "verbatim_bytes": verbatim,
        "floor_bytes": floor,
        "file_over_floor": file_bytes / floor if floor else None,
        "file_parts": dict(parts),
    }


def layer_rows(layers: list[LayerReport]) -> list[tuple[Any, ...]]:
    """Table rows: layer, shape, sparsity, bits, kind, bytes, bound bytes, gap."""
    rows = [
        (
            r.name,
            "x".join(map(str, r.shape)),
            f"{r.sparsity:.4f}",
            r.bits,
            r.kind,
            r.bytes,
            f"{r.bound_bits / 8:.1f}",
            f"{r.gap:.4f}",
        )  # fmt: skip
        for r in layers
    ]
    total_bytes = sum(r.bytes for r in layers)
    bound = sum(r.bound_bits for r in layers)
    params = sum(r.params for r in layers)
    kept = sum(r.kept for r in layers)
    sparsity = 1 - kept / params if params else 0.0
    rows.append(("total", params, f"{sparsity:.4f}", "", "", total_bytes, f"{bound / 8:.1f}",
                 f"{8 * total_bytes / bound:.4f}" if bound else ""))  # fmt: skip
    return rows


LAYER_COLUMNS = ("layer", "shape", "sparsity", "bits", "quantizer", "bytes", "bound bytes", "bytes/bound")


def describe_prn(path: str | os.PathLike[str]) -> dict[str, Any]:
    """What a .prn file holds, read from its validated header and tables without decoding: per-layer numbers,
    totals, and every byte of the file by part."""
    from prunus.compress.codec import order0_bits
    from prunus.compress.prn import build_model, check_values, read_prn

    prn = read_prn(path)
    check_values(prn)
    try:  # the header's input shape must fit its architecture: a file that cannot load is not described
        build_model(prn)
    except FormatError:
        raise
    except PrunusError:  # a user factory: checking it would run its code, which info never does
        pass
    h = prn.header
    layers = [LayerReport(e.name, list(e.shape), e.numel, e.numel - e.counts[0], e.bits, e.kind, e.levels, e.nbytes,
                          order0_bits(e.numel, e.counts)) for e in prn.layers]  # fmt: skip
    stream = sum(r.bytes for r in layers)
    bound = sum(r.bound_bits for r in layers)
    return {
        "arch": h["arch"],
        "input_shape": h["input_shape"],
        "prunus_version": h.get("prunus_version"),
        "format_version": h["format_version"],
        "bytes": prn.size,
        "stream_bytes": stream,
        **bound_summary(prn.size, stream, bound, prn.parts),
        "metrics": h.get("metrics", {}),
        "config": h.get("config", {}),
        "layers": [{**dataclasses.asdict(r), "sparsity": r.sparsity, "gap": r.gap} for r in layers],
    }
