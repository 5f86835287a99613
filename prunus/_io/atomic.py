"""Atomic writes: write to a temporary file (or directory) next to the target, fsync, then rename.

A crash mid-write leaves either the old file or the new one, never a truncated mix. `atomic_dir`
does the same for a whole directory (a model = weights + model.json): the new directory is
built next to the old one and swapped in with one `renameat2(RENAME_EXCHANGE)` call, so a
reader sees the old pair or the new pair, never one file of each.

Temporary names are `.<name>.<pid>.<random>.tmp`. A write killed half-way leaves one behind; the
next atomic write into the same directory removes those whose process is gone.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

__all__ = [
    "CRASH_ENV",
    "atomic_dir",
    "atomic_path",
    "clean_dead_temps",
    "clean_stale_temps",
    "crash_point",
    "is_temp_name",
    "write_bytes",
    "write_json",
    "write_text",
]

# Tests set this to "LABEL#N" to SIGKILL the process the N-th time `crash_point(LABEL)` is reached
# (the kill tests in tests/_io/test_crash_safety.py); unset, `crash_point` is one dict lookup.
CRASH_ENV = "PRUNUS_CRASH_AT"
_crash_counts: dict[str, int] = {}


def crash_point(label: str) -> None:
    """Die here, as a power cut would, when $PRUNUS_CRASH_AT names this point (tests only)."""
    target = os.environ.get(CRASH_ENV)
    if not target:
        return
    name, _, nth = target.partition("#")
    if name != label:
        return
    _crash_counts[label] = _crash_counts.get(label, 0) + 1
    if _crash_counts[label] == int(nth or 1):
        import signal

        os.kill(os.getpid(), signal.SIGKILL)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path next to `path`; on success it replaces `path` atomically.

    Example:
        >>> import tempfile, pathlib
        >>> target = pathlib.Path(tempfile.mkdtemp()) / "x.txt"
        >>> with atomic_path(target) as tmp:
        ...     _ = tmp.write_text("hello")
        >>> target.read_text()
        'hello'
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    clean_stale_temps(path)
    fd, tmp_name = tempfile.mkstemp(prefix=_temp_prefix(path), suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        # mkstemp makes 0600 files (and some writers recreate the file): give the result the
        # permissions a plain open() would, 0666 & ~umask, after the writer is done
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        with open(tmp, "rb+") as fh:  # flush to disk before the rename makes it visible
            os.fsync(fh.fileno())
        crash_point(f"write:{path.name}")
        os.replace(tmp, path)  # atomic: a reader sees the old file or the new one, never a part
    finally:
        if tmp.exists():
            tmp.unlink()


def is_temp_name(name: str) -> bool:
    """Whether `name` is a temporary file/directory of an atomic write (finished or interrupted)."""
    return name.startswith(".") and name.endswith(".tmp")


def _temp_prefix(path: Path) -> str:
    return f".{path.name}.{os.getpid()}."


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def clean_stale_temps(path: str | os.PathLike[str]) -> list[Path]:
    """Remove leftovers of interrupted atomic writes of `path` whose writer process is gone.

    Only names of the form `.<name>.<pid>.<random>.tmp` next to `path` are considered, and only
    when no process `<pid>` exists, so a concurrent writer's temporary file is never touched.
    Returns what was removed.
    """
    path = Path(path)
    prefix = f".{path.name}."
    removed = []
    with contextlib.suppress(OSError):
        for entry in os.scandir(path.parent):
            name = entry.name
            if not (name.startswith(prefix) and name.endswith(".tmp")):
                continue
            pid = name[len(prefix) :].split(".", 1)[0]
            if not pid.isdigit() or _alive(int(pid)):
                continue
            with contextlib.suppress(OSError):
                if entry.is_dir(follow_symlinks=False):
                    shutil.rmtree(entry.path)
                else:
                    os.unlink(entry.path)
                removed.append(Path(entry.path))
    return removed


def clean_dead_temps(directory: str | os.PathLike[str]) -> list[Path]:
    """Remove every leftover of an interrupted atomic write directly in `directory` whose writer is gone.

    `clean_stale_temps` does this for one target name when it is written again; a stage that is
    rerun after a kill calls this for its whole directory, so a temporary model directory left by
    a kill during a swap does not stay behind when the same path is never written again.
    """
    removed: list[Path] = []
    with contextlib.suppress(OSError):
        for entry in os.scandir(directory):
            if is_temp_name(entry.name) and entry.name.count(".") >= 3:  # .<name>.<pid>.<random>.tmp
                removed += clean_stale_temps(Path(directory) / entry.name[1:].rsplit(".", 3)[0])
    return removed


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two existing paths (Linux renameat2 RENAME_EXCHANGE); False if unsupported."""
    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    at_fdcwd, rename_exchange = -100, 2
    if fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):
        return False
    raise OSError(err, os.strerror(err), str(b))


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike[str], keep: tuple[str, ...] = ()) -> Iterator[Path]:
    """Yield an empty temporary directory next to `path`; on success it replaces `path` as one unit.

    Entries of the old `path` named in `keep` are moved into the new directory first (a model
    directory's `finetune/` run). The caller decides whether `path` may be replaced at all.

    Example:
        >>> import tempfile, pathlib
        >>> target = pathlib.Path(tempfile.mkdtemp()) / "model"
        >>> with atomic_dir(target) as tmp:
        ...     _ = (tmp / "a.txt").write_text("new")
        >>> sorted(p.name for p in target.iterdir())
        ['a.txt']
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    clean_stale_temps(path)
    tmp = Path(tempfile.mkdtemp(prefix=_temp_prefix(path), suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes 0700 directories
        for entry in tmp.iterdir():
            if entry.is_file():
                os.chmod(entry, 0o666 & ~umask)  # some writers (safetensors) make private 0600 files
                with open(entry, "rb+") as fh:
                    os.fsync(fh.fileno())
        for name in keep:
            if (path / name).exists():
                os.replace(path / name, tmp / name)
        _fsync_dir(tmp)
        crash_point(f"dir-written:{path.name}")
        if not path.exists():
            os.replace(tmp, path)
        elif not _exchange(tmp, path):
            # no atomic swap on this system: the old directory is moved aside for an instant
            aside = Path(tempfile.mkdtemp(prefix=_temp_prefix(path), suffix=".tmp", dir=path.parent))
            os.replace(path, aside / "old")
            os.replace(tmp, path)
            shutil.rmtree(aside, ignore_errors=True)
        _fsync_dir(path.parent)
        crash_point(f"dir-swapped:{path.name}")
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)  # after a swap this is the old directory


def _write(path: str | os.PathLike[str], writer: Callable[[Path], Any]) -> None:
    with atomic_path(path) as tmp:
        writer(tmp)


def write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Atomically write `data` to `path`."""
    _write(path, lambda p: p.write_bytes(data))


def write_text(path: str | os.PathLike[str], text: str) -> None:
    """Atomically write `text` (UTF-8) to `path`."""
    _write(path, lambda p: p.write_text(text, encoding="utf-8"))


def write_json(path: str | os.PathLike[str], obj: Any) -> None:
    """Atomically write `obj` as indented JSON to `path`."""
    write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")
