"""The .prn file: a compressed model in a safetensors container, never pickle.

Layout (format version 2; all little-endian, safetensors framing), two or three tensors (each
tensor costs ~65 bytes of framing, so the parts share them):

- `coded`: U8, the coding tables then the ANS streams. The tables (the first `table_bytes`, a
  header field) are LEB128 varints (`varint.pack_varints`), per coded layer in order: codebook
  size `L`, stream bytes, then the counts of symbols 1..L (the survivors per codebook index; the
  count of symbol 0, the pruned weights, is the layer's size minus their sum). The streams
  (`codec.encode_layer`) follow, concatenated in layer order;
- `values`: F16 (F32 if a dense value would overflow float16), every coded layer's codebook in
  layer order, then every other floating tensor of the state dict (biases, BatchNorm) in
  state-dict order, except the running statistics of the BatchNorms the optional header field
  `folded_bn` lists: their statistics were folded into their weight and bias
  (`pack.fold_batchnorm`), and the reader sets them to the constants mean 0, var 1 - eps;
- `ints`: I64, every integer buffer (BatchNorm's num_batches_tracked) in state-dict order; left
  out when the model has none;
- safetensors metadata: `prunus` = ONE versioned JSON header string, `crc32` = CRC-32 of that
  string followed by the tensors' bytes in name order.

The header holds what rebuilds the model (arch, input_shape, pruning history), the coded layers
as columns (`names`, `shapes`, `bits`, quantizer `kinds`), `table_bytes`, the compression config (only the
fields that differ from `CompressConfig`'s defaults in the prunus_version that wrote it) and a
few calibration metrics. The names and shapes of the dense and integer tensors are not stored:
they are the rebuilt architecture's, in state-dict order. Version 1 (JSON count lists, one
tensor per stream, dense names in the header) cost up to a third of a LeNet file's bits; it is
refused with a message that says to re-compress.

Reading is defensive: the file size, header size, layer count, table size, every declared shape
and the total number of parameters are bounded before anything is allocated, the architecture is
first built on the `meta` device to bound its size, and every inconsistency (lying lengths,
counts, shapes, a bad checksum, a foreign safetensors file) raises `FormatError` (a
`CorruptFileError`) with a one-line message.
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

from prunus._io.atomic import write_bytes
from prunus.compress.varint import MAX_VARINT_BYTES, unpack_varints
from prunus.errors import ConfigError, CorruptFileError, FormatError, PrunusError
from prunus.formats.header import KINDS, check_header, make_header
from prunus.structure.parametrized import bake_

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "MAX_FILE_BYTES",
    "MAX_PARAMS",
    "TENSORS",
    "LayerEntry",
    "PrnFile",
    "build_model",
    "check_values",
    "encode_prn",
    "file_parts",
    "parse_prn",
    "read_prn",
    "write_prn",
]

FORMAT = "prunus-prn"
FORMAT_VERSION = KINDS[FORMAT]
MAX_FILE_BYTES = 1 << 30  # a compressed model is far smaller; refuse to read more than this
MAX_HEADER_BYTES = 16 << 20
MAX_PARAMS = 1 << 27  # 134M parameters (512 MiB in float32) is the most a .prn may expand to
MAX_LEVELS = 256
MAX_LAYERS = 1 << 14
_MAX_DIM = 1 << 24
_MAX_INPUT = 1 << 22  # values of one replay input sample (C*H*W for an image)
#: the tensors of a version-2 file and their dtypes (dense may also be float32)
TENSORS = {"coded": np.uint8, "values": np.float16, "ints": np.int64}  # values may be float32; ints may be absent
_QUANTIZERS = ("kmeans", "uniform")


@dataclass(frozen=True)
class LayerEntry:
    """One coded layer of a validated .prn: where its stream is and how to decode it."""

    name: str
    shape: list[int]
    bits: int
    kind: str
    levels: int
    counts: list[int]  # symbol counts, levels + 1 of them: [pruned, index 0, index 1, ...]
    start: int  # offset of the ANS stream in the `streams` part
    nbytes: int  # ANS stream bytes
    book: int  # offset of the codebook in the `codebooks` part

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


@dataclass
class PrnFile:
    """A parsed, validated .prn: the header dict, the coded layers and the file's parts as numpy views.

    `tensors` holds `streams` (U8), `codebooks`, `dense` (F16 or F32) and `ints` (I64), cut from
    the stored tensors; `parts` counts every byte of the file by part (they add up to `size`).
    """

    header: dict[str, Any]
    tensors: dict[str, np.ndarray]
    size: int
    layers: list[LayerEntry]
    parts: dict[str, int]


def _crc(header_text: str, tensors: dict[str, np.ndarray]) -> str:
    crc = zlib.crc32(header_text.encode("utf-8"))
    for name in sorted(tensors):
        crc = zlib.crc32(np.ascontiguousarray(tensors[name]).tobytes(), crc)
    return f"{crc:08x}"


def encode_prn(header: dict[str, Any], tensors: dict[str, np.ndarray]) -> bytes:
    """The bytes of a .prn file: safetensors framing, versioned header, checksum; the same model and
    settings give the same bytes in every process (`_canonical_frame`)."""
    from safetensors.numpy import save

    text = json.dumps(make_header(FORMAT, header), separators=(",", ":"), sort_keys=True)
    return _canonical_frame(save(tensors, metadata={"prunus": text, "crc32": _crc(text, tensors)}))


def _canonical_frame(blob: bytes) -> bytes:
    """`blob` with its safetensors JSON frame rewritten in one fixed order.

    safetensors writes the metadata map in an order that changes from process to process, so two
    runs that compress the same model identically would give different bytes (and hashes). The
    frame is re-serialised with the metadata first (keys sorted) and the tensors in data order,
    padded with spaces to a multiple of 8 as safetensors pads it; the data section is unchanged.
    """
    (n,) = struct.unpack("<Q", blob[:8])
    frame = json.loads(blob[8 : 8 + n].decode("utf-8"))
    meta = frame.pop("__metadata__", None)
    ordered: dict[str, Any] = {"__metadata__": dict(sorted(meta.items()))} if meta is not None else {}
    for name in sorted(frame, key=lambda k: (frame[k]["data_offsets"][0], k)):
        ordered[name] = frame[name]
    text = json.dumps(ordered, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + blob[8 + n :]


def file_parts(blob: bytes) -> dict[str, int]:
    """Bytes of a well-formed .prn by part: each tensor's data, the prunus `header` (as stored, a
    JSON string inside the safetensors header) and `framing` (everything else); they add up to `len(blob)`.

    Example:
        >>> parts = file_parts(encode_prn({"a": 1}, {"x": np.zeros(3, np.uint8)}))
        >>> parts["x"], sum(parts.values()) == len(encode_prn({"a": 1}, {"x": np.zeros(3, np.uint8)}))
        (3, True)
    """
    (n,) = struct.unpack("<Q", blob[:8])
    frame = json.loads(blob[8 : 8 + n].decode("utf-8"))
    parts = {"header": len(json.dumps(frame["__metadata__"]["prunus"], ensure_ascii=False).encode("utf-8"))}
    for name, entry in frame.items():
        if name != "__metadata__":
            start, end = entry["data_offsets"]
            parts[name] = int(end) - int(start)
    parts["framing"] = len(blob) - sum(parts.values())
    return parts


def write_prn(path: str | os.PathLike[str], header: dict[str, Any], tensors: dict[str, np.ndarray]) -> int:
    """Write header + tensors atomically; returns the file size in bytes."""
    blob = encode_prn(header, tensors)
    write_bytes(path, blob)
    return len(blob)


def _fail(where: str, what: str) -> FormatError:
    return FormatError(f"{where}: {what}"[:300])


def read_prn(path: str | os.PathLike[str]) -> PrnFile:
    """Read and check a .prn file's framing, checksum, header and coding tables (no stream is decoded yet)."""
    path = Path(path)
    where = str(path)
    if not path.is_file():
        raise PrunusError(f"no such .prn file: {path}")
    size = path.stat().st_size
    if size > MAX_FILE_BYTES:
        raise _fail(where, f"{size} bytes is larger than the {MAX_FILE_BYTES}-byte limit for a .prn file")
    with open(path, "rb") as fh:
        blob = fh.read(MAX_FILE_BYTES + 1)
    return parse_prn(blob, where)


