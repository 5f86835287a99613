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
from prunus.compress.prn import PrnFile
from prunus.compress.quantize import Quantizer, dequantize, quantize
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


def pack(
    model: nn.Module, coded: dict[str, CodedLayer], meta: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Header dict and tensors of the .prn for `model`; `meta` holds arch, input_shape, history, ..."""
    state = model.state_dict()
    layers, tensors, books = [], {}, []
    for i, (name, c) in enumerate(coded.items()):
        levels = int(c.quantizer.codebook.numel())
        data, counts = encode_layer(c.mask, c.indices, levels)
        tensors[f"c.{i}"] = np.frombuffer(data, dtype=np.uint8).copy()
        books.append(c.quantizer.codebook.to(torch.float16))
        layers.append({"name": name, "shape": list(state[name].shape), "bits": c.quantizer.bits,
                       "kind": c.quantizer.kind, "levels": levels, "counts": counts, "bytes": len(data)})  # fmt: skip
    dtype = dense_dtype(model, coded)
    items = _dense_items(model, coded)
    np_dtype = np.float16 if dtype == "float16" else np.float32
    flat = [v.detach().reshape(-1).cpu().numpy().astype(np_dtype) for _, v in items]
    tensors["dense"] = np.concatenate(flat) if flat else np.zeros(0, np_dtype)
    tensors["codebooks"] = torch.cat(books).numpy() if books else np.zeros(0, np.float16)
    header = {
        **meta,
        "layers": layers,
        "dense": [{"name": k, "shape": list(v.shape)} for k, v in items],
        "dense_dtype": dtype,
        "ints": {k: int(v) for k, v in state.items() if not v.is_floating_point() and v.numel() == 1},
    }
    return header, tensors


def unpack(prn: PrnFile, model: nn.Module) -> dict[str, torch.Tensor]:
    """Decode every tensor of `prn` into `model` (shapes must match exactly); returns the masks."""
    h, t = prn.header, prn.tensors
    state = model.state_dict()
    declared = {e["name"]: e["shape"] for e in h["layers"] + h["dense"]}
    floats = {k: list(v.shape) for k, v in state.items() if v.is_floating_point()}
    ints = {k for k, v in state.items() if not v.is_floating_point()}
    if declared != floats or set(h["ints"]) != ints:
        diff = sorted(
            {k for k in set(floats) | set(declared) if floats.get(k) != declared.get(k)} | (set(h["ints"]) ^ ints)
        )
        raise FormatError(f"the .prn tensors do not match its architecture (first differences: {diff[:3]})"[:300])
    new: dict[str, torch.Tensor] = {}
    books = torch.from_numpy(t["codebooks"].astype(np.float32))
    masks, offset = {}, 0
    for i, layer in enumerate(h["layers"]):
        n = int(np.prod(layer["shape"], dtype=np.int64))
        mask, idx = decode_layer(t[f"c.{i}"].tobytes(), layer["counts"], n)
        book = books[offset : offset + layer["levels"]]
        offset += layer["levels"]
        w = torch.zeros(n, dtype=torch.float32)
        w[mask] = book[idx]
        new[layer["name"]] = w.reshape(layer["shape"]).to(state[layer["name"]].dtype)
        masks[layer["name"]] = mask.reshape(layer["shape"])
    dense = torch.from_numpy(t["dense"].astype(np.float32))
    offset = 0
    for entry in h["dense"]:
        n = int(np.prod(entry["shape"], dtype=np.int64))
        new[entry["name"]] = dense[offset : offset + n].reshape(entry["shape"]).to(state[entry["name"]].dtype)
        offset += n
    for name, value in h["ints"].items():
        new[name] = torch.tensor(value, dtype=state[name].dtype).reshape(state[name].shape)
    model.load_state_dict(new, strict=True)
    return masks
