"""Run a `Plan`: one directory per stage, an atomic completion record each, resume from the last one.

The directory layout belongs to `prunus.formats.run_dir.RunDir` ("sweep": `<arm>/seed<s>/<NN>-<stage>/`
for `prunus run`; "single": `<NN>-<stage>/` for a command that runs a chain of stages in its
`--out`); the runner asks it for every path and never spells a file name.

A stage is done when its completion record exists and holds the hash of its config (less the
fields that only say how it runs: threads, device, data location; `EXECUTION_ONLY`), its seed and
its input's hash; a finished stage is never run again, and a stage whose record carries another
hash stops the pipeline before any work (the recipe changed under an existing run directory). A
stage records what it was started with before it runs, so a stage killed half way is resumed
only with the same settings: a recipe changed between the kill and the rerun is refused, naming
the changed keys. A resumed training stage continues from its last epoch checkpoint, so the
final weights are those of an uninterrupted run. Two arms whose stages have the same hash (a
shared baseline) share the first one's directory instead of training twice. A symlink anywhere
in the run directory stops the run before anything is read or written through it.

Example:
    >>> from prunus.pipeline import parse_recipe, run_pipeline
    >>> plan = parse_recipe({"data": {"name": "synthetic"}, "stages": [{"stage": "train"}]})
    >>> run_pipeline(plan, "runs/x", progress=False)  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from prunus._io.atomic import clean_dead_temps
from prunus.data.bundle import EXECUTION_ONLY_FIELDS, DataConfig
from prunus.data.catalog import dataset_info
from prunus.errors import ConfigError
from prunus.formats.model_dir import ALLOWED_FACTORIES, read_model_json, trusting
from prunus.formats.outputs import check_output
from prunus.formats.run_dir import RECORD_FORMAT, RunDir
from prunus.pipeline.recipe import SOURCE, Plan, PlannedStage
from prunus.pipeline.stages import StageContext
from prunus.pruning.config import OLD_NAMES

__all__ = [
    "EXECUTION_ONLY",
    "RunSummary",
    "chain_records",
    "hashed_config",
    "read_record",
    "run_pipeline",
    "stage_hash",
]

# the columns of the one table a pipeline ends with
TABLE_KEYS = ("acc", "macs", "params", "bytes", "latency_ms")


@dataclass
class RunSummary:
    """What `run_pipeline` did: how many stages ran or were already done, and the chain records."""

    run_dir: Path
    ran: int = 0
    skipped: int = 0
    records: list[dict[str, Any]] = field(default_factory=list)


# How a stage runs, not what it computes: a resume may change these (more threads on another
# machine, the data found elsewhere, another eval batch size) without invalidating finished stages.
EXECUTION_ONLY = {
    "train": frozenset({"threads", "device", "checkpoint"}),
    "data": EXECUTION_ONLY_FIELDS,
    "compress": frozenset({"progress"}),
}
TOP_EXECUTION_ONLY = frozenset({"threads"})  # a stage's own fields that only say how it runs (prune.threads)


def hashed_config(config: dict[str, Any]) -> dict[str, Any]:
    """A stage config's dict without its `EXECUTION_ONLY` fields: what `stage_hash` hashes.

    Example:
        >>> hashed_config({"train": {"epochs": 3, "threads": 2}, "width": 0.5})
        {'train': {'epochs': 3}, 'width': 0.5}
    """
    out = {}
    for key, value in config.items():
        if key in TOP_EXECUTION_ONLY:
            continue
        if isinstance(value, dict) and key in EXECUTION_ONLY:
            value = {k: v for k, v in value.items() if k not in EXECUTION_ONLY[key]}
        out[key] = value
    return out


# Renamed fields are hashed under the names they had when run directories began recording hashes
# (the pruning targets: `keep_macs` is hashed as `macs_ratio`, ...), so a stage finished before
# the rename has the same hash now and an old run directory resumes instead of being refused.
HASHED_AS = {new: old for old, new in OLD_NAMES.items()}


def _hashed_names(value: Any) -> Any:
    """`value` with every key of `HASHED_AS` (at any depth: method arguments too) under its hashed name."""
    if isinstance(value, dict):
        return {HASHED_AS.get(k, k): _hashed_names(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_hashed_names(v) for v in value]
    return value


def _current_names(value: Any) -> Any:
    """The inverse of `_hashed_names`: a config recorded before the rename, under today's field names."""
    if isinstance(value, dict):
        return {OLD_NAMES.get(k, k): _current_names(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_current_names(v) for v in value]
    return value


def stage_hash(stage: PlannedStage, seed: int, input_hash: str | None) -> str:
    """sha256 of what determines a stage's outputs: kind, resolved config (`hashed_config`), seed, input's hash.

    Renamed fields enter under their old names (`HASHED_AS`), so the hash does not change with a rename.
    """
    config = _hashed_names(hashed_config(stage.config.to_dict()))
    blob = json.dumps(
        {"kind": stage.kind, "config": config, "seed": seed, "input": input_hash},
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(blob.encode()).hexdigest()


def read_record(stage_dir: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The completion record in `stage_dir` (checked by `formats.header`), or None when the stage has not finished."""
    return RunDir(stage_dir).read_record()


def _input_hash(path: Path) -> str:
    """sha256 of an external input model's files: another model under the same path is another input."""
    digest = hashlib.sha256()
    for name in ("model.json", "model.safetensors"):
        f = path / name
        digest.update(name.encode())
        if f.is_file():
            with open(f, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    digest.update(block)
    return digest.hexdigest()


def _chain_dirs(plan: Plan, run: RunDir) -> dict[tuple[str, int], list[tuple[PlannedStage, RunDir, str]]]:
    """(arm, seed) -> [(stage, directory, hash)] for every chain, hashes chained through inputs."""
    out = {}
    source_hash = _input_hash(plan.input) if plan.input is not None else None
    for seed in plan.seeds:
        for arm, chain in plan.arms.items():
            hashes: dict[str, str] = {SOURCE: source_hash} if source_hash else {}
            rows = []
            for i, stage in enumerate(chain, 1):
                h = stage_hash(stage, seed, hashes.get(stage.input) if stage.input else None)
                hashes[stage.name] = h
                rows.append((stage, run.stage(arm, seed, i, stage.name, plan.layout), h))
            out[(arm, seed)] = rows
    return out


def _final_hash(plan: Plan, chains: dict[Any, list[tuple[PlannedStage, RunDir, str]]], stage: PlannedStage) -> str:
    every = sorted(h for rows in chains.values() for _, _, h in rows)
    blob = json.dumps({"kind": stage.kind, "config": stage.config.to_dict(), "chains": every}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def _check_existing(rows: list[tuple[PlannedStage, RunDir, str]]) -> None:
    """Refuse, before any work, a stage that finished or was started with other settings than the plan's."""
    for stage, where, h in rows:
        record = where.read_record()
        if record is not None and record.get("hash") != h:
            raise ConfigError(
                f"stage {stage.name!r} in {where.root} finished with a different configuration (seed, input or "
                "settings changed); use another output directory, or delete that stage directory to redo it"
            )
        if record is None:
            started = _read_started(where)
            if started is not None and started.get("hash") != h:
                changed = _changed_keys(_current_names(started.get("config")), hashed_config(stage.config.to_dict()))
                what = f"changed: {', '.join(changed)}" if changed else "its seed or input changed"
                raise ConfigError(
                    f"stage {stage.name!r} in {where.root} was interrupted and the recipe has changed since ({what}); "
                    "rerun with the settings it started with, use another output directory, or delete that stage "
                    "directory to start it over"
                )


def _changed_keys(old: Any, new: Any, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two config dicts (execution-only fields already removed)."""
    if not isinstance(old, dict) or not isinstance(new, dict):
        return [prefix.rstrip(".")] if old != new and prefix else []
    out = []
    for key in sorted(old.keys() | new.keys(), key=str):
        if old.get(key) != new.get(key):
            if isinstance(old.get(key), dict) and isinstance(new.get(key), dict):
                out += _changed_keys(old[key], new[key], f"{prefix}{key}.")
            else:
                out.append(f"{prefix}{key}: {old.get(key)!r} -> {new.get(key)!r}")
    return out


STARTED = "started"  # the started record's kind in the stage's progress slot (see `_mark_started`)


def _read_started(where: RunDir) -> dict[str, Any] | None:
    """What an unfinished stage was started with ({"hash", "config"}), or None."""
    from prunus._io.safe import read_json

    path = where.started
    if not os.path.lexists(path):
        return None
    data = read_json(path, 16 << 20, "stage start record")
    return data if isinstance(data, dict) else None


def _mark_started(where: RunDir, stage: PlannedStage, h: str) -> None:
    """Record the settings a stage starts with, so a rerun after a kill can tell whether they changed."""
    where.write_json(where.started, {"name": stage.name, "hash": h, "config": hashed_config(stage.config.to_dict())})


def _sample_shape(data: DataConfig) -> tuple[int, ...] | None:
    """One sample's shape under `data`: the catalog's, or the `channels` and `image_size` options; None
    when only loading tells (synthetic or imagefolder without both options): the stage finds out."""
    known = dataset_info(data.name).input_shape
    if known is not None:
        return tuple(known)
    if data.image_size is not None and data.channels is not None:
        return (data.channels, data.image_size, data.image_size)
    return None


def _check_model_takes_data(stage: PlannedStage, source: Path | None) -> None:
    """ConfigError, before the stage starts, when its input model does not run on its data's samples
    (a 1-D or 3-D user model under the default Fashion-MNIST): one line naming both, not a traceback
    from the middle of an evaluation."""
    data = stage.config.data_used()
    if source is None or data is None:
        return
    shape = _sample_shape(data)
    if shape is None:
        return
    from prunus.deploy.bench import check_fits
    from prunus.formats import load

    what = f"stage {stage.name!r}: data {data.name!r} (samples of shape {shape}; set the stage's data block)"
    check_fits([load(source)], shape, what)


def _write_record(
    where: RunDir,
    stage: PlannedStage,
    h: str,
    model: str | None,
    metrics: dict[str, Any],
    files: dict[str, str],
    seconds: float,
    input_dir: str | None,
    same_as: str | None = None,
) -> dict[str, Any]:
    from prunus.formats.header import make_header

    data = {
        "name": stage.name,
        "kind": stage.kind,
        "hash": h,
        "config": stage.config.to_dict(),
        "input": input_dir,
        "model": model,  # run-dir-relative model directory this stage leaves for the next one
        "files": files,
        "metrics": metrics,
        "seconds": seconds,
        "same_as": same_as,
        "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    record = make_header(RECORD_FORMAT, data)
    where.write_json(where.record, record)  # last: its presence says the stage is complete
    return record


def chain_records(run_dir: str | os.PathLike[str], plan: Plan) -> list[dict[str, Any]]:
    """One paired record per finished (arm, seed) chain: its stages' metrics and the final numbers."""
    run = RunDir(run_dir)
    records = []
    for (arm, seed), rows in _chain_dirs(plan, run).items():
        stages = [(s, d, d.read_record()) for s, d, _ in rows]
        if any(r is None for _, _, r in stages):
            continue
        rec: dict[str, Any] = {"arm": arm, "seed": seed, "stages": []}
        for s, d, r in stages:
            rec["stages"].append({"name": s.name, "kind": s.kind, "dir": run.relative(d), "model": r.get("model"),
                                  "metrics": r["metrics"], "seconds": r["seconds"]})  # fmt: skip
            for key in TABLE_KEYS:  # the chain's final numbers: the last stage that measured each
                if r["metrics"].get(key) is not None:
                    rec[key] = r["metrics"][key]
        records.append(rec)
    return records


def run_pipeline(
    plan: Plan,
    run_dir: str | os.PathLike[str],
    *,
    progress: bool = True,
    echo: Callable[[str], None] = print,
    trust_factory: bool = False,
) -> RunSummary:
    """Run every chain of `plan` (seeds x arms) and then the run-level stages, resuming what exists.

    Args:
        plan: A parsed recipe (`load_recipe` / `parse_recipe` / `single_chain`).
        run_dir: The pipeline's directory (created once the whole plan has been checked).
        progress: Show training progress bars.
        echo: Where one line per stage goes.
        trust_factory: Let the stages import the user factory (a "module:function") that the plan's
            `input` model names in its model.json, and so load that model and every model made from
            it (CLI: `--trust-factory`). Without it such an input is refused when a stage loads it.

    Returns:
        A `RunSummary`; `ran == 0` means the pipeline had already finished.
    """
    factory = _input_factory(plan) if trust_factory else None
    with trusting(factory):  # the stages load the input model, and what they make from it, by its factory
        return _run_plan(plan, run_dir, progress=progress, echo=echo)


def _input_factory(plan: Plan) -> str | None:
    """The user factory ("module:function") the plan's input model is built by, if any."""
    if plan.input is None:
        return None
    factory = read_model_json(plan.input)["arch"].get("factory")
    return None if factory in ALLOWED_FACTORIES else factory


def _run_plan(
    plan: Plan, run_dir: str | os.PathLike[str], *, progress: bool, echo: Callable[[str], None]
) -> RunSummary:
    run = RunDir(run_dir)
    # the CLI's output guard, kind "pipeline": a new path, an empty directory or a pipeline's own
    # (resumed); never a file, a link or someone else's directory
    check_output(run.root, "pipeline", flag="run directory")
    run.check_no_links()  # a link anywhere inside: refused before a single file is read or written
    chains = _chain_dirs(plan, run)
    for rows in chains.values():  # a changed recipe under an old run directory fails before any work
        _check_existing(rows)
    run.root.mkdir(parents=True, exist_ok=True)
    run.write_text(run.recipe, plan.to_yaml())
    summary = RunSummary(run.root)
    done_by_hash: dict[str, RunDir] = {}  # finished stage directories, for arms sharing a prefix
    for rows in chains.values():
        for _, where, h in rows:
            if where.read_record() is not None:
                done_by_hash.setdefault(h, where)
    total = sum(len(rows) for rows in chains.values())
    n = 0
    for (arm, seed), rows in chains.items():
        outputs: dict[str, str] = {}  # stage name -> model directory (run-dir-relative, or the plan's input)
        if plan.input is not None:
            outputs[SOURCE] = str(plan.input.resolve())
        for stage, where, h in rows:
            n += 1
            label = f"[{n}/{total}] {arm} seed {seed}: {stage.name} ({stage.kind})"
            run.check_no_links()  # before every stage: nothing is ever read or written through a link
            record = where.read_record()
            input_dir = outputs.get(stage.input) if stage.input else None
            if record is None and h in done_by_hash:
                shared = done_by_hash[h].read_record()
                rel = run.relative(done_by_hash[h])
                record = _write_record(where, stage, h, shared["model"], shared["metrics"], shared["files"], 0.0,
                                       input_dir, same_as=rel)  # fmt: skip
                echo(f"{label}: same as {rel}")
                summary.ran += 1
            elif record is not None:
                summary.skipped += 1
                echo(f"{label}: done")
            else:
                echo(f"{label}: running")
                source = (run.root / input_dir) if input_dir else None  # an absolute input stays as it is
                _check_model_takes_data(stage, source)
                where.root.mkdir(parents=True, exist_ok=True)
                clean_dead_temps(where.root)  # what a kill during an atomic write left behind
                _mark_started(where, stage, h)
                ctx = StageContext(where.root, source, seed, progress, run.root)
                start = time.perf_counter()
                result = stage.info.run(stage.config, ctx)
                seconds = time.perf_counter() - start
                model = run.relative(result.model) if result.model is not None else input_dir
                record = _write_record(where, stage, h, model, result.metrics, result.files, seconds, input_dir)
                done_by_hash.setdefault(h, where)
                summary.ran += 1
                echo(f"{label}: finished in {seconds:.1f} s")
            if record["model"] is not None:
                outputs[stage.name] = record["model"]
        run.write_json(run.records, {"recipe": plan.name, "records": chain_records(run.root, plan)})
    summary.records = chain_records(run.root, plan)
    for stage in plan.final:
        where = run.run_stage(stage.name)
        h = _final_hash(plan, chains, stage)
        record = where.read_record()
        if record is not None and record.get("hash") == h:
            summary.skipped += 1
            echo(f"{stage.name} ({stage.kind}): done")
            continue
        echo(f"{stage.name} ({stage.kind}): running")
        where.root.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        result = stage.info.run(stage.config, StageContext(where.root, None, plan.seeds[0], progress, run.root))
        _write_record(where, stage, h, None, result.metrics, result.files, time.perf_counter() - start, None)
        summary.ran += 1
    if summary.ran == 0:
        echo(
            f"pipeline {plan.name!r} in {run.root} had already finished: nothing to do ({summary.skipped} stages done)"
        )
    return summary
