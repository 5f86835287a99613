"""The output guard: whether a command may write a path, decided before it runs.

`check_output` decides whether a command may write to a path. It is called for every output a
command declares (see `prunus.cli._common.add_output_arg`) before the command runs, so a refused
output leaves the file system exactly as it was. The rules:

- a missing path is fine when its parent is (or can become) a directory we can create files in
  (probed with an unnamed temporary file, so a read-only mount, an immutable directory or
  ``/proc`` is refused even for root);
- an existing path is replaced only with ``force=True``, only when it is a file prunus wrote
  (kind "file": recognised by its format, `written_by_prunus`) or a prunus model/run directory
  (kind "model"/"run"), and never when it is a device
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
    >>> check_output(d / "new.json", "file")
    >>> check_output(d / "a.json", "file")
    Traceback (most recent call last):
    ...
    prunus.errors.ConfigError: output ... already exists; pass --force to replace it
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Iterable
from pathlib import Path

from prunus._io.atomic import is_temp_name
from prunus._io.safe import file_kind as _kind
from prunus.errors import ConfigError
from prunus.formats.model_dir import MODEL_DIR_FILES
from prunus.formats.run_dir import RECIPE as PIPELINE_MARKER
from prunus.formats.run_dir import RUN_FILES as RUN_DIR_FILES
from prunus.formats.run_dir import RunDir

__all__ = ["OUTPUT_KINDS", "check_output", "written_by_prunus"]

OUTPUT_KINDS = ("file", "rewrite", "model", "run", "pipeline")
# a population run (train --networks N) keeps network k's run in net<k>/
_NETWORK_DIR = re.compile(r"net\d+")
# never an output inside an input directory (exports such as model.onnx may sit next to the model)
_PROTECTED = frozenset({"model.json", "model.safetensors", "finetune"}) | RUN_DIR_FILES


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
        if kind == "file" and not written_by_prunus(path):
            raise ConfigError(
                f"{where} was not written by prunus (no prunus marker in it); --force replaces only prunus's own "
                "files: move or delete it yourself"
            )
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
    run = RunDir(path)
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
    if kind == "run" and (run.checkpoint.name in entries or run.network(0).checkpoint.exists()):
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


MAX_SNIFF_BYTES = 64 << 20  # how much of a file the marker is looked for in


def _prn_marker(path: Path) -> bool:
    import json
    import struct

    with open(path, "rb") as fh:
        head = fh.read(8)
        if len(head) != 8:
            return False
        (n,) = struct.unpack("<Q", head)
        if n > 16 << 20:
            return False
        try:
            meta = json.loads(fh.read(n).decode("utf-8")).get("__metadata__", {})
            return json.loads(meta.get("prunus", "{}")).get("format") == "prunus-prn"
        except (ValueError, AttributeError):
            return False


def _onnx_marker(path: Path) -> bool:
    # metadata_props entry {key: "prunus", value: version}: key field 1 (0x0a), length 6, then value field 2 (0x12)
    with open(path, "rb") as fh:
        return b"\n\x06prunus\x12" in fh.read(MAX_SNIFF_BYTES)


def _torchscript_marker(path: Path) -> bool:
    import zipfile

    try:
        with zipfile.ZipFile(path) as z:
            return any(name.endswith("/extra/prunus.json") for name in z.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


def _json_marker(path: Path) -> bool:

    from prunus._io.safe import read_json

    try:
        data = read_json(path, MAX_SNIFF_BYTES, "output")
    except Exception:  # noqa: BLE001 - anything unreadable is simply not ours
        return False
    return isinstance(data, dict) and (
        isinstance(data.get("prunus"), str) or str(data.get("format", "")).startswith("prunus-")
    )


def _openvino_xml_marker(path: Path) -> bool:
    # the IR's <rt_info> holds <prunus value="VERSION"/> (set by prunus.deploy.openvino_ir before saving)
    with open(path, "rb") as fh:
        return re.search(rb"<rt_info>.*<prunus value=", fh.read(MAX_SNIFF_BYTES), re.S) is not None


def _openvino_bin_marker(path: Path) -> bool:
    # raw weights hold no metadata: they are prunus's when the graph they belong to (NAME.xml) is
    xml = path.with_suffix(".xml")
    return xml.is_file() and not xml.is_symlink() and _openvino_xml_marker(xml)


#: file suffix -> how prunus recognises its own file of that kind (the writers put these markers in)
_MARKERS = {
    ".prn": _prn_marker,
    ".onnx": _onnx_marker,
    ".pt": _torchscript_marker,
    ".json": _json_marker,
    ".xml": _openvino_xml_marker,
    ".bin": _openvino_bin_marker,
}


def written_by_prunus(path: str | os.PathLike[str]) -> bool:
    """Whether the regular file `path` carries the marker prunus puts in every file it writes.

    .prn: its versioned header; .onnx: `metadata_props["prunus"]`; .pt (TorchScript): the extra
    file `prunus.json`; .json: a `prunus` version or a `prunus-*` format field; OpenVINO .xml: a
    `prunus` entry in its `<rt_info>`, and .bin: the .xml of the same name is prunus's. Any other file,
    or one without the marker, is someone else's: `--force` does not replace it.

    Example:
        >>> import tempfile, pathlib
        >>> f = pathlib.Path(tempfile.mkdtemp()) / "x.onnx"
        >>> _ = f.write_text("not an onnx file")
        >>> written_by_prunus(f)
        False
    """
    path = Path(path)
    sniff = _MARKERS.get(path.suffix.lower())
    if sniff is None:
        return False
    try:
        return bool(sniff(path))
    except OSError:
        return False
