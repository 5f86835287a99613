"""Helpers shared by command modules: parser construction, the input/output guards, tables.

How a command gets the reliability guarantees (one `prunus: error:` line and exit 2 for bad
input, nothing outside its own outputs touched) — a new command (run, compress, report, ...)
gets all of them by using these helpers and nothing else:

- `add_command` creates the sub-parser. `prunus.cli.build_parser` then hardens every option of
  every command: `type=float` becomes `finite_float` (NaN/inf/out-of-range refused), `type=int`
  becomes `cli_int` (|value| < 2**31), and argparse usage errors print one line.
- `add_output_arg(parser, "--out", kind)` declares an output (a kind of
  `prunus.formats.outputs.OUTPUT_KINDS`: "file", "rewrite", "model", "run" or "pipeline"). Before
  `run(args)` is called, `prunus.cli.main` passes every declared output through
  `prunus.formats.outputs.check_output` (existing files and model/run directories need `--force`, which
  this adds for those kinds; devices, FIFOs, symlinks, foreign directories, unwritable places and
  the command's own inputs are refused). A command must not write anywhere it did not declare;
  tests/cli/test_bad_inputs.py checks this for every command and fails for any
  `--out`/`--json PATH`-like option not declared this way.
- `mark_input(action)` declares an input path (a model directory, a config file): outputs may not
  overlap it; `mark_input(action, "dir")` also makes `main` refuse, before the command runs, a
  value that is not an existing directory. Inputs are read with `prunus._io.safe.read_*` (regular
  files, size caps).
- `parse_set` parses `--set KEY=VALUE` with yaml.safe_load and refuses NaN/inf.
- Any `PrunusError` raised by `run` becomes `prunus: error: <message>` + exit 2; so does an
  `OSError` from the file system (permission denied, disk full), as a last resort.

Example:
    >>> import argparse
    >>> p = argparse.ArgumentParser()
    >>> _ = add_output_arg(p, "--out", "file", help="where to write")
    >>> sorted(a.dest for a in p._actions if getattr(a, "prunus_output", None))
    ['out']
"""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Sequence
from typing import Any

__all__ = [
    "INT_LIMIT",
    "add_command",
    "add_output_arg",
    "check_outputs",
    "cli_int",
    "finite_float",
    "harden_parser",
    "mark_input",
    "parse_int_list",
    "parse_shape",
    "parse_str_list",
    "print_table",
]

# output kinds an existing value of which is replaced only with --force (add_output_arg adds it)
FORCE_KINDS = ("file", "model", "run")
INT_LIMIT = 2**31  # no integer option means anything beyond this; bigger values are typos or attacks


