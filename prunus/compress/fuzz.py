"""Seeded mutations of a .prn file, for the fuzz test and the fuzz benchmark (not a public API).

Nine kinds, in turn: truncation, bit flips anywhere, byte overwrites in the framing/header, runs of
bytes inserted or deleted, a tensor's dtype in the safetensors frame renamed, and four that keep
the checksum valid (so the header validation, not the CRC, must catch them): a random header
value replaced by a hostile one (huge, negative, wrong type), a bit of the ANS streams or the
varint coding tables flipped, an `input_shape` that is huge, tiny or contradicts the layers, and
a NaN or infinite stored value. `fuzz_file` counts outcomes, runs every model that loads, and
times every load; any exception other than the format error propagates (that is the failure
the callers look for).

Example:
    >>> [len(m) < 10 for m in mutations(b"0123456789", 1, seed=0)]  # the first kind truncates
    [True]
"""

from __future__ import annotations

import json
import os
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["fuzz_file", "mutations", "resign"]

_HOSTILE: list[Any] = [-1, 0, 1 << 40, 1 << 62, 2.5, "x", None, True, [], {}, [1 << 30, 1 << 30], [-3], "a" * 100]
_SHAPES: list[Any] = [[1, 2048, 2048], [1, 1, 1], [3, 28, 28], [1, 0, 28], [1, 28], [1, 4096, 4096], [64, 28, 28]]
_DTYPES = [b"F64", b"X9", b"BOOL", b"I8", b"F8_E4M3", b"U64", b"C64"]
KINDS = 9


def resign(blob: bytes, edit) -> bytes | None:
    """`blob` with its prunus header and tensors edited by `edit(header, tensors)` and the checksum made
    valid again (the fuzzer's and the hostile-input tests' crafted files); None when `blob` is not a
    well-formed .prn.

    Example:
        >>> resign(b"not a .prn file", lambda header, tensors: None) is None
        True
    """
    from safetensors.numpy import load, save

    try:
        (n,) = struct.unpack("<Q", blob[:8])
        text = json.loads(blob[8 : 8 + n])["__metadata__"]["prunus"]
        header, tensors = json.loads(text), {k: v.copy() for k, v in load(blob).items()}
    except Exception:  # noqa: BLE001 - only well-formed files are re-signed
        return None
    edit(header, tensors)
    text = json.dumps(header)
    crc = zlib.crc32(text.encode())
    for name in sorted(tensors):
        crc = zlib.crc32(np.ascontiguousarray(tensors[name]).tobytes(), crc)
    return save(tensors, metadata={"prunus": text, "crc32": f"{crc:08x}"})


def _leaves(obj: Any, path: tuple = ()) -> list[tuple]:
    if isinstance(obj, dict):
        return [p for k, v in obj.items() for p in _leaves(v, (*path, k))] + ([path] if path else [])
    if isinstance(obj, list):
        return [p for i, v in enumerate(obj[:50]) for p in _leaves(v, (*path, i))] + ([path] if path else [])
    return [path]


def _set(obj: Any, path: tuple, value: Any) -> None:
    for key in path[:-1]:
        obj = obj[key]
    obj[path[-1]] = value


