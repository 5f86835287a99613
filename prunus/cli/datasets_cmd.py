"""`prunus datasets`: list the registered datasets, where their files are, and how to get missing ones.

Example:
    $ prunus datasets
    $ prunus datasets 'cifar*' --data-dir ~/data --verify
"""

from __future__ import annotations

import argparse
from typing import Any

from prunus.cli._common import add_command, mark_input, print_table

__all__ = ["add_parser", "run"]


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register the `datasets` sub-command."""
    parser = add_command(
        subparsers,
        "datasets",
        "List the datasets prunus can load, where their files were found, and how to get missing ones.",
        "prunus datasets --data-dir ~/data",
    )
    parser.add_argument("pattern", nargs="?", default="*", help="shell-style name filter, e.g. 'cifar*' (default: all)")
    mark_input(
        parser.add_argument(
            "--data-dir", default=None, help="directory searched first (as for 'prunus train --data-dir')"
        )
    )
    parser.add_argument(
        "--verify", action="store_true", help="check found files against their known content checksums (reads them)"
    )
    parser.set_defaults(run=run)
    return parser


def _verified(name: str, directory: Any) -> str:
    from prunus.data import dataset_info
    from prunus.data.locate import verify

    source = dataset_info(name).source
    checks = verify(source, directory) if source is not None else {}
    known = {k: v for k, v in checks.items() if v is not None}
    if not known:
        return " (no content checksums to verify)"
    bad = sorted(k for k, ok in known.items() if not ok)
    return f" (checksum MISMATCH: {', '.join(bad)})" if bad else f" ({len(known)} files verified)"


def run(args: argparse.Namespace) -> int:
    """List datasets matching `args.pattern`; exit code 0, or 2 (via ConfigError) if none match."""
    from prunus.data import dataset_info, find_dataset, list_datasets
    from prunus.data.locate import check_root
    from prunus.errors import ConfigError

    check_root(args.data_dir)
    names = list_datasets(args.pattern)
    if not names:
        raise ConfigError(f"no dataset matches {args.pattern!r}; available: {', '.join(list_datasets())}")
    rows, notes = [], []
    for name in names:
        info = dataset_info(name)
        shape = "x".join(map(str, info.input_shape)) if info.input_shape else "any"
        classes = str(info.num_classes) if info.num_classes else "any"
        sizes = f"{info.sizes[0]} / {info.sizes[1]}" if info.sizes else "-"
        if info.present is None:
            status = "generated"
        elif (found := find_dataset(name, args.data_dir)) is not None:
            status = "found"
            notes.append(f"  {name}: {found}" + (_verified(name, found) if args.verify else ""))
        else:
            status = "missing"
            notes.append(f"  {name}: not found. {info.hint}")
        rows.append((name, shape, classes, sizes, status))
    # Paths and hints go below the table: a table cell would truncate or fold them.
    print_table("datasets", ["name", "CxHxW", "classes", "train / test", "files"], rows)
    if notes:
        print("Files:")
        print("\n".join(notes))
    return 0
