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

__all__ = ["CodedLayer", "apply_quantized", "dense_dtype", "pack", "round_dense", "unpack"]


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


def _dense_items(model: nn.Module, coded: dict[str, Any]) -> list[tuple[str, torch.Tensor]]:
    return [(k, v) for k, v in model.state_dict().items() if k not in coded and v.is_floating_point()]


def dense_dtype(model: nn.Module, coded: dict[str, Any]) -> str:
    """float16 for the uncoded tensors unless one of their values would overflow it."""
    big = any(float(v.abs().max()) > 65504 for _, v in _dense_items(model, coded) if v.numel())
    return "float32" if big else "float16"


def round_dense(model: nn.Module, coded: dict[str, Any]) -> str:
    """Round every uncoded floating tensor to the dtype the file stores it in; returns that dtype."""
    dtype = dense_dtype(model, coded)
    if dtype == "float16":
        with torch.no_grad():
            for _, v in _dense_items(model, coded):
                v.copy_(v.to(torch.float16).to(v.dtype))
    return dtype


def _ints(state: dict[str, torch.Tensor]) -> list[tuple[str, torch.Tensor]]:
    return [(k, v) for k, v in state.items() if not v.is_floating_point()]


def pack(
    model: nn.Module, coded: dict[str, CodedLayer], meta: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, np.ndarray], list[dict[str, Any]]]:
    """Header dict, tensors and per-layer coding of the .prn for `model` (`meta`: arch, input_shape, history, ...).

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
    np_dtype = np.float16 if dense_dtype(model, coded) == "float16" else np.float32
    values = [b.numpy().astype(np_dtype) for b in books]  # float16 codebooks are exact in float32 too
    values += [v.detach().reshape(-1).cpu().numpy().astype(np_dtype) for _, v in _dense_items(model, coded)]
    ints = [v.detach().reshape(-1).cpu().to(torch.int64).numpy() for _, v in _ints(state)]
    tables = pack_varints(table)
    tensors = {
        "coded": np.concatenate([tables, np.frombuffer(b"".join(streams), dtype=np.uint8)]),
        "values": np.concatenate(values) if values else np.zeros(0, np_dtype),
    }
    if ints:
        tensors["ints"] = np.concatenate(ints)
    return {**meta, "layers": cols, "table_bytes": int(tables.size)}, tensors, entries


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
    dense = [(k, v) for k, v in state.items() if k not in coded and v.is_floating_point()]
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
    model.load_state_dict(new, strict=True)
    return masks