def parse_prn(blob: bytes, where: str = "the .prn data") -> PrnFile:
    """`read_prn` on bytes in memory (`where` names them in messages)."""
    if len(blob) > MAX_FILE_BYTES:
        raise _fail(where, f"{len(blob)} bytes is larger than the {MAX_FILE_BYTES}-byte limit for a .prn file")
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
    except (SafetensorError, ValueError, TypeError, OverflowError, KeyError, IndexError, RuntimeError) as exc:
        # KeyError: a frame naming a dtype numpy does not know
        raise _fail(
            where, f"is truncated or corrupt ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})"
        ) from None
    if _crc(text, tensors) != crc:
        raise _fail(where, "checksum mismatch: the file is corrupt")
    try:
        header = json.loads(text)
    except ValueError:
        raise _fail(where, "the prunus header is not valid JSON") from None
    header, layers, views = _check_header(header, tensors, where)
    stored = file_parts(blob)
    parts = {"header": stored["header"], "framing": stored["framing"], "tables": header["table_bytes"],
             **{k: int(v.nbytes) for k, v in views.items()}}  # fmt: skip
    return PrnFile(header, views, len(blob), layers, parts)


def _is_int(v: Any, low: int = 0, high: int = 1 << 62) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and low <= v <= high


def _shape(v: Any, where: str, what: str) -> list[int]:
    if not isinstance(v, list) or len(v) > 8 or not all(_is_int(d, 0, _MAX_DIM) for d in v):
        raise _fail(where, f"{what} has an invalid shape {repr(v)[:60]}")
    return v


