"""Find a dataset's files on disk, or download them with checksums, or say how to get them.

Search order for dataset `name` (first directory that holds the files wins):

1. the explicit `root` (`--data-dir`), and `root/<name>` (a `root` that does not exist is an
   error, not a reason to fall back to the other places);
2. `$PRUNUS_DATA/<name>`;
3. `/usr/share/datasets/<name>` (the Debian `dataset-*` packages, e.g. `dataset-fashion-mnist`);
4. the download cache, `$PRUNUS_DATA/<name>` when that is set, else `~/.cache/prunus/<name>`;
5. a download from the dataset's mirrors into that cache, verified against the published md5
   before it is renamed into place (a partial or tampered download never becomes visible).

Setting `$PRUNUS_NO_DOWNLOAD=1` forbids step 5 everywhere (tests, offline CI). If all of that
fails, `DataNotFoundError` says in one line where it looked and how to get the files.

Example:
    >>> import tempfile
    >>> d = tempfile.mkdtemp()
    >>> locate("demo", root=d, download=False, present=lambda p: p if p.is_dir() else None, hint="").is_dir()
    True
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import os
import shutil
import tarfile
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from prunus._io.atomic import atomic_path
from prunus.errors import CorruptFileError, DataNotFoundError

__all__ = [
    "ENV_VAR",
    "NO_DOWNLOAD_ENV",
    "SYSTEM_DATA_DIRS",
    "RemoteFile",
    "RemoteSource",
    "cache_dir",
    "candidate_dirs",
    "check_root",
    "download",
    "file_digest",
    "locate",
    "search",
    "verify",
]

ENV_VAR = "PRUNUS_DATA"
# Set to anything but "" or "0" to forbid downloads everywhere (the test suite and offline CI do).
NO_DOWNLOAD_ENV = "PRUNUS_NO_DOWNLOAD"
# Module attribute (not a constant inside functions) so tests can point it at an empty directory.
SYSTEM_DATA_DIRS: tuple[Path, ...] = (Path("/usr/share/datasets"),)
_TIMEOUT_S = 60.0
_CHUNK = 1 << 20


@dataclass(frozen=True)
class RemoteFile:
    """One published file and its checksums.

    Attributes:
        name: file name as published (appended to a mirror's base URL).
        md5: md5 of the published file (what the dataset authors list).
        content_sha256: sha256 of the decompressed content, when known. It survives recompression,
            so it also identifies repackaged copies (the Debian package recompresses the gz files).
    """

    name: str
    md5: str
    content_sha256: str | None = None


@dataclass(frozen=True)
class RemoteSource:
    """Where to download a dataset: base URLs tried in order, the files, and whether to untar them."""

    mirrors: tuple[str, ...]
    files: tuple[RemoteFile, ...]
    extract: bool = False


def cache_dir(name: str) -> Path:
    """Download destination for `name`: `$PRUNUS_DATA/<name>`, else `$XDG_CACHE_HOME/prunus/<name>`."""
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env).expanduser() / name
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "prunus" / name


def candidate_dirs(name: str, root: str | os.PathLike[str] | None = None) -> list[Path]:
    """Directories searched for `name`, in order, without duplicates (see the module docstring)."""
    dirs: list[Path] = []
    if root is not None:
        dirs += [Path(root).expanduser(), Path(root).expanduser() / name]
    env = os.environ.get(ENV_VAR)
    if env:
        dirs.append(Path(env).expanduser() / name)
    dirs += [Path(d) / name for d in SYSTEM_DATA_DIRS]
    dirs.append(cache_dir(name))
    unique: list[Path] = []
    for d in dirs:
        if d not in unique:
            unique.append(d)
    return unique


def file_digest(path: str | os.PathLike[str], algorithm: str = "md5", *, decompress: bool = False) -> str:
    """Hex digest of a file (of its gunzipped content when `decompress`), read in chunks.

    Example:
        >>> import tempfile, pathlib
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "f"; _ = p.write_bytes(b"abc")
        >>> file_digest(p, "sha256")[:12]
        'ba7816bf8f01'
    """
    digest = hashlib.new(algorithm)
    opener = gzip.open if decompress else open
    with opener(path, "rb") as fh:  # type: ignore[operator]
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _fetch_one(url: str, dest: Path, md5: str) -> None:
    """Stream `url` to `dest`, hashing as it goes; the file appears only if the md5 matches."""
    digest = hashlib.md5()
    with atomic_path(dest) as tmp:
        with urllib.request.urlopen(url, timeout=_TIMEOUT_S) as response, open(tmp, "wb") as out:  # noqa: S310
            while chunk := response.read(_CHUNK):
                digest.update(chunk)
                out.write(chunk)
        if digest.hexdigest() != md5:
            raise CorruptFileError(f"checksum mismatch for {url}: md5 {digest.hexdigest()}, expected {md5}")


def download(source: RemoteSource, dest: str | os.PathLike[str]) -> Path:
    """Download every file of `source` into `dest`, verifying md5s; untar archives if asked.

    Files already present with the right md5 are not fetched again. Mirrors are tried in order.

    Args:
        source: mirrors and files.
        dest: destination directory (created).

    Returns:
        `dest` as a Path.

    Raises:
        OSError: no mirror delivered a file with the right checksum (the message lists why each failed).
    """
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    for remote in source.files:
        target = dest / remote.name
        if target.exists() and file_digest(target) == remote.md5:
            continue
        errors = []
        for mirror in source.mirrors:
            url = mirror.rstrip("/") + "/" + remote.name
            try:
                _fetch_one(url, target, remote.md5)
                break
            except (OSError, CorruptFileError, ValueError) as exc:  # URLError is an OSError
                errors.append(f"{url}: {exc}")
        else:
            raise OSError("; ".join(errors) or "no mirrors configured")
        if source.extract:
            try:
                with tarfile.open(target) as archive:
                    # filter="data" refuses absolute paths, links out of dest and device files.
                    archive.extractall(dest, filter="data")
            except tarfile.TarError as exc:
                raise OSError(f"{target}: cannot unpack the archive ({exc})") from None
            target.unlink()  # the extracted directory is what the loaders look for
    return dest


def check_root(root: str | os.PathLike[str] | None, hint: str = "") -> None:
    """A given --data-dir must exist: a typo must not silently fall back to another copy."""
    if root is not None and not Path(root).expanduser().is_dir():
        raise DataNotFoundError(f"--data-dir {root} does not exist or is not a directory. {hint}".replace("\n", " "))


def search(name: str, root: str | os.PathLike[str] | None, present: Callable[[Path], Path | None]) -> Path | None:
    """The first of `candidate_dirs(name, root)` where `present` finds the files, or None (never downloads)."""
    check_root(root)
    for d in candidate_dirs(name, root):
        with contextlib.suppress(OSError):  # an unreadable directory is just "not here"
            if d.is_dir() and (found := present(d)) is not None:
                return found
    return None


def locate(
    name: str,
    *,
    root: str | os.PathLike[str] | None,
    download: bool,
    present: Callable[[Path], Path | None],
    hint: str,
    source: RemoteSource | None = None,
) -> Path:
    """The directory holding dataset `name`'s files, searching, then downloading if allowed.

    Args:
        name: dataset name (also the sub-directory name searched for).
        root: explicit directory given by the user, or None.
        download: whether a download may be attempted.
        present: `dir -> dir that holds the files, or None`; decides what "found" means.
        hint: one sentence telling the user how to get the files (ends the error message).
        source: download mirrors and checksums, or None if the dataset cannot be downloaded.

    Raises:
        DataNotFoundError: nothing found and no download possible or successful.
    """
    check_root(root, hint)
    found = search(name, root, present)
    if found is not None:
        return found
    searched = candidate_dirs(name, root)
    if source is None:
        reason = "it cannot be downloaded"
    elif not download:
        reason = "download disabled"
    elif os.environ.get(NO_DOWNLOAD_ENV, "").strip() not in ("", "0"):
        reason = f"downloads disabled by ${NO_DOWNLOAD_ENV}"
    else:
        dest = cache_dir(name)
        try:
            _download_into(source, dest)
        except OSError as exc:
            reason = f"download failed: {exc}"
        else:
            found = present(dest)
            if found is not None:
                return found
            reason = f"the download into {dest} did not contain the expected files"
    where = ", ".join(str(d) for d in searched)
    raise DataNotFoundError(f"{name} files not found (searched {where}; {reason}). {hint}".replace("\n", " "))


def _download_into(source: RemoteSource, dest: Path) -> None:
    """`download`, removing a freshly created empty destination directory on failure."""
    existed = dest.exists()
    try:
        download(source, dest)
    except OSError:
        if not existed and dest.is_dir() and not any(dest.iterdir()):
            shutil.rmtree(dest, ignore_errors=True)
        raise


def verify(source: RemoteSource, directory: str | os.PathLike[str]) -> dict[str, bool | None]:
    """Check the files of `source` found in `directory` against their content sha256.

    Returns:
        File name -> True (matches), False (differs or unreadable), None (no content checksum known, or
        the file is not there, e.g. an archive that was unpacked).

    Example:
        >>> from prunus.data.mnist import FASHION_MNIST_SOURCE
        >>> verify(FASHION_MNIST_SOURCE, "/usr/share/datasets/fashion-mnist")  # doctest: +SKIP
        {'train-images-idx3-ubyte.gz': True, ...}
    """
    directory = Path(directory)
    result: dict[str, bool | None] = {}
    for remote in source.files:
        base = remote.name.removesuffix(".gz")
        path = next((p for p in (directory / remote.name, directory / base) if p.is_file()), None)
        if remote.content_sha256 is None or path is None:
            result[remote.name] = None
            continue
        try:
            digest = file_digest(path, "sha256", decompress=path.suffix == ".gz")
        except (OSError, EOFError):
            digest = ""
        result[remote.name] = digest == remote.content_sha256
    return result
