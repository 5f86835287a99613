"""The two file guards every reader and writer in prunus goes through.

`read_bytes` / `read_text` / `read_json` read only regular files, up to a size cap, and never
block: a FIFO, a device node (``/dev/zero``), a directory, a symlink loop or a file larger than
the cap is refused with a one-line `CorruptFileError` before anything is read or allocated.

`check_output` decides whether a command may write to a path. It is called for every output a
command declares (see `prunus.cli._common.add_output_arg`) before the command runs, so a refused
output leaves the file system exactly as it was. The rules:

- a missing path is fine when its parent is (or can become) a directory we can create files in
  (probed with an unnamed temporary file, so a read-only mount, an immutable directory or
  ``/proc`` is refused even for root);
- an existing path is replaced only with ``force=True``, only when it is a regular file (kind
  "file") or a prunus model/run directory (kind "model"/"run"), and never when it is a device
  node, a FIFO, a socket, a symlink, a directory of someone else's files, a file that cannot be
  written (read-only, immutable) or one of the command's own inputs (``prunus prune M --out M``);
- a run directory may always be continued with ``resume=True``;
- kind "rewrite" is a file a command updates by design (``prunus report --readme README.md``
  rewrites a block of it): an existing writable regular file is accepted without ``force``,
  anything else that exists is refused as for "file";
- kind "pipeline" is a ``prunus run`` directory, resumed by rerunning: a new path, an empty
  directory or a directory holding a pipeline's ``recipe.yaml`` is accepted without ``force``;
  a file, a symlink or a directory of someone else's files is refused.

Example:
    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (d / "a.json").write_text('{"x": 1}')
    >>> read_json(d / "a.json")
    {'x': 1}
    >>> check_output(d / "new.json", "file")
    >>> check_output(d / "a.json", "file")
    Traceback (most recent call last):
    ...
    prunus.errors.ConfigError: output ... already exists; pass --force to replace it
"""

from __future__ import annotations

import json
import os
import re
import stat
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from prunus._atomic import is_temp_name
from prunus.errors import ConfigError, CorruptFileError

__all__ = [
    "MAX_CONFIG_BYTES",
    "MAX_JSON_BYTES",
    "MAX_LOG_BYTES",
    "MODEL_DIR_FILES",
    "OUTPUT_KINDS",
    "PIPELINE_MARKER",
    "RUN_DIR_FILES",
    "check_output",
    "read_bytes",
    "read_json",
    "read_text",
]

MAX_JSON_BYTES = 16 << 20  # model.json, summary.json: a pruning history of a large model fits in far less
MAX_CONFIG_BYTES = 1 << 20  # a recipe or --config YAML
MAX_LOG_BYTES = 64 << 20  # metrics.jsonl: ~100k epochs of records

OUTPUT_KINDS = ("file", "rewrite", "model", "run", "pipeline")
# the file that makes a directory a `prunus run` directory (the resolved recipe, written first)
PIPELINE_MARKER = "recipe.yaml"
# What prunus itself puts in a model directory and in a run directory (anything else is the user's).
MODEL_DIR_FILES = frozenset({"model.json", "model.safetensors", "model.onnx", "model.pt", "finetune"})
RUN_DIR_FILES = frozenset({"config.yaml", "metrics.jsonl", "checkpoint.pt", "summary.json", "model"})
# a population run (train --networks N) keeps network k's run in net<k>/
_NETWORK_DIR = re.compile(r"net\d+")
# never an output inside an input directory (exports such as model.onnx may sit next to the model)
_PROTECTED = frozenset({"model.json", "model.safetensors", "finetune"}) | RUN_DIR_FILES


def _kind(mode: int) -> str:
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
            raise CorruptFileError(f"{what} {path} is {_kind(info.st_mode)}, not a regular file")
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


def _inside(path: Path, other: Path) -> bool:
    return path == other or other in path.parents


