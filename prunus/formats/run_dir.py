"""The one owner of a run directory: it names, writes and reads every file of a run.

Nothing else in prunus spells a run file's name. The trainer, the population runner, the stages,
the pipeline runner, the report, `prunus info` / `eval` and the benchmarks hold a `RunDir` and
ask it for paths, records and logs.

A training run (`prunus train`, or a training stage's directory)::

    config.yaml          the resolved RunConfig
    metrics.jsonl        one JSON record per epoch (`read_metrics`: the one reader)
    checkpoint.pt        the last epoch's checkpoint (checkpoint.prev.pt: the one before, populations)
    summary.json         final metrics, written after model/
    model/               the final model (safetensors + JSON)
    net<k>/              network k of a population run (a run directory of its own)
    round<r>/            round r of a C-SGD stage in rounds (a run directory of its own)

A pipeline (`prunus run`, or a command that runs stages)::

    recipe.yaml                  the resolved recipe: what makes a directory a pipeline's
    <arm>/seed<s>/<NN>-<stage>/  one directory per stage of each chain ("sweep" layout)
    <NN>-<stage>/                the same for a single chain ("single" layout, commands)
        stage.start.json         what the stage was started with (a rerun after a kill checks it)
        compress.checkpoint.safetensors  a compress stage's DE search after its last finished cycle
                                 (a rerun after a kill resumes from it; removed when the stage is done)
        stage.json               completion record, written last and atomically
    records.json                 one record per finished (arm, seed) chain
    <report stage>/              report.html, summary.md

Safety: names given by a recipe (arms, stages) are checked (`check_name`) so no path leaves the
root, and `check_no_links` refuses a symlink anywhere inside, so a finished stage replaced by a
link to another folder is never followed. Writes are atomic (`prunus._io.atomic`).

Example:
    >>> import tempfile
    >>> run = RunDir(tempfile.mkdtemp())
    >>> run.write_metrics([{"epoch": 0, "val_acc": 0.5}])
    >>> run.read_metrics()
    [{'epoch': 0, 'val_acc': 0.5}]
    >>> run.network(1).root.name, run.stage("main", 0, 2, "prune").root.parts[-3:]
    ('net1', ('main', 'seed0', '02-prune'))
"""

from __future__ import annotations

import json
import os
import re
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from prunus._io.atomic import is_temp_name, write_json, write_text
from prunus._io.safe import MAX_JSON_BYTES, MAX_LOG_BYTES, read_json, read_text
from prunus.errors import ConfigError, CorruptFileError

__all__ = ["LAYOUTS", "MAX_NAME_LENGTH", "RUN_FILES", "RunDir", "check_name", "resolve_model_dir"]

CONFIG = "config.yaml"
METRICS = "metrics.jsonl"
CHECKPOINT = "checkpoint.pt"
PREVIOUS_CHECKPOINT = "checkpoint.prev.pt"
SUMMARY = "summary.json"
MODEL = "model"
RECIPE = "recipe.yaml"
RECORD = "stage.json"
STARTED = "stage.start.json"
RECORDS = "records.json"
REPORT_HTML = "report.html"
REPORT_MD = "summary.md"
PRN = "model.prn"
COMPRESS_CHECKPOINT = "compress.checkpoint.safetensors"  # the DE search's per-cycle checkpoint
ONNX = "model.onnx"
TORCHSCRIPT = "model.pt"
OPENVINO = "model.xml"  # OpenVINO IR: the graph; its weights are the same name with .bin
OPENVINO_WEIGHTS = "model.bin"
BENCH = "bench.json"
#: what prunus writes at the top of a training run directory (anything else there is someone else's)
RUN_FILES = frozenset({CONFIG, METRICS, CHECKPOINT, SUMMARY, MODEL})
#: directory layouts of a pipeline: one directory per (arm, seed) chain, or one chain flat
LAYOUTS = ("sweep", "single")
MAX_NAME_LENGTH = 100  # arm and stage names become directory names: keep them well under NAME_MAX
MAX_RECORD_BYTES = 16 << 20
RECORD_FORMAT = "prunus-stage"  # a kind of prunus.formats.header
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+=,@_-]*")
_NETWORK = re.compile(r"net(\d+)")
_ROUND = re.compile(r"round(\d+)")