def _check_tensors(tensors: dict[str, np.ndarray], where: str) -> None:
    names = set(tensors)
    if names not in ({"coded", "values"}, set(TENSORS)):
        raise _fail(where, f"holds tensors {sorted(tensors)[:6]}, expected coded, values and maybe ints")
    for name, t in tensors.items():
        ok = t.dtype == TENSORS[name] or (name == "values" and t.dtype == np.float32)
        if not ok or t.ndim != 1:
            raise _fail(where, f"tensor {name!r} is {t.dtype.name} with {t.ndim} dims, expected a 1-D "
                               f"{np.dtype(TENSORS[name]).name}")  # fmt: skip


def _columns(layers: Any, where: str) -> tuple[list[str], list[list[int]], list[int], list[str]]:
    cols = {"names": str, "shapes": list, "bits": int, "kinds": str}
    if not isinstance(layers, dict) or set(layers) != set(cols):
        raise _fail(where, f"'layers' must be a dict with the columns {sorted(cols)}")
    n = len(layers["names"]) if isinstance(layers["names"], list) else -1
    if not 0 <= n <= MAX_LAYERS:
        raise _fail(where, f"'layers' must list at most {MAX_LAYERS} names")
    for key, typ in cols.items():
        col = layers[key]
        if not isinstance(col, list) or len(col) != n or not all(isinstance(v, typ) and not isinstance(v, bool)
                                                                for v in col):  # fmt: skip
            raise _fail(where, f"layers.{key} must be a list of {n} {typ.__name__} values")
    if len(set(layers["names"])) != n:
        raise _fail(where, "layers.names repeats a name")
    for name, bits, kind in zip(layers["names"], layers["bits"], layers["kinds"], strict=True):
        if not 1 <= bits <= 8 or kind not in _QUANTIZERS:
            raise _fail(
                where, f"layer {name!r}: bits {bits} / quantizer {kind!r} (expected 1-8 and one of {_QUANTIZERS})"
            )
    shapes = [_shape(s, where, name) for s, name in zip(layers["shapes"], layers["names"], strict=True)]
    return layers["names"], shapes, layers["bits"], layers["kinds"]


