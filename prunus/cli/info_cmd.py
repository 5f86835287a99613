"""`prunus info`: describe a model directory, run directory or checkpoint without running it."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from prunus.cli._common import add_command, mark_input, print_table
from prunus.errors import PrunusError

__all__ = ["add_parser", "run"]


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = add_command(
        subparsers,
        "info",
        "Describe a model directory, run or pipeline directory, checkpoint or .prn file.",
        "prunus info runs/r20/model",
    )
    mark_input(p.add_argument("path", help="model dir, run dir, checkpoint.pt or model.prn"))
    p.add_argument("--json", action="store_true", help="print the description as JSON")
    p.set_defaults(run=run)
    return p


def describe(path: Path) -> dict[str, Any]:
    """A JSON-able description of `path` (model dir, run dir, checkpoint or .prn file)."""
    from prunus.formats import MODEL_JSON, MODEL_WEIGHTS, read_model_json
    from prunus.formats.run_dir import RunDir, resolve_model_dir

    if path.is_file() and path.suffix == ".prn":
        from prunus.compress.report import describe_prn

        return {"kind": "prn", **describe_prn(path)}
    if path.is_dir() and (path / MODEL_JSON).exists():
        header = read_model_json(path)
        weights = path / MODEL_WEIGHTS
        return {
            "kind": "model",
            "arch": header["arch"],
            "input_shape": header.get("input_shape"),
            "pruning_steps": len(header.get("history") or []),
            "metrics": header.get("metrics", {}),
            "prunus_version": header.get("prunus_version"),
            "bytes": weights.stat().st_size if weights.exists() else None,
        }
    run = RunDir(path)
    if path.is_dir() and run.config.exists():
        out: dict[str, Any] = {"kind": "run", "config": str(run.config)}
        if run.metrics.exists():
            records = run.read_metrics()  # bounded; a torn last line is skipped, garbage is an error
            out["epochs_logged"] = len(records)
            out["last_epoch"] = records[-1] if records else None
        if run.model.exists():
            out["model"] = describe(run.model)
        return out
    if path.is_dir() and run.is_pipeline():
        model = resolve_model_dir(path)
        out = {"kind": "pipeline", "recipe": str(run.recipe), "finished": run.records.exists()}
        if model != path:
            out["final_model"] = str(model)
            out["model"] = describe(model)
        return out
    if path.is_file() and path.suffix == ".pt":
        from prunus.engine.checkpoint import load_checkpoint

        state = load_checkpoint(path)
        methods = state.get("methods")
        return {
            "kind": "checkpoint",
            "epochs_done": state.get("epoch"),
            "global_step": state.get("global_step"),
            "methods": sorted(methods) if isinstance(methods, dict) else state.get("method_names", []),
            "config": state.get("config", {}),
        }
    if not path.exists():
        raise PrunusError(f"no such file or directory: {path}")
    raise PrunusError(f"{path} is not a prunus model directory, run directory or checkpoint")


def run(args: argparse.Namespace) -> int:
    info = describe(Path(args.path))
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    if info["kind"] == "prn":
        from prunus.compress.report import LAYER_COLUMNS, LayerReport, layer_rows

        layers = [
            LayerReport(**{k: v for k, v in r.items() if k not in ("sparsity", "gap")}) for r in info.pop("layers")
        ]
        print_table(f"{args.path}: per layer", LAYER_COLUMNS, layer_rows(layers))
    rows = []
    for key, value in info.items():
        text = json.dumps(value) if isinstance(value, (dict, list)) else value
        rows.append((key, text if len(str(text)) < 200 else str(text)[:197] + "..."))
    print_table(str(args.path), ("field", "value"), rows)
    return 0
