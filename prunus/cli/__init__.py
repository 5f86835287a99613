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
from typing import Any, NoReturn

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
    """argparse with the CLI's error format: one line `prunus: error: ...`, exit code 2."""

    def error(self, message: str) -> NoReturn:
        command = self.prog.split()[-1]
        where = f"{command}: " if command != "prunus" else ""
        hint = f" (see 'prunus {command} --help')" if command != "prunus" else " (see 'prunus --help')"
        line = " ".join(f"{where}{message}{hint}".split())
        self.exit(2, f"prunus: error: {line}\n")


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
    from prunus.cli._common import harden_parser

    return harden_parser(parser)


def _error(message: str) -> int:
    line = " ".join(message.split()) or "failed"  # exactly one line, whatever the message held
    print(f"prunus: error: {line}", file=sys.stderr)
    return 2


def _one_line_warning(
    message: Any, category: Any, filename: str, lineno: int, file: Any = None, line: Any = None
) -> None:
    """A warning as one `prunus: warning:` line, without the file path and source line Python adds."""
    text = " ".join(str(message).split())
    print(f"prunus: warning: {text}", file=sys.stderr if file is None else file)


def console_main() -> int:
    """The `prunus` console script and `python -m prunus`: warnings as one line each, then `main`."""
    import warnings

    # Only the process entry point changes how warnings print: `main` called in-process (tests,
    # notebooks) leaves the caller's warning handling alone, so `pytest.warns` still sees them.
    warnings.showwarning = _one_line_warning
    # prunus's own deprecations (an old flag or recipe key) are shown: Python hides DeprecationWarning by default
    from prunus.errors import PrunusDeprecationWarning

    warnings.filterwarnings("default", category=PrunusDeprecationWarning)
    return main()


class _ProgressLines:
    """Library progress (INFO records of the `prunus` loggers: latency tables, re-aimed budgets) as
    `prunus: ...` lines on the stderr of the moment (a test's captured one included)."""

    def __init__(self) -> None:
        import logging

        class Handler(logging.Handler):
            def emit(self, record: logging.LogRecord) -> None:
                print(f"prunus: {record.getMessage()}", file=sys.stderr, flush=True)

        self.handler = Handler(level=logging.INFO)
        self.logger = logging.getLogger("prunus")

    def __enter__(self) -> None:
        import logging

        self.level = self.logger.level
        self.logger.addHandler(self.handler)
        if self.logger.getEffectiveLevel() > logging.INFO:
            self.logger.setLevel(logging.INFO)

    def __exit__(self, *exc: object) -> None:
        self.logger.removeHandler(self.handler)
        self.logger.setLevel(self.level)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one prunus command in-process; returns the exit code. Example: `main(["info", "runs/r20"])`."""
    with _ProgressLines():
        return _main(argv)


def _main(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    from prunus.cli._common import check_outputs

    try:
        check_outputs(parser, args)  # before the command runs: a refused output changes nothing
        return int(args.run(args) or 0)
    except PrunusError as exc:
        return _error(str(exc))
    except OSError as exc:  # the file system said no (permission, disk full, read-only): not a bug
        where = f": {exc.filename}" if exc.filename else ""
        return _error(f"{exc.strerror or exc}{where}")
    except KeyboardInterrupt:
        print("prunus: interrupted", file=sys.stderr)
        return 130
