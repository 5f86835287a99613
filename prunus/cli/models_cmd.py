"""`prunus models [PATTERN]`: list the registered models with their params and MACs, or timm's (`--source timm`)."""

from __future__ import annotations

import argparse
import inspect
from typing import Any

from prunus.cli._common import add_command, parse_shape, print_table
from prunus.errors import ConfigError

__all__ = ["add_parser", "run"]


def _human(n: int) -> str:
    """12345678 -> '12.35M' (exact values are in the library's `count`)."""
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= scale:
            return f"{n / scale:.2f}{unit}"
    return str(n)


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register the `models` sub-command."""
    parser = add_command(
        subparsers,
        "models",
        "List the registered models with their parameters and MACs for an input shape.",
        "prunus models 'resnet*' --input-shape 3,32,32 --num-classes 100\n  prunus models --source timm 'mobilenetv3*'",
    )
    parser.add_argument("pattern", nargs="?", default="*", help="shell-style name filter (default: all models)")
    parser.add_argument(
        "--source",
        choices=("prunus", "timm"),
        default="prunus",
        help="prunus's registry (built and counted at --input-shape) or timm's models, listed as timm:NAME with "
        "the stem and classifier pruning keeps (nothing is built; needs the timm extra)",
    )
    parser.add_argument(
        "--input-shape", type=parse_shape, default=(1, 28, 28), metavar="C,H,W", help="input shape (default: 1,28,28)"
    )
    parser.add_argument("--num-classes", type=int, default=10, help="number of classes (default: 10)")
    parser.add_argument("--width-mult", type=float, default=None, help="channel width multiplier (default: 1.0)")
    parser.set_defaults(run=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Build each matching model on the CPU and print a table of params and MACs."""
    from prunus.formats.limits import build_bounded
    from prunus.measure import count
    from prunus.models import create_model, get_model_entry, list_models

    if args.source == "timm":
        return _list_timm(args.pattern)
    names = list_models(args.pattern)
    if not names:
        raise ConfigError(f"no model matches {args.pattern!r}; choose from: {', '.join(list_models())}")
    channels, height, width = args.input_shape
    rows = []
    for name in names:
        entry = get_model_entry(name)
        kwargs: dict[str, Any] = {
            "num_classes": args.num_classes,
            "in_channels": channels,
            "width_mult": args.width_mult,
        }
        if "input_size" in inspect.signature(entry.factory).parameters:
            # LeNets size their first Linear layer from the (square) input.
            if height != width:
                raise ConfigError(f"{name} needs a square input, got --input-shape {channels},{height},{width}")
            kwargs["input_size"] = height
        build_bounded(lambda: create_model(name, **kwargs), args.input_shape, name)  # noqa: B023
        counts = count(create_model(name, **kwargs), args.input_shape)
        rows.append(
            [
                name,
                _human(counts.params),
                _human(counts.macs),
                f"{entry.meta['stem']} / {entry.meta['classifier']}",
                entry.meta["summary"],
            ]
        )
    shape = ",".join(map(str, args.input_shape))
    print_table(
        f"models (input {shape}, {args.num_classes} classes)",
        ["model", "params", "MACs", "stem / classifier", "description"],
        rows,
    )
    return 0


def _list_timm(pattern: str) -> int:
    from prunus.models.timm_models import describe_timm_models

    rows = describe_timm_models(pattern)
    if not rows:
        raise ConfigError(f"no timm model matches {pattern!r}; try a wider pattern such as 'resnet*'")
    rows = [[name, f"{stem} / {classifier}", ",".join(map(str, size)) or "-"] for name, stem, classifier, size in rows]
    print_table(f"timm models matching {pattern!r} ({len(rows)})", ["model", "stem / classifier", "timm's input"], rows)
    return 0
