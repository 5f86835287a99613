"""Bounded reads every reader in prunus goes through.

`read_bytes` / `read_text` / `read_json` read only regular files, up to a size cap, and never
block: a FIFO, a device node (``/dev/zero``), a directory, a symlink loop or a file larger than
the cap is refused with a one-line `CorruptFileError` before anything is read or allocated.
(Whether a command may WRITE a path is `prunus.formats.outputs.check_output`.)

Example:
    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (d / "a.json").write_text('{"x": 1}')
    >>> read_json(d / "a.json")
    {'x': 1}
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

from prunus.errors import CorruptFileError

__all__ = ["MAX_CONFIG_BYTES", "MAX_JSON_BYTES", "MAX_LOG_BYTES", "file_kind", "read_bytes", "read_json", "read_text"]

MAX_JSON_BYTES = 16 << 20  # model.json, summary.json: a pruning history of a large model fits in far less
MAX_CONFIG_BYTES = 1 << 20  # a recipe or --config YAML
MAX_LOG_BYTES = 64 << 20  # metrics.jsonl: ~100k epochs of records


def file_kind(mode: int) -> str:
    """'a directory', 'a FIFO', 'a device', ... for a stat mode (for messages)."""
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISREG(mode):
        return "a file"
    return "not a regular file"


def read_bytes(path: str | os.PathLike[str], max_bytes: int, what: str = "file") -> bytes:
    """The content of the regular file `path`, refusing anything else and anything over `max_bytes`.

    O_NONBLOCK makes opening a FIFO return at once instead of waiting for a writer; the type
    and size are checked on the open descriptor, so a swap after the check cannot slip through.
    """
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise CorruptFileError(f"{what} not found: {path}") from None
    except OSError as exc:
        raise CorruptFileError(f"cannot read {what} {path}: {exc.strerror}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise CorruptFileError(f"{what} {path} is {file_kind(info.st_mode)}, not a regular file")
        if info.st_size > max_bytes:
            raise CorruptFileError(f"{what} {path} is {info.st_size:,} bytes; the limit is {max_bytes:,}")
        chunks, left = [], max_bytes + 1
        while left > 0 and (chunk := os.read(fd, min(left, 1 << 20))):
            chunks.append(chunk)
            left -= len(chunk)
    except IsADirectoryError:
        raise CorruptFileError(f"{what} {path} is a directory, not a regular file") from None
    except OSError as exc:
        raise CorruptFileError(f"cannot read {what} {path}: {exc.strerror}") from None
    finally:
        os.close(fd)
    data = b"".join(chunks)
    if len(data) > max_bytes:  # the file grew while we read it
        raise CorruptFileError(f"{what} {path} is larger than the limit of {max_bytes:,} bytes")
    return data


def read_text(path: str | os.PathLike[str], max_bytes: int, what: str = "file") -> str:
    """`read_bytes` decoded as UTF-8; a binary file is a one-line `CorruptFileError`."""
    data = read_bytes(path, max_bytes, what)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CorruptFileError(f"{what} {path} is not UTF-8 text (byte {exc.start})") from None


def read_json(path: str | os.PathLike[str], max_bytes: int = MAX_JSON_BYTES, what: str = "JSON file") -> Any:
    """`read_text` parsed as JSON (NaN/Infinity literals refused: they are not JSON)."""
    text = read_text(path, max_bytes, what)

    def no_constants(name: str) -> Any:
        raise ValueError(f"{name} is not valid JSON")

    try:
        return json.loads(text, parse_constant=no_constants)
    except json.JSONDecodeError as exc:
        raise CorruptFileError(f"{what} {path} is not valid JSON ({exc.msg}, line {exc.lineno})") from None
    except (ValueError, RecursionError) as exc:
        raise CorruptFileError(f"{what} {path} is not valid JSON ({exc})") from None