def _check_header(
    h: Any, tensors: dict[str, np.ndarray], where: str
) -> tuple[dict[str, Any], list[LayerEntry], dict[str, np.ndarray]]:
    """Types, bounds and cross-checks between the header, the coding tables and the tensors."""
    if isinstance(h, dict) and h.get("format") == FORMAT and _is_int(h.get("format_version")) and \
            h["format_version"] < FORMAT_VERSION:  # fmt: skip
        raise _fail(where, f"is a version-{h['format_version']} .prn file; this prunus reads version "
                           f"{FORMAT_VERSION}: compress the model again")  # fmt: skip
    fields = {"arch": dict, "input_shape": list, "history": list, "layers": dict, "table_bytes": int}
    h = check_header(h, FORMAT, fields=fields, optional={"metrics": dict, "config": dict, "folded_bn": list},
                     where=where)  # fmt: skip
    shape = _shape(h["input_shape"], where, "input_shape")
    if not 1 <= len(shape) <= 4 or not all(shape) or math.prod(shape) > _MAX_INPUT:
        raise _fail(where, f"input_shape must be one sample's shape ([C, L], [C, H, W], [C, D, H, W] or [features]) "
                           f"of at most {_MAX_INPUT} values, got {shape}")  # fmt: skip
    names, shapes, bits, kinds = _columns(h["layers"], where)
    _check_tensors(tensors, where)
    coded, values = tensors["coded"], tensors["values"]
    ints = tensors.get("ints", np.zeros(0, np.int64))
    numels = [math.prod(s) for s in shapes]
    total = sum(numels) + values.size + ints.size
    if total > MAX_PARAMS:
        raise _fail(where, f"declares {total} parameters, more than the {MAX_PARAMS} limit")
    n_table = h["table_bytes"]
    # bounds the decoding work before it starts: a layer's table is at most MAX_LEVELS + 2 varints
    if not _is_int(n_table, 0, min(coded.size, len(names) * (MAX_LEVELS + 2) * MAX_VARINT_BYTES)):
        raise _fail(where, f"table_bytes {n_table} is not possible for {len(names)} layers in {coded.size} bytes")
    table = unpack_varints(coded[:n_table]).tolist()
    layers, pos, start, book = [], 0, 0, 0
    for name, shp, n, b, kind in zip(names, shapes, numels, bits, kinds, strict=True):
        if pos + 2 > len(table):
            raise _fail(where, f"the coding tables end before layer {name!r}")
        levels, nbytes = table[pos], table[pos + 1]
        if not 1 <= levels <= MAX_LEVELS or pos + 2 + levels > len(table):
            raise _fail(where, f"layer {name!r}: codebook size {levels} (expected 1-{MAX_LEVELS} within the tables)")
        kept = table[pos + 2 : pos + 2 + levels]
        if sum(kept) > n:
            raise _fail(where, f"layer {name!r}: symbol counts add up to {sum(kept)} survivors of its {n} weights")
        layers.append(LayerEntry(name, shp, b, kind, levels, [n - sum(kept), *kept], start, nbytes, book))
        pos, start, book = pos + 2 + levels, start + nbytes, book + levels
    if pos != len(table):
        raise _fail(where, f"the coding tables hold {len(table) - pos} values after the last layer")
    if n_table + start != coded.size or book > values.size:
        raise _fail(where, f"the tables declare {start} stream bytes and {book} codebook values; the file holds "
                           f"{coded.size - n_table} and {values.size} values in all")  # fmt: skip
    views = {"streams": coded[n_table:], "codebooks": values[:book], "dense": values[book:], "ints": ints}
    return h, layers, views


def check_values(prn: PrnFile) -> None:
    """`FormatError` when a stored codebook or dense value is NaN or infinite (no usable model holds one)."""
    for what in ("codebooks", "dense"):
        if not np.isfinite(prn.tensors[what]).all():
            raise FormatError(f"the .prn holds NaN or infinite {what} values; refusing to load it")


def build_model(prn: PrnFile, *, trust_factory: bool = False) -> nn.Module:
    """The dense architecture of a validated .prn, history replayed, weights not yet filled.

    The header's input_shape is checked against the architecture (a meta-device forward) before any
    replay, and the history is replayed at a small probe input (`formats.limits.replay_shape`).
    """
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
    from prunus.formats.limits import build_bounded, replay_shape

    try:  # the header's input_shape must fit the architecture (a meta-device forward), before any replay
        build_bounded(lambda: _build_dense(h["arch"], trust_factory), h["input_shape"], "the .prn architecture")
    except CorruptFileError as exc:
        raise FormatError(str(exc)[:300]) from None
    try:
        model = _build_dense(h["arch"], trust_factory)
        if h["history"]:
            from prunus.structure import replay

            probe = replay_shape(lambda: _build_dense(h["arch"], trust_factory), h["input_shape"])
            replay(model, h["history"], torch.zeros(1, *probe))
        bake_(model)  # a compressed model holds its parametrized tensors' values as plain weights, as written
    except (ConfigError, CorruptFileError) as exc:
        raise FormatError(f"the .prn architecture cannot be rebuilt ({exc})"[:300]) from None
    except PrunusError:
        raise
    except (TypeError, ValueError, RuntimeError, KeyError, IndexError, OverflowError, AttributeError) as exc:
        raise FormatError(f"the .prn architecture cannot be rebuilt ({exc})"[:300]) from None
    return model