def add_command(subparsers: Any, name: str, summary: str, example: str) -> argparse.ArgumentParser:
    """Add a sub-command whose --help ends with a usage example."""
    return subparsers.add_parser(
        name,
        help=summary,
        description=summary,
        epilog=f"example:\n  {example}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def finite_float(text: str) -> float:
    """argparse type: a finite float ("nan", "inf", "1e999" are usage errors)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def cli_int(text: str) -> int:
    """argparse type: an integer whose magnitude is below `INT_LIMIT`."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if abs(value) >= INT_LIMIT:
        raise argparse.ArgumentTypeError(f"{text} is too large (limit {INT_LIMIT - 1})")
    return value


# argparse names the type in "invalid <name> value" messages
finite_float.__name__ = "float"
cli_int.__name__ = "int"


def add_output_arg(parser: argparse.ArgumentParser, flag: str, kind: str, **kwargs: Any) -> argparse.Action:
    """Declare an output path option; `main` checks it with `check_output` before the command runs.

    Args:
        parser: the command's parser.
        flag: e.g. "--out" or "--json".
        kind: "file", "rewrite" (a file the command updates by design: no --force), "model" (a
            model directory), "run" (a training run directory) or "pipeline" (a `prunus run`
            directory, resumed by rerunning: no --force).
        kwargs: passed to `add_argument` (help, metavar, required, ...).
    """
    from prunus.formats.outputs import OUTPUT_KINDS

    if kind not in OUTPUT_KINDS:
        raise ValueError(f"unknown output kind {kind!r}; one of {OUTPUT_KINDS}")
    action = parser.add_argument(flag, **kwargs)
    action.prunus_output = kind  # type: ignore[attr-defined]
    if kind in FORCE_KINDS and not any("--force" in a.option_strings for a in parser._actions):
        parser.add_argument("--force", action="store_true", help="replace an existing output written by prunus")
    return action


def mark_input(action: argparse.Action, kind: str = "path") -> argparse.Action:
    """Declare an option/positional as an input path: no output may be it, or contain it.

    kind "dir": `main` also refuses a value that is not an existing directory (a missing path, a
    file, a FIFO, a link to a device) with one line before the command runs.
    """
    if kind not in ("path", "dir"):
        raise ValueError(f"unknown input kind {kind!r}")
    action.prunus_input = kind  # type: ignore[attr-defined]
    return action


def _check_input_dir(value: str, flag: str) -> None:
    from prunus.errors import ConfigError

    try:
        is_dir, exists = os.path.isdir(value), os.path.lexists(value)
    except (OSError, ValueError) as exc:  # ValueError: a NUL byte in the path
        raise ConfigError(f"{flag} {value!r} cannot be used: {exc}") from None
    if not is_dir:
        raise ConfigError(
            f"{flag} {value} {'is not a directory' if exists else 'does not exist'}; expected a directory"
        )


def _sub_parsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    found = [parser]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in dict.fromkeys(action.choices.values()):
                found += _sub_parsers(sub)
    return found


def harden_parser(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Make every numeric option of `parser` and its sub-commands refuse NaN, inf and absurd sizes."""
    for p in _sub_parsers(parser):
        for action in p._actions:
            if action.type is float:
                action.type = finite_float
            elif action.type is int:
                action.type = cli_int
    return parser


def check_outputs(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Check the chosen command's declared paths: input directories exist, outputs pass `check_output`."""
    from prunus.formats.outputs import check_output

    actions = [a for p in _sub_parsers(parser) if p.prog.split()[-1] == args.command for a in p._actions]
    sources: list[str] = []
    for action in actions:
        if getattr(action, "prunus_input", False):
            value = getattr(args, action.dest, None)
            values = [value] if isinstance(value, str) else [v for v in value or () if isinstance(v, str)]
            if action.prunus_input == "dir":
                for v in values:
                    _check_input_dir(v, action.option_strings[0] if action.option_strings else action.dest.upper())
            sources += values
    for action in actions:
        kind = getattr(action, "prunus_output", None)
        value = getattr(args, action.dest, None)
        if kind and isinstance(value, str):
            check_output(
                value,
                kind,
                force=bool(getattr(args, "force", False)),
                resume=bool(getattr(args, "resume", False)),
                sources=sources,
                flag=action.option_strings[0] if action.option_strings else action.dest,
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


def parse_shape(text: str) -> tuple[int, int, int]:
    """argparse type for "3,64,64" -> (3, 64, 64): C,H,W of positive integers; else a one-line usage error."""
    try:
        shape = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers such as 1,28,28, got {text!r}") from None
    if len(shape) != 3 or min(shape) < 1:
        raise argparse.ArgumentTypeError(f"expected C,H,W with positive sizes, got {text!r}")
    return shape  # type: ignore[return-value]


def parse_str_list(text: str) -> tuple[str, ...]:
    """argparse type for "l1,fpgm" -> ("l1", "fpgm") (names; empty items dropped)."""
    values = tuple(v.strip() for v in text.split(",") if v.strip())
    if not values:
        raise argparse.ArgumentTypeError("expected at least one comma-separated name")
    return values


def add_data_args(group: Any, dataset_help: str = "dataset (default fashion-mnist)") -> None:
    """--data, --data-dir, --subset, --val-size, --test-subset, --batch-size (read back with `data_overrides`)."""
    from prunus.data import list_datasets

    group.add_argument("--data", choices=list_datasets(), help=dataset_help)
    mark_input(group.add_argument("--data-dir", help="directory holding the dataset files"))
    group.add_argument("--subset", type=int, help="train on a fixed subset of this many training images")
    group.add_argument("--val-size", type=int, help="images held out from training for validation (default 5000)")
    group.add_argument("--test-subset", type=int, help="score a fixed subset of this many test images (default: all)")
    group.add_argument("--batch-size", type=int, help="training batch size (default 128)")


def data_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The DataConfig overrides given by `add_data_args` flags (None = not given)."""
    return {
        "name": args.data,
        "root": args.data_dir,
        "subset": args.subset,
        "val_size": args.val_size,
        "test_subset": args.test_subset,
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

    from prunus.config import check_finite_values
    from prunus.errors import ConfigError

    values: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"--set expects KEY=VALUE, got {item!r}")
        if accepted is not None and key not in accepted:
            raise ConfigError(f"{owner} has no argument {key!r}; accepted: {', '.join(sorted(accepted))}")
        try:
            values[key] = yaml.safe_load(value)
        except (yaml.YAMLError, RecursionError) as exc:
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise ConfigError(f"--set {key}: value {value!r} is not valid YAML ({first})") from None
        check_finite_values(f"--set {key}", values[key])
    return values
