"""Helpers shared by command modules: parser construction and table printing."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

__all__ = ["add_command", "parse_int_list", "parse_str_list", "print_table"]


def add_command(subparsers: Any, name: str, summary: str, example: str) -> argparse.ArgumentParser:
    """Add a sub-command whose --help ends with a usage example."""
    return subparsers.add_parser(
        name,
        help=summary,
        description=summary,
        epilog=f"example:\n  {example}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def print_table(title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """Print a table with rich (plain text when output is not a terminal)."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for col in columns:
        table.add_column(str(col))
    for row in rows:
        table.add_row(*(_fmt(v) for v in row))
    console = Console()
    if not console.is_terminal:  # a log file or pipe: do not squeeze wide tables into 80 columns
        console = Console(width=160)
    console.print(table)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def parse_int_list(text: str) -> tuple[int, ...]:
    """argparse type for "1,16,64" -> (1, 16, 64); a bad value is a one-line usage error."""
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values:
        raise argparse.ArgumentTypeError("expected at least one integer")
    return values


def parse_str_list(text: str) -> tuple[str, ...]:
    """argparse type for "l1,fpgm" -> ("l1", "fpgm") (names; empty items dropped)."""
    values = tuple(v.strip() for v in text.split(",") if v.strip())
    if not values:
        raise argparse.ArgumentTypeError("expected at least one comma-separated name")
    return values


def add_data_args(group: Any, dataset_help: str = "dataset (default fashion-mnist)") -> None:
    """--data, --data-dir, --subset, --val-size, --batch-size (read back with `data_overrides`)."""
    from prunus.data import list_datasets

    group.add_argument("--data", choices=list_datasets(), help=dataset_help)
    group.add_argument("--data-dir", help="directory holding the dataset files")
    group.add_argument("--subset", type=int, help="train on a fixed subset of this many training images")
    group.add_argument("--val-size", type=int, help="images held out from training for validation (default 5000)")
    group.add_argument("--batch-size", type=int, help="training batch size (default 128)")


def data_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The DataConfig overrides given by `add_data_args` flags (None = not given)."""
    return {
        "name": args.data,
        "root": args.data_dir,
        "subset": args.subset,
        "val_size": args.val_size,
        "batch_size": args.batch_size,
    }


def add_runtime_args(group: Any) -> None:
    """--seed, --device, --threads, --no-progress: how (not what) a run trains."""
    group.add_argument("--seed", type=int, help="seed of initialisation, data order and augmentation (default 0)")
    group.add_argument("--device", choices=("auto", "cpu", "cuda"), help="default auto: CUDA when available")
    group.add_argument("--threads", type=int, help="torch CPU threads")
    group.add_argument("--no-progress", action="store_true", help="no progress bar or epoch lines")


def parse_set(items: Sequence[str], accepted: Sequence[str] | None = None, owner: str = "method") -> dict[str, Any]:
    """`--set KEY=VALUE` items -> {key: YAML-parsed value}; keys outside `accepted` raise ConfigError."""
    import yaml

    from prunus.errors import ConfigError

    values: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"--set expects KEY=VALUE, got {item!r}")
        if accepted is not None and key not in accepted:
            raise ConfigError(f"{owner} has no argument {key!r}; accepted: {', '.join(sorted(accepted))}")
        values[key] = yaml.safe_load(value)
    return values
