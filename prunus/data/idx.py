"""Read and write IDX files (the MNIST / Fashion-MNIST format), optionally gzip-compressed.

Format: two zero bytes, a type code, the number of dimensions `d`, then `d` big-endian uint32
sizes, then the values in C order, big-endian. Every structural problem (truncated gzip stream,
bad magic, data shorter or longer than the header promises) raises `CorruptFileError` naming the
file, so a half-finished download never turns into a confusing shape error later.

Example:
    >>> import numpy as np, tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "x-idx3-ubyte.gz"
    >>> write_idx(path, np.arange(24, dtype=np.uint8).reshape(2, 3, 4))
    >>> read_idx(path).shape
    (2, 3, 4)
"""

from __future__ import annotations

import gzip
import os
import struct
import zlib
from pathlib import Path

import numpy as np

from prunus._io.atomic import atomic_path
from prunus.errors import CorruptFileError

__all__ = ["read_idx", "write_idx"]

# IDX type code -> big-endian numpy dtype.
_CODES: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def _read_bytes(path: Path) -> bytes:
    """Whole file contents, gunzipped when the name ends in .gz or the gzip magic is present."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise CorruptFileError(f"{path}: file disappeared while reading") from None
    if path.suffix != ".gz" and raw[:2] != b"\x1f\x8b":
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as exc:  # BadGzipFile is an OSError; EOFError = truncated
        raise CorruptFileError(f"{path}: not a valid gzip file ({exc or 'truncated stream'})") from None


def read_idx(path: str | os.PathLike[str], *, ndim: int | None = None) -> np.ndarray:
    """Read an IDX file (plain or .gz) into a native-endian numpy array.

    Args:
        path: the file.
        ndim: if given, the number of dimensions the file must have (3 for images, 1 for labels).

    Returns:
        The array, shaped as the header says.

    Raises:
        CorruptFileError: truncated or corrupt gzip stream, bad magic, unknown type code, wrong
            number of dimensions, or a data length that does not match the header.

    Example:
        >>> read_idx("/usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz").shape  # doctest: +SKIP
        (10000,)
    """
    path = Path(path)
    data = _read_bytes(path)
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise CorruptFileError(f"{path}: not an IDX file (bad magic {data[:4].hex() or 'empty'})")
    code, dims = data[2], data[3]
    if code not in _CODES:
        raise CorruptFileError(f"{path}: unknown IDX type code 0x{code:02x}")
    if ndim is not None and dims != ndim:
        raise CorruptFileError(f"{path}: expected a {ndim}-dimensional IDX file, found {dims} dimensions")
    header = 4 + 4 * dims
    if len(data) < header:
        raise CorruptFileError(f"{path}: truncated IDX header")
    shape = struct.unpack(f">{dims}I", data[4:header])
    dtype = _CODES[code]
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    found = len(data) - header
    if found != expected:
        raise CorruptFileError(
            f"{path}: IDX data has {found} bytes but the header {tuple(shape)} needs {expected} (truncated or corrupt)"
        )
    array = np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)
    return array.astype(dtype.newbyteorder("="))  # a writable native-endian copy (frombuffer is read-only)


def write_idx(path: str | os.PathLike[str], array: np.ndarray) -> None:
    """Write `array` as an IDX file (gzip-compressed when `path` ends in .gz), atomically.

    Args:
        path: destination.
        array: any array whose dtype has an IDX type code (uint8, int8, int16, int32, float32, float64).

    Example:
        >>> import numpy as np, tempfile, pathlib
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "labels-idx1-ubyte"
        >>> write_idx(p, np.array([3, 1], dtype=np.uint8)); read_idx(p).tolist()
        [3, 1]
    """
    path = Path(path)
    array = np.ascontiguousarray(array)
    by_kind = {dt.newbyteorder("="): code for code, dt in _CODES.items()}
    code = by_kind.get(array.dtype.newbyteorder("="))
    if code is None:
        raise ValueError(f"IDX cannot store dtype {array.dtype}")
    header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    payload = header + array.astype(_CODES[code], copy=False).tobytes()
    if path.suffix == ".gz":
        payload = gzip.compress(payload, mtime=0)  # mtime=0: identical arrays give identical files
    with atomic_path(path) as tmp:
        tmp.write_bytes(payload)
