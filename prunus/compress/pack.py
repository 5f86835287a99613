"""Model <-> .prn contents: code every compressed weight, store the rest compactly, and back.

`pack` turns a model plus, per compressed weight, its mask and quantizer into the header and
tensors that `prn.write_prn` writes; `unpack` fills a rebuilt model from a validated `PrnFile`.
The model `pack` reads must already hold the quantized weights (`apply_quantized`) and the
float16-rounded other tensors (`round_dense`), so that a decoded model equals it bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from prunus.compress.codec import decode_layer, encode_layer
from prunus.compress.prn import PrnFile, check_values
from prunus.compress.quantize import Quantizer, dequantize, quantize
from prunus.compress.varint import pack_varints
from prunus.errors import FormatError

__all__ = [
    "CodedLayer",
    "apply_quantized",
    "dense_dtype",
    "fold_batchnorm",
    "folded_names",
    "pack",
    "round_dense",
    "unpack",
]


@dataclass(frozen=True)
class CodedLayer:
    """One compressed weight: survivors `mask` (weight shape), its quantizer and survivor indices."""

    mask: torch.Tensor
    quantizer: Quantizer
    indices: torch.Tensor


def apply_quantized(weight: torch.Tensor, mask: torch.Tensor, q: Quantizer) -> CodedLayer:
    """Quantize the survivors of `weight` in place (pruned entries become exactly 0); returns the coding."""
    with torch.no_grad():
        idx = quantize(weight[mask], q)
        new = torch.zeros_like(weight)
        new[mask] = dequantize(idx, q).to(weight.dtype)
        weight.copy_(new)
    return CodedLayer(mask.clone(), q, idx)


_BN = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
_STATS = ("running_mean", "running_var")


def _foldable(module: nn.Module) -> bool:
    return (isinstance(module, _BN) and module.affine and module.track_running_stats
            and module.running_mean is not None and module.running_var is not None)  # fmt: skip


def _set_folded_stats(bn: nn.Module) -> None:
    """The statistics a folded BatchNorm keeps: mean 0, variance 1 - eps (the writer and the reader set them alike)."""
    with torch.no_grad():
        bn.running_mean.zero_()
        bn.running_var.fill_(1.0 - bn.eps)


def fold_batchnorm(model: nn.Module) -> list[str]:
    """Fold every BatchNorm's running statistics into its affine weight and bias, in place; returns their names.

    In eval mode BN(x) = (x - mean) / sqrt(var + eps) * w + b = x * s + t, so a file needs two
    values per channel, not four: w becomes s = w / sqrt(var + eps), b becomes t = b - mean * s,
    and the statistics become the constants mean 0, var 1 - eps, which the reader sets again
    instead of reading them (on ResNet-20: 3,136 of the 6,292 bytes of dense tensors). Train mode
    would use batch statistics as usual; the running ones start from those constants.

    Example:
        >>> bn = nn.BatchNorm1d(3).eval()
        >>> bn.running_mean.fill_(0.5); bn.running_var.fill_(4.0); x = torch.randn(5, 3)  # doctest: +ELLIPSIS
        tensor(...)
        >>> before = bn(x)
        >>> fold_batchnorm(nn.Sequential(bn)), torch.allclose(bn(x), before, atol=1e-6)
        (['0'], True)
    """
    names = []
    with torch.no_grad():
        for name, m in model.named_modules():
            if not _foldable(m):
                continue
            scale = m.weight / torch.sqrt(m.running_var + m.eps)
            m.bias.copy_(m.bias - m.running_mean * scale)
            m.weight.copy_(scale)
            _set_folded_stats(m)
            names.append(name)
    return names


def folded_names(names: Any, model: nn.Module) -> list[str]:
    """The header's `folded_bn` checked against `model`: a list of its BatchNorm modules (FormatError otherwise)."""
    modules = dict(model.named_modules())
    if not isinstance(names, list) or not all(isinstance(n, str) and _foldable(modules.get(n)) for n in names) \
            or len(set(names)) != len(names):  # fmt: skip
        raise FormatError("the .prn header's folded_bn must list distinct BatchNorm modules of its architecture")
    return names


def _stat_keys(folded: list[str]) -> set[str]:
    return {f"{n}.{s}" if n else s for n in folded for s in _STATS}


def _dense_items(model: nn.Module, coded: dict[str, Any], folded: list[str] = ()) -> list[tuple[str, torch.Tensor]]:
    skip = _stat_keys(list(folded))
    return [(k, v) for k, v in model.state_dict().items() if k not in coded and k not in skip and v.is_floating_point()]


def dense_dtype(model: nn.Module, coded: dict[str, Any], folded: list[str] = ()) -> str:
    """float16 for the uncoded tensors (but `folded` BatchNorms' statistics) unless a value would overflow it."""
    big = any(float(v.abs().max()) > 65504 for _, v in _dense_items(model, coded, folded) if v.numel())
    return "float32" if big else "float16"


def round_dense(model: nn.Module, coded: dict[str, Any], folded: list[str] = ()) -> str:
    """Round every uncoded floating tensor to the dtype the file stores it in; returns that dtype.

    The statistics of `folded` BatchNorms are not stored (the reader sets their constants), so they are not rounded.
    """
    dtype = dense_dtype(model, coded, folded)
    if dtype == "float16":
        with torch.no_grad():
            for _, v in _dense_items(model, coded, folded):
                v.copy_(v.to(torch.float16).to(v.dtype))
    return dtype


