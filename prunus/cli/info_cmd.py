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
        "Describe a model directory, run directory, checkpoint or .prn file.",
        "prunus info runs/r20/model",
    )
    mark_input(p.add_argument("path", help="model dir, run dir, checkpoint.pt or model.prn"))
    p.add_argument("--json", action="store_true", help="print the description as JSON")
    p.set_defaults(run=run)
    return p


def describe(path: Path) -> dict[str, Any]:
    """A JSON-able description of `path` (model dir, run dir, checkpoint or .prn file)."""
    from prunus.formats import MODEL_JSON, MODEL_WEIGHTS, read_model_json

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
    if path.is_dir() and (path / "config.yaml").exists():
        out: dict[str, Any] = {"kind": "run", "config": str(path / "config.yaml")}
        metrics = path / "metrics.jsonl"
        if metrics.exists():
            from prunus.engine.progress import read_records

            records = read_records(metrics)  # bounded; a torn last line is skipped, garbage is an error
            out["epochs_logged"] = len(records)
            out["last_epoch"] = records[-1] if records else None
        if (path / "model").exists():
            out["model"] = describe(path / "model")
        return out
    if path.is_file() and path.suffix == ".pt":
        from prunus.engine.checkpoint import load_checkpoint

        state = load_checkpoint(path)
        return {
            "kind": "checkpoint",
            "epochs_done": state["epoch"],
            "global_step": state["global_step"],
            "methods": state["method_names"],
            "config": state["config"],
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