def check_name(what: str, name: Any) -> str:
    """A recipe-given name (arm, stage) that is safe as one directory name; `ConfigError` otherwise.

    Letters, digits and `._+=,@-`, starting with a letter or digit, at most `MAX_NAME_LENGTH`
    characters: no separator, no `..`, no NUL, no name a shell or another tool would misread.

    Example:
        >>> check_name("stage", "prune-2")
        'prune-2'
        >>> check_name("stage", "../x")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        prunus.errors.ConfigError: stage name '../x' is not valid: use letters, digits and ._+=,@_- ...
    """
    if not isinstance(name, str) or len(name) > MAX_NAME_LENGTH or not _NAME.fullmatch(name) or ".." in name:
        shown = name if not isinstance(name, str) else name[:40] + ("..." if len(name) > 40 else "")
        raise ConfigError(
            f"{what} name {shown!r} is not valid: use letters, digits and ._+=,@_- (starting with a letter or "
            f"digit), at most {MAX_NAME_LENGTH} characters"
        )
    return name


class RunDir:
    """The files of one run directory (see the module docstring for the layout).

    Args:
        root: The directory (it need not exist yet; nothing is created until something is written).
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"RunDir({str(self.root)!r})"

    def __fspath__(self) -> str:
        return os.fspath(self.root)

    # --- the files of a training run --------------------------------------------------------
    @property
    def config(self) -> Path:
        return self.root / CONFIG

    @property
    def metrics(self) -> Path:
        return self.root / METRICS

    @property
    def checkpoint(self) -> Path:
        return self.root / CHECKPOINT

    @property
    def previous_checkpoint(self) -> Path:
        return self.root / PREVIOUS_CHECKPOINT

    @property
    def summary(self) -> Path:
        return self.root / SUMMARY

    @property
    def model(self) -> Path:
        return self.root / MODEL

    # --- the files a stage or a pipeline writes ---------------------------------------------
    @property
    def recipe(self) -> Path:
        return self.root / RECIPE

    @property
    def record(self) -> Path:
        return self.root / RECORD

    @property
    def started(self) -> Path:
        """What a stage was started with (its hash and settings), written before it runs."""
        return self.root / STARTED

    @property
    def records(self) -> Path:
        return self.root / RECORDS

    @property
    def report_html(self) -> Path:
        return self.root / REPORT_HTML

    @property
    def report_md(self) -> Path:
        return self.root / REPORT_MD

    @property
    def prn(self) -> Path:
        return self.root / PRN

    @property
    def compress_checkpoint(self) -> Path:
        """The compress stage's DE checkpoint (`prunus.compress.checkpoint`), removed when the stage is done."""
        return self.root / COMPRESS_CHECKPOINT

    @property
    def onnx(self) -> Path:
        return self.root / ONNX

    @property
    def torchscript(self) -> Path:
        return self.root / TORCHSCRIPT

    @property
    def openvino(self) -> Path:
        """OpenVINO IR graph; `openvino_weights` is its .bin (OpenVINO pairs them by name)."""
        return self.root / OPENVINO

    @property
    def openvino_weights(self) -> Path:
        return self.root / OPENVINO_WEIGHTS

    @property
    def bench(self) -> Path:
        return self.root / BENCH

    def file(self, name: str) -> Path:
        """A file directly in this directory, by a name this module defines or a checked one."""
        return self.root / check_name("file", name)

    # --- sub-directories ----------------------------------------------------------------------
    def network(self, k: int) -> RunDir:
        """Network `k` of a population run."""
        return RunDir(self.root / f"net{int(k)}")

    def networks(self) -> list[RunDir]:
        """The population's network directories that exist, in order (empty for a single run)."""
        return self._numbered(_NETWORK)

    def round(self, r: int) -> RunDir:
        """Round `r` of a C-SGD stage run in rounds."""
        return RunDir(self.root / f"round{int(r)}")

    def rounds(self) -> list[RunDir]:
        """The round directories that exist, in order."""
        return self._numbered(_ROUND)

    def _numbered(self, pattern: re.Pattern[str]) -> list[RunDir]:
        """Sub-directories named like `pattern` (its group is a number), in numeric order; links never count."""
        found = []
        if self.root.is_dir():
            for entry in os.scandir(self.root):
                m = pattern.fullmatch(entry.name)
                if m and entry.is_dir(follow_symlinks=False):
                    found.append((int(m.group(1)), RunDir(entry.path)))
        return [d for _, d in sorted(found, key=lambda t: t[0])]

    def stage(self, arm: str, seed: int, index: int, name: str, layout: str = "sweep") -> RunDir:
        """The directory of stage number `index` (1-based) of chain (`arm`, `seed`)."""
        folder = f"{int(index):02d}-{check_name('stage', name)}"
        if layout == "single":
            return RunDir(self.root / folder)
        return RunDir(self.root / check_name("arm", arm) / f"seed{int(seed)}" / folder)

    def run_stage(self, name: str) -> RunDir:
        """The directory of a run-level stage (the report), after every chain."""
        return RunDir(self.root / check_name("stage", name))

    def relative(self, other: RunDir | Path) -> str:
        """`other` as a path relative to this directory (what stage records store)."""
        return os.path.relpath(Path(other), self.root)

    def at(self, relative: str) -> RunDir:
        """The directory a record names relative to this root; `CorruptFileError` if it leaves the root."""
        if not isinstance(relative, str) or os.path.isabs(relative) or "\x00" in relative:
            raise CorruptFileError(f"{self.records}: {relative!r} is not a path inside the run directory")
        parts = Path(relative).parts
        if ".." in parts:
            raise CorruptFileError(f"{self.records}: {relative!r} leaves the run directory")
        return RunDir(self.root.joinpath(*parts))

    # --- reading ------------------------------------------------------------------------------
    def read_metrics(self) -> list[dict[str, Any]]:
        """The per-epoch records of metrics.jsonl: the one reader of every metrics log.

        A torn LAST line (a kill while another tool appended, or an older prunus that wrote in
        place) is skipped: that epoch is simply not logged. A bad line anywhere else, binary
        content or a record that is not a JSON object is a `CorruptFileError` naming the line.
        A missing log is an empty list.
        """
        if not os.path.lexists(self.metrics):
            return []
        lines = read_text(self.metrics, MAX_LOG_BYTES, "metrics log").splitlines()
        records = []
        for i, line in enumerate(lines):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                if i == len(lines) - 1:
                    break
                raise CorruptFileError(f"metrics log {self.metrics} line {i + 1} is not a JSON record") from None
            if not isinstance(record, dict):
                raise CorruptFileError(f"metrics log {self.metrics} line {i + 1} is not a JSON record")
            records.append(record)
        return records

    def read_summary(self) -> dict[str, Any]:
        """summary.json: {"config": ..., "metrics": {...}}; `CorruptFileError` when it is missing or malformed."""
        summary = read_json(self.summary, MAX_JSON_BYTES, "run summary")
        if not isinstance(summary, dict) or not isinstance(summary.get("metrics"), dict):
            raise CorruptFileError(f"run summary {self.summary} has no 'metrics' object")
        return summary

    def read_record(self) -> dict[str, Any] | None:
        """This stage's completion record (checked by `formats.header`), or None when it has not finished."""
        from prunus.formats.header import check_header

        if not os.path.lexists(self.record):
            return None
        record = read_json(self.record, MAX_RECORD_BYTES, "stage record")
        fields = {"name": str, "kind": str, "hash": str, "config": dict, "metrics": dict, "files": dict}
        fields["seconds"] = float
        optional = {"input": str, "model": str, "same_as": str, "finished": str, "progress": dict}
        return check_header(record, RECORD_FORMAT, fields=fields, optional=optional, where=str(self.record))

    def read_records(self) -> dict[str, Any]:
        """records.json of a pipeline: {"recipe": name, "records": [...]}."""
        data = read_json(self.records, 64 << 20, "run records")
        if not isinstance(data, dict) or not isinstance(data.get("records", []), list):
            raise CorruptFileError(f"{self.records} has no 'records' list")
        return data

    def is_pipeline(self) -> bool:
        """Whether this is a pipeline's directory (it holds the resolved recipe)."""
        try:
            return stat.S_ISREG(os.lstat(self.recipe).st_mode)
        except OSError:
            return False

    def finished(self) -> bool:
        """A training run is finished once its summary.json exists (written after model/)."""
        return self.summary.exists()

    def training_dirs(self) -> list[RunDir]:
        """Where a training stage's per-epoch logs are: its rounds, itself, or network 0 of a population."""
        rounds = self.rounds()
        if rounds:
            return rounds
        if self.metrics.exists() or not self.network(0).metrics.exists():
            return [self]
        return [self.network(0)]

    def final_run(self) -> RunDir:
        """The training run whose model goes on: itself, or network 0 of a population."""
        return self if self.model.exists() or not self.network(0).root.exists() else self.network(0)

    # --- writing ------------------------------------------------------------------------------
    def write_json(self, path: Path, obj: Any) -> None:
        """Atomically write `obj` as JSON to one of this directory's files."""
        write_json(self._inside(path), obj)

    def write_text(self, path: Path, text: str) -> None:
        """Atomically write `text` to one of this directory's files."""
        write_text(self._inside(path), text)

    def write_metrics(self, records: list[dict[str, Any]]) -> None:
        """Replace metrics.jsonl with exactly `records` (temp file + rename: a kill leaves old or new)."""
        self.write_text(self.metrics, "".join(json.dumps(r) + "\n" for r in records))

    def write_summary(self, config: dict[str, Any], metrics: dict[str, Any]) -> None:
        """summary.json: the resolved config and the final metrics (written last: the run is finished)."""
        self.write_json(self.summary, {"config": config, "metrics": metrics})

    def _inside(self, path: Path) -> Path:
        path = Path(path)
        if path.parent != self.root and self.root not in path.parents:
            raise ValueError(f"{path} is not inside the run directory {self.root}")
        return path

    # --- safety -------------------------------------------------------------------------------
    def links(self) -> Iterator[Path]:
        """Every symlink at or below the root (never followed)."""
        if os.path.islink(self.root):
            yield self.root
            return
        if not self.root.is_dir():
            return
        stack = [self.root]
        while stack:
            here = stack.pop()
            try:
                entries = list(os.scandir(here))
            except OSError:
                continue
            for entry in entries:
                if entry.is_symlink():
                    yield Path(entry.path)
                elif entry.is_dir(follow_symlinks=False) and not is_temp_name(entry.name):
                    stack.append(Path(entry.path))

    def check_no_links(self, what: str = "run directory") -> None:
        """`ConfigError` naming the first symlink found inside: prunus never reads or writes through one."""
        for link in self.links():
            raise ConfigError(
                f"{what} {self.root} contains the symlink {link}; prunus does not read or write through links "
                "(remove it, or use another output directory)"
            )


def resolve_model_dir(path: str | os.PathLike[str]) -> Path:
    """The model directory `path` names: itself, the `model/` of a run, network 0's of a population,
    or the final model of a pipeline with one chain (what a command like `prunus prune` leaves).

    Example:
        >>> resolve_model_dir("runs/nothing-here")
        PosixPath('runs/nothing-here')
    """
    path = Path(path)
    if (path / "model.json").exists() or not path.is_dir():
        return path
    run = RunDir(path)
    if run.is_pipeline() and run.records.exists():
        try:
            records = run.read_records().get("records", [])
        except CorruptFileError:
            return path
        if len(records) == 1 and isinstance(records[0], dict):
            for stage in reversed(records[0].get("stages", [])):
                model = stage.get("model") if isinstance(stage, dict) else None
                if isinstance(model, str):
                    candidate = run.at(model).root
                    if (candidate / "model.json").exists():
                        return candidate
        return path
    final = run.final_run()
    if (final.model / "model.json").exists():
        return final.model
    return path
