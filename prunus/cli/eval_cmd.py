"""`prunus eval`: accuracy, loss, MACs and params of a saved model on a dataset split."""

from __future__ import annotations

import argparse
from typing import Any

from prunus.cli._common import add_command, print_table

__all__ = ["add_parser", "evaluate_model", "run"]


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    from prunus.data import list_datasets

    p = add_command(
        subparsers,
        "eval",
        "Evaluate a saved model directory on a dataset split.",
        "prunus eval runs/r20/model --data fashion-mnist --split test",
    )
    p.add_argument("model_dir", help="model directory (model.json + model.safetensors)")
    p.add_argument("--data", default="fashion-mnist", choices=list_datasets(), help="dataset (default fashion-mnist)")
    p.add_argument("--data-dir", help="directory holding the dataset files")
    p.add_argument("--split", default="test", choices=("test", "val"), help="which split (default test)")
    p.add_argument("--batch-size", type=int, default=1024)
    p.add_argument("--trust-factory", action="store_true", help="allow importing the user factory named in the file")
    p.set_defaults(run=run)
    return p


def evaluate_model(model: Any, data_name: str, data_dir: str | None, split: str, batch_size: int) -> dict[str, float]:
    """Accuracy and mean loss of `model` on `split` of `data_name` (CPU, eval mode)."""
    from prunus.data import DataConfig, build_loaders
    from prunus.errors import ConfigError
    from prunus.evaluation import evaluate

    data = build_loaders(DataConfig(name=data_name, root=data_dir, eval_batch_size=batch_size, augment=False))
    loader = data.test if split == "test" else data.val
    if loader is None:
        raise ConfigError(f"dataset {data_name!r} has no {split} split with this configuration")
    result = evaluate(model, loader)
    return {"acc": result["acc"], "loss": result["loss"], "images": result["count"]}


def run(args: argparse.Namespace) -> int:
    from prunus.formats import load
    from prunus.measure import count
    from prunus.model_info import get_info

    model = load(args.model_dir, trust_factory=args.trust_factory)
    result = evaluate_model(model, args.data, args.data_dir, args.split, args.batch_size)
    counts = count(model, (1, *get_info(model).input_shape))
    rows = [
        (f"{args.split} accuracy", f"{result['acc'] * 100:.2f}%"),
        (f"{args.split} loss", f"{result['loss']:.4f}"),
        ("images", result["images"]),
        ("MACs", f"{counts.macs:,}"),
        ("params", f"{counts.params:,}"),
    ]
    print_table(f"{args.model_dir} on {args.data}", ("metric", "value"), rows)
    return 0
