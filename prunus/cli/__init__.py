"""The `prunus` command line: one entry point, one module per sub-command.

Each command module exposes `add_parser(subparsers)` (flags, help text with an example) and
`run(args) -> int`. Commands only build objects from flags/recipes and call the library; no logic
of their own. A `PrunusError` (bad name, missing/corrupt file, value out of range) prints one line
`prunus: error: ...` and exits with code 2 — no traceback.

Example:
    $ prunus train --model resnet20 --data fashion-mnist --epochs 15 --out runs/r20
    $ prunus eval runs/r20/model
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from prunus._version import __version__
from prunus.errors import PrunusError

__all__ = ["build_parser", "main"]

# Order = order in `prunus --help`. A command module is imported lazily by name so that a
# command's optional dependencies (onnxruntime, matplotlib) are not needed by the others.
COMMANDS: tuple[str, ...] = (
    "train",
    "eval",
    "prune",
    "csgd",
    "compress",
    "export",
    "bench",
    "run",
    "report",
    "info",
    "models",
    "datasets",
)


def _available_commands() -> list[tuple[str, object]]:
    found = []
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"prunus.cli.{name.replace('-', '_')}_cmd")
        except ModuleNotFoundError as exc:
            if exc.name and exc.name.startswith("prunus.cli."):
                continue  # command not built yet
            raise
        found.append((name, module))
    return found


class _Parser(argparse.ArgumentParser):
    """argparse exits with 2 on usage errors already; keep its one-line format."""


def build_parser() -> argparse.ArgumentParser:
    """The full parser with every available sub-command."""
    parser = _Parser(
        prog="prunus",
        description="Manage the filter redundancy of CNNs: train, prune, merge, reactivate, compress, ship.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Run 'prunus COMMAND --help' for a command's options and an example.",
    )
    parser.add_argument("--version", action="version", version=f"prunus {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for _name, module in _available_commands():
        module.add_parser(sub)  # type: ignore[attr-defined]
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Console-script entry point; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    try:
        return int(args.run(args) or 0)
    except PrunusError as exc:
        print(f"prunus: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("prunus: interrupted", file=sys.stderr)
        return 130
