"""The .prn file: a compressed model in a safetensors container, never pickle.

Layout (all little-endian, safetensors framing):

- one U8 tensor per coded layer, `c.<i>`: the layer's ANS stream (`codec.encode_layer`);
- `codebooks`: F16, every coded layer's codebook, concatenated in layer order;
- `dense`: F16 (F32 if a value would overflow float16), every other floating tensor of the
  state dict (biases, BatchNorm) concatenated in the order the header lists them;
- safetensors metadata: `prunus` = ONE versioned JSON header string, `crc32` = CRC-32 of that
  string followed by the tensors' bytes in name order.

The header holds what rebuilds the model (arch, input_shape, pruning history), per coded layer
its name, shape, bits, quantizer kind, codebook size, symbol counts and stream bytes, the dense
tensors' names and shapes, integer buffers by value, plus the compression config and metrics.

Reading is defensive: the file size, header size, every declared shape and the total number of
parameters are bounded before anything is allocated, the architecture is first built on the
`meta` device to bound its size, and every inconsistency (lying lengths, counts, shapes, a bad
checksum, a foreign safetensors file) raises `FormatError` (a `CorruptFileError`) with a one-line message.
"""

from __future__ import annotations

import json
import math
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from prunus._atomic import write_bytes
from prunus.errors import ConfigError, CorruptFileError, FormatError, PrunusError
from prunus.formats.header import KINDS, check_header, make_header

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "MAX_FILE_BYTES",
    "MAX_PARAMS",
    "PrnFile",
    "build_model",
    "encode_prn",
    "read_prn",
    "write_prn",
]

FORMAT = "prunus-prn"
FORMAT_VERSION = KINDS[FORMAT]
MAX_FILE_BYTES = 1 << 30  # a compressed model is far smaller; refuse to read more than this
MAX_HEADER_BYTES = 16 << 20
MAX_PARAMS = 1 << 27  # 134M parameters (512 MiB in float32) is the most a .prn may expand to
MAX_LEVELS = 256
_MAX_DIM = 1 << 24
_MAX_INPUT = 1 << 22  # C*H*W of the replay input


@dataclass
class PrnFile:
    """A parsed, validated .prn: the header dict and the raw tensors (numpy arrays)."""

    header: dict[str, Any]
    tensors: dict[str, np.ndarray]
    size: int


def _crc(header_text: str, tensors: dict[str, np.ndarray]) -> str:
    crc = zlib.crc32(header_text.encode("utf-8"))
    for name in sorted(tensors):
        crc = zlib.crc32(np.ascontiguousarray(tensors[name]).tobytes(), crc)
    return f"{crc:08x}"


def encode_prn(header: dict[str, Any], tensors: dict[str, np.ndarray]) -> bytes:
    """The bytes of a .prn file: safetensors framing, versioned header, checksum."""
    from safetensors.numpy import save

    text = json.dumps(make_header(FORMAT, header), separators=(",", ":"))
    return save(tensors, metadata={"prunus": text, "crc32": _crc(text, tensors)})


def write_prn(path: str | os.PathLike[str], header: dict[str, Any], tensors: dict[str, np.ndarray]) -> int:
    """Write header + tensors atomically; returns the file size in bytes."""
    blob = encode_prn(header, tensors)
    write_bytes(path, blob)
    return len(blob)


def _fail(where: str, what: str) -> FormatError:
    return FormatError(f"{where}: {what}"[:300])


def read_prn(path: str | os.PathLike[str]) -> PrnFile:
    """Read and check a .prn file's framing, checksum and header types (nothing is decoded yet)."""
    path = Path(path)
    where = str(path)
    if not path.is_file():
        raise PrunusError(f"no such .prn file: {path}")
    size = path.stat().st_size
    if size > MAX_FILE_BYTES:
        raise _fail(where, f"{size} bytes is larger than the {MAX_FILE_BYTES}-byte limit for a .prn file")
    with open(path, "rb") as fh:
        blob = fh.read(MAX_FILE_BYTES + 1)
    if len(blob) < 8:
        raise _fail(where, "too short to be a .prn file")
    (n,) = struct.unpack("<Q", blob[:8])
    if n > MAX_HEADER_BYTES or 8 + n > len(blob):
        raise _fail(where, f"declares a {n}-byte header in a {len(blob)}-byte file (truncated or not a .prn file)")
    try:
        frame = json.loads(blob[8 : 8 + n].decode("utf-8"))
        meta = frame["__metadata__"]
        text, crc = meta["prunus"], meta["crc32"]
    except (ValueError, KeyError, TypeError):
        raise _fail(where, "is not a .prn file (no prunus header in the safetensors metadata)") from None
    if not isinstance(text, str) or not isinstance(crc, str):
        raise _fail(where, "is not a .prn file (metadata values are not strings)")
    from safetensors import SafetensorError
    from safetensors.numpy import load

    try:
        tensors = load(blob)
    except (SafetensorError, ValueError, TypeError, OverflowError) as exc:
        raise _fail(
            where, f"is truncated or corrupt ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})"
        ) from None
    if _crc(text, tensors) != crc:
        raise _fail(where, "checksum mismatch: the file is corrupt")
    try:
        header = json.loads(text)
    except ValueError:
        raise _fail(where, "the prunus header is not valid JSON") from None
    _check_header(header, tensors, where)
    return PrnFile(header, tensors, size)


