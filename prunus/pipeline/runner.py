"""Run a `Plan`: one directory per stage, an atomic completion record each, resume from the last one.

Layout of a run directory:

    recipe.yaml                         the resolved recipe (after --set)
    <arm>/seed<s>/<NN>-<stage>/         one directory per stage of each chain
        stage.json                      completion record, written last and atomically
        ...                             what the stage made (model/, checkpoint.pt, model.onnx, ...)
    records.json                        one record per finished (arm, seed) chain: the paired records
    <report stage>/stage.json, report.html, summary.md

A stage is done when its stage.json exists and holds the hash of its config (less the fields that
only say how it runs: threads, device, data location; `EXECUTION_ONLY`), its seed and its input's
hash; a finished stage is never run again, and a stage whose record carries another hash
stops the pipeline before any work (the recipe changed under an existing run directory). A stage
killed half way is started again in its directory: training stages resume from their last epoch
checkpoint, so the final weights are those of an uninterrupted run. Two arms whose stages have
the same hash (a shared baseline) share the first one's directory instead of training twice.

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

from prunus._atomic import write_json, write_text
from prunus._safeio import PIPELINE_MARKER, check_output, read_json
from prunus.data.bundle import EXECUTION_ONLY_FIELDS
from prunus.errors import ConfigError
from prunus.pipeline.recipe import Plan, PlannedStage
from prunus.pipeline.stages import StageContext

__all__ = [
    "EXECUTION_ONLY",
    "RECORD_NAME",
    "RunSummary",
    "chain_records",
    "hashed_config",
    "read_record",
    "run_pipeline",
    "stage_hash",
]

RECORD_NAME = "stage.json"
RECORD_FORMAT = "prunus-stage"  # a kind of prunus.formats.header
MAX_RECORD_BYTES = 16 << 20
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


def hashed_config(config: dict[str, Any]) -> dict[str, Any]:
    """A stage config's dict without its `EXECUTION_ONLY` fields: what `stage_hash` hashes.

    Example:
        >>> hashed_config({"train": {"epochs": 3, "threads": 2}, "width": 0.5})
        {'train': {'epochs': 3}, 'width': 0.5}
    """
    out = {}
    for key, value in config.items():
        if isinstance(value, dict) and key in EXECUTION_ONLY:
            value = {k: v for k, v in value.items() if k not in EXECUTION_ONLY[key]}
        out[key] = value
    return out


def stage_hash(stage: PlannedStage, seed: int, input_hash: str | None) -> str:
    """sha256 of what determines a stage's outputs: kind, resolved config (`hashed_config`), seed, input's hash."""
    blob = json.dumps(
        {"kind": stage.kind, "config": hashed_config(stage.config.to_dict()), "seed": seed, "input": input_hash},
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(blob.encode()).hexdigest()


def read_record(stage_dir: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The completion record in `stage_dir` (checked by `formats.header`), or None when the stage has not finished."""
    from prunus.formats.header import check_header

    path = Path(stage_dir) / RECORD_NAME
    if not os.path.lexists(path):
        return None
    record = read_json(path, MAX_RECORD_BYTES, "stage record")  # regular file, bounded: never a FIFO
    fields = {"name": str, "kind": str, "hash": str, "config": dict, "metrics": dict, "files": dict, "seconds": float}
    optional = {"input": str, "model": str, "same_as": str, "finished": str}
    return check_header(record, RECORD_FORMAT, fields=fields, optional=optional, where=str(path))


def _chain_dirs(plan: Plan, run_dir: Path) -> dict[tuple[str, int], list[tuple[PlannedStage, Path, str]]]:
    """(arm, seed) -> [(stage, directory, hash)] for every chain, hashes chained through inputs."""
    out = {}
    for seed in plan.seeds:
        for arm, chain in plan.arms.items():
            hashes: dict[str, str] = {}
            rows = []
            for i, stage in enumerate(chain, 1):
                h = stage_hash(stage, seed, hashes.get(stage.input) if stage.input else None)
                hashes[stage.name] = h
                rows.append((stage, run_dir / arm / f"seed{seed}" / f"{i:02d}-{stage.name}", h))
            out[(arm, seed)] = rows
    return out


