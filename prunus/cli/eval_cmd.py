"""`prunus eval`: accuracy, loss, MACs and params of a saved model on a dataset split."""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

from prunus.cli._common import add_command, mark_input, print_table
from prunus.errors import ConfigError

__all__ = ["add_parser", "evaluate_model", "run"]


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    from prunus.data import DEFAULT_EVAL_BATCH_SIZE, list_datasets

    p = add_command(
        subparsers,
        "eval",
        "Evaluate a saved model directory or .prn file on a dataset split; several models (or a run directory of "
        "N networks) are also scored as their logit ensemble.",
        "prunus eval runs/r20/model --data fashion-mnist --split test\n"
        "  prunus eval runs/graft --data fashion-mnist   # net0/model, net1/model and their ensemble",
    )
    mark_input(
        p.add_argument(
            "model_dir",
            nargs="+",
            help="model directory (model.json + model.safetensors), a .prn file, or a run directory with net<k>/model",
        )
    )
    p.add_argument("--data", default="fashion-mnist", choices=list_datasets(), help="dataset (default fashion-mnist)")
    mark_input(p.add_argument("--data-dir", help="directory holding the dataset files"))
    p.add_argument("--split", default="test", choices=("test", "val"), help="which split (default test)")
    p.add_argument(
        "--batch-size",
        type=int,
        default=DEFAULT_EVAL_BATCH_SIZE,
        help=f"images per forward pass (default {DEFAULT_EVAL_BATCH_SIZE}: larger batches are slower per image on CPU)",
    )
    p.add_argument("--trust-factory", action="store_true", help="allow importing the user factory named in the file")
    p.set_defaults(run=run)
    return p


def evaluate_model(model: Any, data_name: str, data_dir: str | None, split: str, batch_size: int) -> dict[str, float]:
    """Accuracy and mean loss of `model` on `split` of `data_name` (CPU, eval mode)."""
    from prunus.data import DataConfig, build_loaders
    from prunus.errors import ConfigError
    from prunus.measure.evaluation import evaluate

    data = build_loaders(DataConfig(name=data_name, root=data_dir, eval_batch_size=batch_size, augment=False))
    loader = data.test if split == "test" else data.val
    if loader is None:
        raise ConfigError(f"dataset {data_name!r} has no {split} split with this configuration")
    from prunus.cli.export_cmd import check_input_fits

    check_input_fits(model, tuple(data.input_shape), f"--data {data_name} (images of shape)")
    result = evaluate(model, loader)
    return {"acc": result["acc"], "loss": result["loss"], "images": result["count"]}


def model_dirs(paths: list[str]) -> list[Path]:
    """Expand run directories of a population (net0/model, net1/model, ...) into model directories."""
    from prunus.formats.run_dir import RunDir

    out: list[Path] = []
    for p in map(Path, paths):
        nets = [n.model for n in RunDir(p).networks() if (n.model / "model.json").exists()]
        # anything else goes to `load`, which says what is wrong with it (or finds the model a run made)
        out.extend(nets if nets and not (p / "model.json").exists() else [p])
    return out


def run(args: argparse.Namespace) -> int:
    from prunus.compress import load
    from prunus.measure import count
    from prunus.measure.ensemble import LogitEnsemble
    from prunus.models.info import get_info

    if args.batch_size < 1:
        raise ConfigError(f"--batch-size must be >= 1, got {args.batch_size}")
    dirs = model_dirs(args.model_dir)
    models = [load(d, trust_factory=args.trust_factory) for d in dirs]
    rows: list[tuple[str, Any]] = []
    for d, model in zip(dirs, models):
        result = evaluate_model(model, args.data, args.data_dir, args.split, args.batch_size)
        if not math.isfinite(result["loss"]):
            raise ConfigError(f"{d} gives non-finite outputs on {args.data} (loss {result['loss']})")
        counts = count(model, (1, *get_info(model).input_shape))
        prefix = f"{d}: " if len(models) > 1 else ""
        rows += [
            (f"{prefix}{args.split} accuracy", f"{result['acc'] * 100:.2f}%"),
            (f"{prefix}{args.split} loss", f"{result['loss']:.4f}"),
        ]
    if len(models) > 1:
        result = evaluate_model(LogitEnsemble(models), args.data, args.data_dir, args.split, args.batch_size)
        rows += [
            (f"ensemble of {len(models)}: {args.split} accuracy", f"{result['acc'] * 100:.2f}%"),
            (f"ensemble of {len(models)}: {args.split} loss", f"{result['loss']:.4f}"),
        ]
    rows += [("images", result["images"]), ("MACs", f"{counts.macs:,}"), ("params", f"{counts.params:,}")]
    if len(models) > 1:
        rows[-2:] = [("MACs (each model)", f"{counts.macs:,}"), ("params (each model)", f"{counts.params:,}")]
    title = args.model_dir[0] if len(args.model_dir) == 1 else f"{len(models)} models"
    print_table(f"{title} on {args.data}", ("metric", "value"), rows)
    return 0