def _is_int(v: Any, low: int = 0, high: int = 1 << 62) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and low <= v <= high


def _shape(v: Any, where: str, what: str) -> list[int]:
    if not isinstance(v, list) or len(v) > 8 or not all(_is_int(d, 0, _MAX_DIM) for d in v):
        raise _fail(where, f"{what} has an invalid shape {repr(v)[:60]}")
    return v


def _check_header(h: Any, tensors: dict[str, np.ndarray], where: str) -> None:
    """Types, bounds and cross-checks between the header and the tensors it describes."""
    fields = {"arch": dict, "input_shape": list, "history": list, "layers": list, "dense": list, "ints": dict,
              "dense_dtype": str}  # fmt: skip
    h = check_header(h, FORMAT, fields=fields, optional={"metrics": dict, "config": dict}, where=where)
    shape = _shape(h["input_shape"], where, "input_shape")
    if len(shape) != 3 or not all(shape) or math.prod(shape) > _MAX_INPUT:
        raise _fail(where, f"input_shape must be [C, H, W] with C*H*W <= {_MAX_INPUT}, got {shape}")
    if h["dense_dtype"] not in ("float16", "float32"):
        raise _fail(where, f"dense_dtype must be float16 or float32, got {h['dense_dtype']!r}"[:80])
    total, levels_total = 0, 0
    names: set[str] = set()
    for i, layer in enumerate(h["layers"]):
        if not isinstance(layer, dict) or not isinstance(layer.get("name"), str):
            raise _fail(where, f"layer entry {i} is not a dict with a name")
        n = math.prod(_shape(layer.get("shape"), where, layer["name"]))
        total += n
        levels, counts, nbytes = layer.get("levels"), layer.get("counts"), layer.get("bytes")
        if not _is_int(levels, 1, MAX_LEVELS) or not _is_int(layer.get("bits"), 1, 8):
            raise _fail(where, f"layer {layer['name']!r} has invalid levels/bits")
        if not isinstance(counts, list) or len(counts) != levels + 1 or not all(_is_int(c) for c in counts):
            raise _fail(where, f"layer {layer['name']!r} has invalid symbol counts")
        if sum(counts) != n:
            raise _fail(where, f"layer {layer['name']!r}: symbol counts add up to {sum(counts)}, not its {n} weights")
        stream = tensors.get(f"c.{i}")
        if stream is None or stream.dtype != np.uint8 or stream.ndim != 1 or stream.size != nbytes:
            raise _fail(where, f"layer {layer['name']!r}: stream c.{i} is missing or not {nbytes!r} bytes")
        levels_total += levels
        names.add(layer["name"])
    dense_total = 0
    for i, entry in enumerate(h["dense"]):
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            raise _fail(where, f"dense entry {i} is not a dict with a name")
        dense_total += math.prod(_shape(entry.get("shape"), where, entry["name"]))
        names.add(entry["name"])
    for name, value in h["ints"].items():
        if not _is_int(value, -(1 << 62)):
            raise _fail(where, f"integer buffer {name!r} is not an integer")
    if total + dense_total > MAX_PARAMS:
        raise _fail(where, f"declares {total + dense_total} parameters, more than the {MAX_PARAMS} limit")
    want = {"codebooks": (levels_total, np.float16), "dense": (dense_total, np.dtype(h["dense_dtype"]))}
    for name, (n, dtype) in want.items():
        t = tensors.get(name)
        if t is None or t.dtype != dtype or t.ndim != 1 or t.size != n:
            raise _fail(where, f"tensor {name!r} is missing or does not hold {n} {np.dtype(dtype).name} values")
    extra = set(tensors) - set(want) - {f"c.{i}" for i in range(len(h["layers"]))}
    if extra:
        raise _fail(where, f"holds tensors the header does not describe: {sorted(extra)[:3]}")


def build_model(prn: PrnFile, *, trust_factory: bool = False) -> nn.Module:
    """The dense architecture of a validated .prn, history replayed, weights not yet filled."""
    from prunus.formats.model_dir import _build_dense

    h = prn.header
    try:
        with torch.device("meta"):  # size the architecture without allocating it
            probe = _build_dense(h["arch"], trust_factory)
        n = sum(t.numel() for t in probe.state_dict().values())
    except (ConfigError, CorruptFileError) as exc:  # the file names a model or arguments this prunus lacks
        raise FormatError(f"the .prn architecture cannot be built ({exc})"[:300]) from None
    except PrunusError:  # a user factory refused without trust_factory=True: not corruption
        raise
    except (TypeError, ValueError, RuntimeError, KeyError, OverflowError, AttributeError) as exc:
        raise FormatError(f"the .prn architecture cannot be built ({exc})"[:300]) from None
    if n > MAX_PARAMS:
        raise FormatError(f"the .prn architecture has {n} parameters, more than the {MAX_PARAMS} limit")
    try:
        model = _build_dense(h["arch"], trust_factory)
        if h["history"]:
            from prunus.structure import replay

            replay(model, h["history"], torch.zeros(1, *h["input_shape"]))
    except (ConfigError, CorruptFileError) as exc:
        raise FormatError(f"the .prn architecture cannot be rebuilt ({exc})"[:300]) from None
    except PrunusError:
        raise
    except (TypeError, ValueError, RuntimeError, KeyError, IndexError, OverflowError, AttributeError) as exc:
        raise FormatError(f"the .prn architecture cannot be rebuilt ({exc})"[:300]) from None
    return model
