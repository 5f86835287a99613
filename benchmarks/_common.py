"""Helpers the benchmark scripts share (repository tooling: the package never imports this).

Benchmarks use prunus's public API only; what they need beyond it lives here: atomic writes of
their result files, bounded reads, one rich table, and `--set KEY=VALUE` parsing.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["parse_set", "print_table", "read_json", "read_text", "write_json", "write_text"]

MAX_BYTES = 64 << 20  # a results file or README; anything bigger is not ours


def write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write `text` to `path` atomically (temp file in the same directory + fsync + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600 files; results are shared
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_json(path: str | os.PathLike[str], obj: Any) -> None:
    """Write `obj` as indented JSON to `path` atomically."""
    write_text(path, json.dumps(obj, indent=2) + "\n")


def read_text(path: str | os.PathLike[str], what: str = "file") -> str:
    """The UTF-8 text of the regular file `path` (at most `MAX_BYTES`); ValueError naming it otherwise."""
    path = Path(path)
    if not path.is_file() or path.is_symlink():
        raise ValueError(f"{what} {path} is not a regular file")
    if path.stat().st_size > MAX_BYTES:
        raise ValueError(f"{what} {path} is larger than {MAX_BYTES:,} bytes")
    return path.read_text(encoding="utf-8")


def read_json(path: str | os.PathLike[str], what: str = "result file") -> Any:
    """`read_text` parsed as JSON (NaN/Infinity refused)."""

    def no_constants(name: str) -> Any:
        raise ValueError(f"{what} {path} holds {name}, which is not JSON")

    try:
        return json.loads(read_text(path, what), parse_constant=no_constants)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{what} {path} is not valid JSON ({exc.msg}, line {exc.lineno})") from None


def print_table(title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """A rich table on stdout (wide when stdout is not a terminal)."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for col in columns:
        table.add_column(str(col))
    for row in rows:
        table.add_row(*(f"{v:.4g}" if isinstance(v, float) else str(v) for v in row))
    console = Console()
    (console if console.is_terminal else Console(width=160)).print(table)


def parse_set(items: Sequence[str]) -> dict[str, Any]:
    """`KEY=VALUE` items -> {key: YAML value} (yaml.safe_load)."""
    import yaml

    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"expected KEY=VALUE, got {item!r}")
        out[key.strip()] = yaml.safe_load(value)
    return out