def _final_hash(plan: Plan, chains: dict[Any, list[tuple[PlannedStage, Path, str]]], stage: PlannedStage) -> str:
    every = sorted(h for rows in chains.values() for _, _, h in rows)
    blob = json.dumps({"kind": stage.kind, "config": stage.config.to_dict(), "chains": every}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def _check_existing(rows: list[tuple[PlannedStage, Path, str]]) -> None:
    for stage, where, h in rows:
        record = read_record(where)
        if record is not None and record.get("hash") != h:
            raise ConfigError(
                f"stage {stage.name!r} in {where} finished with a different configuration (seed, input or "
                "settings changed); use another output directory, or delete that stage directory to redo it"
            )


def _write_record(
    where: Path,
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
    write_json(where / RECORD_NAME, record)  # last: its presence says the stage is complete
    return record


def chain_records(run_dir: str | os.PathLike[str], plan: Plan) -> list[dict[str, Any]]:
    """One paired record per finished (arm, seed) chain: its stages' metrics and the final numbers."""
    run_dir = Path(run_dir)
    records = []
    for (arm, seed), rows in _chain_dirs(plan, run_dir).items():
        stages = [(s, d, read_record(d)) for s, d, _ in rows]
        if any(r is None for _, _, r in stages):
            continue
        rec: dict[str, Any] = {"arm": arm, "seed": seed, "stages": []}
        for s, d, r in stages:
            rec["stages"].append({"name": s.name, "kind": s.kind, "dir": os.path.relpath(d, run_dir),
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
) -> RunSummary:
    """Run every chain of `plan` (seeds x arms) and then the run-level stages, resuming what exists.

    Args:
        plan: A parsed recipe (`load_recipe` / `parse_recipe`).
        run_dir: The pipeline's directory (created).
        progress: Show training progress bars.
        echo: Where one line per stage goes.

    Returns:
        A `RunSummary`; `ran == 0` means the pipeline had already finished.
    """
    run_dir = Path(run_dir)
    # the CLI's output guard, kind "pipeline": a new path, an empty directory or a pipeline's own
    # (resumed); never a file, a link or someone else's directory
    check_output(run_dir, "pipeline", flag="run directory")
    chains = _chain_dirs(plan, run_dir)
    for rows in chains.values():  # a changed recipe under an old run directory fails before any work
        _check_existing(rows)
    run_dir.mkdir(parents=True, exist_ok=True)
    write_text(run_dir / PIPELINE_MARKER, plan.to_yaml())
    summary = RunSummary(run_dir)
    done_by_hash: dict[str, Path] = {}  # finished stage directories, for arms sharing a prefix
    for rows in chains.values():
        for _, where, h in rows:
            if read_record(where) is not None:
                done_by_hash.setdefault(h, where)
    total = sum(len(rows) for rows in chains.values())
    n = 0
    for (arm, seed), rows in chains.items():
        outputs: dict[str, str] = {}  # stage name -> run-dir-relative model directory
        for stage, where, h in rows:
            n += 1
            label = f"[{n}/{total}] {arm} seed {seed}: {stage.name} ({stage.kind})"
            record = read_record(where)
            input_dir = outputs.get(stage.input) if stage.input else None
            if record is None and h in done_by_hash:
                shared = read_record(done_by_hash[h])
                rel = os.path.relpath(done_by_hash[h], run_dir)
                record = _write_record(where, stage, h, shared["model"], shared["metrics"], shared["files"], 0.0,
                                       input_dir, same_as=rel)  # fmt: skip
                echo(f"{label}: same as {rel}")
                summary.ran += 1
            elif record is not None:
                summary.skipped += 1
                echo(f"{label}: done")
            else:
                echo(f"{label}: running")
                where.mkdir(parents=True, exist_ok=True)
                ctx = StageContext(where, run_dir / input_dir if input_dir else None, seed, progress, run_dir)
                start = time.perf_counter()
                result = stage.info.run(stage.config, ctx)
                seconds = time.perf_counter() - start
                model = os.path.relpath(result.model, run_dir) if result.model is not None else input_dir
                record = _write_record(where, stage, h, model, result.metrics, result.files, seconds, input_dir)
                done_by_hash.setdefault(h, where)
                summary.ran += 1
                echo(f"{label}: finished in {seconds:.1f} s")
            if record["model"] is not None:
                outputs[stage.name] = record["model"]
        write_json(run_dir / "records.json", {"recipe": plan.name, "records": chain_records(run_dir, plan)})
    summary.records = chain_records(run_dir, plan)
    for stage in plan.final:
        where = run_dir / stage.name
        h = _final_hash(plan, chains, stage)
        record = read_record(where)
        if record is not None and record.get("hash") == h:
            summary.skipped += 1
            echo(f"{stage.name} ({stage.kind}): done")
            continue
        echo(f"{stage.name} ({stage.kind}): running")
        where.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        result = stage.info.run(stage.config, StageContext(where, None, plan.seeds[0], progress, run_dir))
        _write_record(where, stage, h, None, result.metrics, result.files, time.perf_counter() - start, None)
        summary.ran += 1
    if summary.ran == 0:
        echo(f"pipeline {plan.name!r} in {run_dir} had already finished: nothing to do ({summary.skipped} stages done)")
    return summary