def mutations(blob: bytes, n: int, seed: int) -> Iterator[bytes]:
    """`n` seeded mutated versions of `blob` (the same ones for the same seed)."""
    rng = np.random.default_rng(seed)
    (n_header,) = struct.unpack("<Q", blob[:8]) if len(blob) >= 8 else (0,)
    for i in range(n):
        data = bytearray(blob)
        mode = i % KINDS
        if mode == 0:
            data = data[: int(rng.integers(0, max(1, len(data))))]
        elif mode == 1:
            for pos in rng.integers(0, len(data), int(rng.integers(1, 8))):
                data[pos] ^= 1 << int(rng.integers(0, 8))
        elif mode == 2:
            for pos in rng.integers(0, min(len(data), 8 + n_header), int(rng.integers(1, 4))):
                data[pos] = int(rng.integers(0, 256))
        elif mode == 3:
            pos = int(rng.integers(0, len(data)))
            if rng.random() < 0.5:
                del data[pos : pos + int(rng.integers(1, 64))]
            else:
                data[pos:pos] = rng.integers(0, 256, int(rng.integers(1, 64))).astype(np.uint8).tobytes()
        elif mode == 4:
            value = _HOSTILE[int(rng.integers(0, len(_HOSTILE)))]

            def edit(header: dict, tensors: dict, value: Any = value) -> None:
                leaves = _leaves(header)
                _set(header, leaves[int(rng.integers(0, len(leaves)))], value)

            data = bytearray(resign(bytes(data), edit) or data)
        elif mode == 6:  # a frame naming a dtype the reader must not trust
            for old in (b'"F16"', b'"U8"', b'"I64"', b'"F32"'):
                at = bytes(data).find(old, 8, 8 + n_header)
                if at >= 0:
                    new = b'"' + _DTYPES[int(rng.integers(0, len(_DTYPES)))] + b'"'
                    data[at : at + len(old)] = new
                    data[:8] = struct.pack("<Q", n_header + len(new) - len(old))
                    break
        elif mode == 7:
            shape = _SHAPES[int(rng.integers(0, len(_SHAPES)))]
            data = bytearray(resign(bytes(data), lambda header, tensors, s=shape: header.update(input_shape=s)) or data)
        elif mode == 8:
            bad = float(("nan", "inf", "-inf")[int(rng.integers(0, 3))])

            def edit(header: dict, tensors: dict, bad: float = bad) -> None:
                if "values" in tensors and tensors["values"].size:
                    t = tensors["values"].copy()
                    t[int(rng.integers(0, t.size))] = bad
                    tensors["values"] = t

            data = bytearray(resign(bytes(data), edit) or data)
        else:

            def edit(header: dict, tensors: dict) -> None:
                streams = [k for k in ("coded",) if k in tensors and tensors[k].size]  # tables + ANS streams
                if streams:
                    name = streams[int(rng.integers(0, len(streams)))]
                    t = tensors[name].copy()
                    t[int(rng.integers(0, t.size))] ^= np.uint8(1 << int(rng.integers(0, 8)))
                    tensors[name] = t

            data = bytearray(resign(bytes(data), edit) or data)
        yield bytes(data)


def fuzz_file(
    path: str | os.PathLike[str], n: int, seed: int, work_dir: str | os.PathLike[str], slow: float = 2.0
) -> dict[str, Any]:
    """Decompress `n` mutations of `path`; count the outcomes.

    Returns "format_error", "loaded", "cannot_run" (loaded, but a forward at the header's input
    shape fails or gives non-finite outputs), "slow" (loads over `slow` seconds) and
    "slowest_seconds". Any exception other than the format error propagates.
    """
    import time

    import torch

    from prunus.compress.api import decompress
    from prunus.errors import FormatError
    from prunus.models.info import get_info

    target = Path(work_dir) / "fuzz.prn"
    counts: dict[str, Any] = {"format_error": 0, "loaded": 0, "cannot_run": 0, "slow": 0, "slowest_seconds": 0.0}
    for data in mutations(Path(path).read_bytes(), n, seed):
        target.write_bytes(data)
        start = time.perf_counter()
        try:
            model = decompress(target)
        except FormatError:
            counts["format_error"] += 1
            model = None
        seconds = time.perf_counter() - start
        counts["slow"] += seconds > slow
        counts["slowest_seconds"] = max(counts["slowest_seconds"], seconds)
        if model is None:
            continue
        counts["loaded"] += 1
        try:
            with torch.no_grad():
                out = model(torch.zeros(1, *get_info(model).input_shape))
            counts["cannot_run"] += not bool(torch.isfinite(out).all())
        except (RuntimeError, ValueError, TypeError, IndexError):
            counts["cannot_run"] += 1
    return counts