def check_output(
    path: str | os.PathLike[str],
    kind: str,
    *,
    force: bool = False,
    resume: bool = False,
    sources: Iterable[str | os.PathLike[str]] = (),
    flag: str = "output",
) -> None:
    """Raise `ConfigError` unless a command may write `path` (see the module docstring).

    Args:
        path: the output path as the user gave it.
        kind: one of `OUTPUT_KINDS`: "file" (one file written atomically), "rewrite" (a file the
            command updates by design), "model" (a model directory, replaced as one unit), "run"
            (a training run directory: config.yaml, metrics.jsonl, checkpoint, model/) or
            "pipeline" (a `prunus run` directory, resumed by rerunning).
        force: the user asked to replace an existing output.
        resume: the command continues the run in `path` (kind "run" only).
        sources: the command's inputs; the output may neither be one of them nor contain one.
        flag: the option's name, for the message.
    """
    if kind not in OUTPUT_KINDS:
        raise ValueError(f"unknown output kind {kind!r}")
    path = Path(path)
    where = f"{flag} {path}"
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        info = None
    except OSError as exc:
        raise ConfigError(f"{where} cannot be used: {exc.strerror}") from None
    resolved = _resolve(path, where)
    for src in sources:
        src_path = _resolve(Path(src), str(src))
        # an export next to the model it came from (MODEL_DIR/model.onnx) is fine; the model's own
        # files, the input itself, or a directory holding the input are not
        beside = kind == "file" and resolved.parent == src_path and resolved.name not in _PROTECTED
        if _inside(src_path, resolved) or (_inside(resolved, src_path) and not beside):
            raise ConfigError(f"{where} overlaps the input {src}; choose another output")
    if info is None:
        _check_parent(path, where)
        return
    if stat.S_ISLNK(info.st_mode):
        raise ConfigError(f"{where} is a symlink; prunus does not write through links, choose another path")
    if kind in ("file", "rewrite"):
        if not stat.S_ISREG(info.st_mode):
            raise ConfigError(f"{where} exists and is {_kind(info.st_mode)}; choose a file path")
        if kind == "file" and not force:
            raise ConfigError(f"{where} already exists; pass --force to replace it")
        if not os.access(path, os.W_OK):  # read-only or immutable (chattr +i): even root may not replace it
            raise ConfigError(f"{where} is not writable; prunus does not replace it")
        _check_parent(path, where)
        return
    if not stat.S_ISDIR(info.st_mode):
        raise ConfigError(f"{where} exists and is not a directory ({_kind(info.st_mode)}); choose a directory path")
    if kind == "pipeline":
        _check_pipeline_dir(path, where)
        return
    try:
        entries = {e.name: e for e in os.scandir(path) if not is_temp_name(e.name)}
    except OSError as exc:
        raise ConfigError(f"{where} cannot be listed: {exc.strerror}") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise ConfigError(f"{where} is not writable")
    _probe(path, where)
    if kind == "model":
        _check_parent(path, where)  # the new model directory is built next to the old one
    if not entries:
        return
    ours = MODEL_DIR_FILES if kind == "model" else RUN_DIR_FILES
    foreign = sorted(n for n in entries if n not in ours and not (kind == "run" and _NETWORK_DIR.fullmatch(n)))
    if foreign:
        raise ConfigError(
            f"{where} holds files prunus did not write ({', '.join(foreign[:3])}); choose an empty or new directory"
        )
    links = sorted(n for n, e in entries.items() if e.is_symlink())
    if links:
        raise ConfigError(f"{where} contains the symlink {links[0]}; prunus does not write through links")
    if kind == "run" and resume:
        return
    if kind == "run" and ("checkpoint.pt" in entries or (path / "net0" / "checkpoint.pt").exists()):
        raise ConfigError(f"{where} already holds a run; pass --resume to continue it or choose another directory")
    if kind == "model" and "model.json" in entries and not force:
        raise ConfigError(f"{where} already holds a model; pass --force to replace it")
    if kind == "run" and "model" in entries and not force:
        raise ConfigError(f"{where} already holds a finished run; pass --force to replace it")


def _check_pipeline_dir(path: Path, where: str) -> None:
    """An existing directory as a `prunus run` directory: empty, or holding a pipeline's recipe.yaml."""
    try:
        names = [n for n in os.listdir(path) if not is_temp_name(n)]
    except OSError as exc:
        raise ConfigError(f"{where} cannot be listed: {exc.strerror}") from None
    if names:
        try:
            recipe = os.lstat(path / PIPELINE_MARKER)
        except OSError:
            recipe = None
        if recipe is None or not stat.S_ISREG(recipe.st_mode):
            raise ConfigError(
                f"{where} holds files no pipeline wrote (no {PIPELINE_MARKER}); choose an empty or new directory"
            )
    if not os.access(path, os.W_OK | os.X_OK):
        raise ConfigError(f"{where} is not writable")
    _probe(path, where)


def _probe(directory: Path, where: str) -> None:
    """Create (and drop) an unnamed file in `directory`: only the file system knows whether it can be written.

    os.access says yes to root on a read-only mount such as /proc or /sys; O_TMPFILE makes no
    directory entry, so the probe leaves nothing behind (Python falls back to create + unlink where
    the file system lacks it).
    """
    import tempfile

    try:
        with tempfile.TemporaryFile(dir=directory):
            pass
    except OSError as exc:
        raise ConfigError(f"{where} cannot be created: {directory} is not writable ({exc.strerror})") from None


def _resolve(path: Path, where: str) -> Path:
    try:
        return path.resolve()
    except (RuntimeError, OSError):  # Python < 3.13 raises RuntimeError for a symlink loop
        raise ConfigError(f"{where} is a symlink loop") from None


def _check_parent(path: Path, where: str) -> None:
    parent = path.parent
    while not parent.exists():  # the writer creates missing parents: check the first that exists
        if parent == parent.parent:
            break
        parent = parent.parent
    if not parent.is_dir():
        raise ConfigError(f"{where} cannot be created: {parent} is not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ConfigError(f"{where} cannot be created: {parent} is not writable")
    _probe(parent, where)
