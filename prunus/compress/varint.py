"""LEB128 varints: small non-negative integers packed into a U8 tensor (the .prn coding tables).

A symbol-count table of a 4-bit layer is 17 numbers of which most are below 16384, so two bytes
each instead of JSON digits plus commas (or 8 bytes as int64). Decoding is vectorised and
bounded: a value may take at most 9 bytes (63 bits), and a stream that ends inside a value, or
holds a longer one, raises `FormatError`.

Example:
    >>> data = pack_varints([0, 1, 127, 128, 300, 1 << 40])
    >>> data.dtype.name, data.size
    ('uint8', 13)
    >>> unpack_varints(data).tolist()
    [0, 1, 127, 128, 300, 1099511627776]
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from prunus.errors import FormatError

__all__ = ["MAX_VARINT_BYTES", "pack_varints", "unpack_varints"]

MAX_VARINT_BYTES = 9  # 63 bits: every value fits an int64


def pack_varints(values: Iterable[int]) -> np.ndarray:
    """uint8 array of the LEB128 encodings of `values` (each in [0, 2**63))."""
    out = bytearray()
    for v in values:
        v = int(v)
        if not 0 <= v < 1 << 63:
            raise ValueError(f"a varint must be in [0, 2**63), got {v}")
        while v >= 0x80:
            out.append((v & 0x7F) | 0x80)
            v >>= 7
        out.append(v)
    return np.frombuffer(bytes(out), dtype=np.uint8).copy()


def unpack_varints(data: np.ndarray) -> np.ndarray:
    """int64 array of the values `pack_varints` wrote into `data` (a 1-D uint8 array)."""
    b = np.asarray(data, dtype=np.uint8).reshape(-1)
    if b.size == 0:
        return np.zeros(0, dtype=np.int64)
    ends = np.flatnonzero(b < 0x80)
    if ends.size == 0 or ends[-1] != b.size - 1:
        raise FormatError("a varint table ends inside a value")
    starts = np.concatenate(([0], ends[:-1] + 1))
    lengths = ends - starts + 1
    if int(lengths.max()) > MAX_VARINT_BYTES:
        raise FormatError(f"a varint table holds a value longer than {MAX_VARINT_BYTES} bytes")
    pos = np.arange(b.size) - np.repeat(starts, lengths)
    parts = (b & 0x7F).astype(np.uint64) << (7 * pos).astype(np.uint64)
    return np.add.reduceat(parts, starts).astype(np.int64)