def _ints(state: dict[str, torch.Tensor]) -> list[tuple[str, torch.Tensor]]:
    return [(k, v) for k, v in state.items() if not v.is_floating_point()]


def pack(
    model: nn.Module, coded: dict[str, CodedLayer], meta: dict[str, Any], folded: list[str] = ()
) -> tuple[dict[str, Any], dict[str, np.ndarray], list[dict[str, Any]]]:
    """Header dict, tensors and per-layer coding of the .prn for `model` (`meta`: arch, input_shape, history, ...).

    `folded`: the BatchNorm modules `fold_batchnorm` folded: their statistics are not stored (the
    header's `folded_bn` names them, and the reader sets the constants).

    The third value lists, per coded layer, its `name`, stream `bytes` and symbol `counts`
    (levels + 1, the pruned weights first): what the report needs without reading the file back.
    """
    state = model.state_dict()
    streams, table, books, entries = [], [], [], []
    cols: dict[str, list[Any]] = {"names": [], "shapes": [], "bits": [], "kinds": []}
    for name, c in coded.items():
        levels = int(c.quantizer.codebook.numel())
        data, counts = encode_layer(c.mask, c.indices, levels)
        streams.append(data)
        table += [levels, len(data), *counts[1:]]
        books.append(c.quantizer.codebook.to(torch.float16))
        for key, value in zip(cols, (name, list(state[name].shape), c.quantizer.bits, c.quantizer.kind), strict=True):
            cols[key].append(value)
        entries.append({"name": name, "bytes": len(data), "counts": counts})
    np_dtype = np.float16 if dense_dtype(model, coded, folded) == "float16" else np.float32
    values = [b.numpy().astype(np_dtype) for b in books]  # float16 codebooks are exact in float32 too
    values += [v.detach().reshape(-1).cpu().numpy().astype(np_dtype) for _, v in _dense_items(model, coded, folded)]
    ints = [v.detach().reshape(-1).cpu().to(torch.int64).numpy() for _, v in _ints(state)]
    tables = pack_varints(table)
    tensors = {
        "coded": np.concatenate([tables, np.frombuffer(b"".join(streams), dtype=np.uint8)]),
        "values": np.concatenate(values) if values else np.zeros(0, np_dtype),
    }
    if ints:
        tensors["ints"] = np.concatenate(ints)
    header = {**meta, "layers": cols, "table_bytes": int(tables.size)}
    if folded:
        header["folded_bn"] = list(folded)
    return header, tensors, entries


def unpack(prn: PrnFile, model: nn.Module) -> dict[str, torch.Tensor]:
    """Decode every tensor of `prn` into `model` (shapes must match exactly); returns the masks.

    The dense and integer tensors fill the model's own uncoded floating and integer tensors in
    state-dict order, so their total sizes must match what the architecture holds.
    """
    t = prn.tensors
    state = model.state_dict()
    coded = {e.name: e.shape for e in prn.layers}
    wrong = [k for k, shape in coded.items() if k not in state or list(state[k].shape) != shape]
    if wrong or any(not state[k].is_floating_point() for k in coded):
        raise FormatError(f"the .prn coded layers do not match its architecture (first differences: {wrong[:3]})"[:300])
    folded = folded_names(prn.header.get("folded_bn", []), model)
    skip = _stat_keys(folded)
    dense = [(k, v) for k, v in state.items() if k not in coded and k not in skip and v.is_floating_point()]
    ints = _ints(state)
    for what, items, tensor in (("dense", dense, t["dense"]), ("integer", ints, t["ints"])):
        want = sum(v.numel() for _, v in items)
        if tensor.size != want:
            raise FormatError(f"the .prn holds {tensor.size} {what} values; its architecture has {want}")
    check_values(prn)  # NaN / inf: refused, not loaded silently
    new: dict[str, torch.Tensor] = {}
    books = torch.from_numpy(t["codebooks"].astype(np.float32))
    streams = t["streams"]
    masks = {}
    for e in prn.layers:
        mask, idx = decode_layer(streams[e.start : e.start + e.nbytes].tobytes(), e.counts, e.numel)
        w = torch.zeros(e.numel, dtype=torch.float32)
        w[mask] = books[e.book : e.book + e.levels][idx]
        new[e.name] = w.reshape(e.shape).to(state[e.name].dtype)
        masks[e.name] = mask.reshape(e.shape)
    for items, tensor in (
        (dense, torch.from_numpy(t["dense"].astype(np.float32))),
        (ints, torch.from_numpy(t["ints"].astype(np.int64))),  # a copy: safetensors arrays are read-only
    ):
        offset = 0
        for name, v in items:
            new[name] = tensor[offset : offset + v.numel()].reshape(v.shape).to(v.dtype)
            offset += v.numel()
    for key in skip:  # placeholders: set to the folded constants below, as the writer set them
        new[key] = state[key]
    model.load_state_dict(new, strict=True)
    modules = dict(model.named_modules())
    for name in folded:
        _set_folded_stats(modules[name])
    return masks
