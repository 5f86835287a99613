"""Read a pipeline run directory into plain data for the report: records, curves, widths, provenance."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prunus.errors import ConfigError, CorruptFileError, PrunusError
from prunus.formats.model_dir import untrusted_factory
from prunus.formats.run_dir import RunDir

__all__ = ["RunData", "collect", "provenance"]

# per-epoch keys every training run logs; anything else in metrics.jsonl comes from a method
STANDARD_KEYS = {"epoch", "step", "lr", "train_loss", "train_acc", "val_loss", "val_acc", "test_loss", "test_acc",
                 "seconds", "train_seconds"}  # fmt: skip


def provenance() -> dict[str, str]:
    """`prunus.provenance()` as display strings (versions, commit, machine, threads, date)."""
    from prunus._version import provenance as record

    p = record()
    commit = f"{p['commit']}{' (modified)' if p['dirty'] else ''}" if p["commit"] else "unknown"
    keys = ("prunus", "torch", "python", "machine", "threads", "date")
    return {"prunus": str(p["prunus"]), "commit": commit, **{k: str(p[k]) for k in keys if k != "prunus"}}


@dataclass
class Curve:
    """Per-epoch rows of one chain, stage after stage, on one global epoch axis."""

    arm: str
    seed: int
    rows: list[dict[str, Any]] = field(default_factory=list)  # each row has "x" (global epoch) and "stage"
    boundaries: list[tuple[float, str]] = field(default_factory=list)  # (x where a stage starts, its name)


@dataclass
class RunData:
    """Everything the report shows."""

    run_dir: Path
    title: str
    baseline: str | None
    records: list[dict[str, Any]]
    curves: list[Curve]
    widths: dict[str, dict[str, list[int]]]  # arm -> layer -> [first model, final model] out channels
    provenance: dict[str, str]
    widths_note: str | None = None  # why the widths are not drawn (models a user factory builds, not trusted)


def _training_rows(stage: RunDir) -> list[dict[str, Any]]:
    """Per-epoch records of a stage: its C-SGD rounds in order, itself, or network 0 of a population."""
    return [row for run in stage.training_dirs() for row in run.read_metrics()]


def _source(run: RunDir, stage_dir: str) -> RunDir:
    """Where a stage's logs are: its own directory, or the one it was shared from (`same_as`)."""
    here = run.at(stage_dir)
    shared = (here.read_record() or {}).get("same_as")
    return run.at(shared) if isinstance(shared, str) and shared else here


def _conv_widths(model_dir: Path, trust_factory: bool) -> dict[str, int]:
    from torch import nn

    from prunus.formats import load

    model = load(model_dir, trust_factory=trust_factory)
    # every conv kind (1-D, 3-D, transposed) has out_channels: its filters, the widths a cut changes
    return {name: m.out_channels for name, m in model.named_modules() if isinstance(m, nn.modules.conv._ConvNd)}


def collect(run_dir: str | os.PathLike[str], title: str | None = None, *, trust_factory: bool = False) -> RunData:
    """Read RUN_DIR/records.json, every stage's metrics.jsonl and the first and final models.

    The models are loaded for their conv widths; models a user factory builds are loaded only with
    `trust_factory` (or inside `trusting`): otherwise the widths are left out and `widths_note` says why.
    """
    run = RunDir(run_dir)
    path = run.records
    if not path.exists():
        raise ConfigError(f"{run.root} has no records.json: not a finished pipeline run directory (prunus run ...)")
    run.check_no_links()
    data = run.read_records()
    try:
        return _collect(run, data, title, trust_factory)
    except PrunusError:
        raise  # already one line naming the file
    except (KeyError, IndexError, TypeError, ValueError, AttributeError) as exc:
        # records.json or a stage.json edited, truncated or from elsewhere: one line, never a traceback
        raise CorruptFileError(
            f"{path} does not describe this run directory ({type(exc).__name__}: {exc}); rerun prunus run to rebuild it"
        ) from None


def _collect(run: RunDir, data: Any, title: str | None, trust_factory: bool) -> RunData:
    records = data.get("records", []) if isinstance(data, dict) else []
    recipe: dict[str, Any] = {}
    if os.path.lexists(run.recipe):
        from prunus.config import load_yaml

        recipe = load_yaml(run.recipe)
    arms = list(dict.fromkeys(r["arm"] for r in records))
    baseline = recipe.get("compare_to") or ("baseline" if "baseline" in arms else (arms[0] if len(arms) > 1 else None))
    curves, widths, widths_note = [], {}, None
    for rec in records:
        curve = Curve(rec["arm"], rec["seed"])
        x = 0.0
        for stage in rec["stages"]:
            rows = _training_rows(_source(run, stage["dir"]))
            if rows:
                curve.boundaries.append((x, stage["name"]))
                for i, row in enumerate(rows):  # numbered in order: C-SGD rounds each restart at epoch 0
                    curve.rows.append({**row, "x": x + i + 1, "stage": stage["name"]})
                x += len(rows)
        curves.append(curve)
        if rec["arm"] not in widths:  # first seed of each arm: widths before (first model) and after
            models = [s for s in rec["stages"] if run.at(s["dir"]).record.exists()]
            dirs = [_model_dir(run, s["dir"]) for s in models]
            # the first model is the one the chain began from: the recipe's input, else its first stage's
            dirs = [d for d in ([_input_model(run, rec["stages"])] + dirs) if d is not None]
            factory = next((f for d in dirs if (f := None if trust_factory else untrusted_factory(d))), None)
            if factory is not None:  # loading would run the user's code, which the caller did not allow
                widths_note = (
                    f"Layer widths are not drawn: the models are built by the user factory {factory!r}, "
                    "which the report imports only when told to (prunus report --trust-factory)."
                )
            elif dirs:
                before, after = _conv_widths(dirs[0], trust_factory), _conv_widths(dirs[-1], trust_factory)
                widths[rec["arm"]] = {k: [before[k], after.get(k, 0)] for k in before}
    return RunData(run.root, title or str(data.get("recipe") or run.root.name), baseline, records, curves, widths,
                   provenance(), widths_note)  # fmt: skip


def _input_model(run: RunDir, stages: list[dict[str, Any]]) -> Path | None:
    """The model directory outside the run that the chain's first stage read (the recipe's `input`,
    recorded resolved and absolute in that stage's record), if it is still there."""
    record = (run.at(stages[0]["dir"]).read_record() or {}) if stages else {}
    given = record.get("input")
    if isinstance(given, str) and os.path.isabs(given) and (Path(given) / "model.json").is_file():
        return Path(given)
    return None


def _model_dir(run: RunDir, stage_dir: str) -> Path | None:
    record = run.at(stage_dir).read_record() or {}
    model = record.get("model")
    return run.at(model).root if model and (run.at(model).root / "model.json").exists() else None
