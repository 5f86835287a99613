"""`prunus report`: a run's report.html + summary.md, or the README results block from result files."""

from __future__ import annotations

import argparse
from typing import Any

from prunus.cli._common import add_command, add_output_arg, mark_input

__all__ = ["add_parser", "run"]


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = add_command(
        subparsers,
        "report",
        "Write RUN_DIR/report.html and summary.md, or (--results) the README results block and docs/RESULTS.md.",
        "prunus report runs/demo\n  prunus report --results benchmarks/results --readme README.md "
        "--markdown docs/RESULTS.md",
    )
    mark_input(
        p.add_argument(
            "run_dir",
            nargs="?",
            help="pipeline run directory (written by prunus run); report.html and summary.md are (re)written in it",
        ),
        "dir",
    )
    p.add_argument("--title", help="report title (default: the recipe name)")
    mark_input(
        p.add_argument("--results", metavar="DIR", help="render the results tables from DIR's benchmark result files"),
        "dir",
    )
    add_output_arg(
        p,
        "--readme",
        "rewrite",
        metavar="FILE",
        help="with --results: rewrite the block between FILE's RESULTS markers (an existing regular file; "
        "a directory, FIFO, device or link is refused)",
    )
    add_output_arg(
        p,
        "--markdown",
        "rewrite",
        metavar="FILE",
        help="with --results: write the tables to FILE as a document, replacing it atomically (a new or "
        "regular file; a directory, FIFO, device or link is refused)",
    )
    p.set_defaults(run=run)
    return p


def run(args: argparse.Namespace) -> int:
    from prunus.errors import ConfigError

    if (args.run_dir is None) == (args.results is None):
        raise ConfigError("give either RUN_DIR or --results DIR")
    if args.results is not None:
        from prunus.report.results import render, update_readme, write_document

        if args.readme:
            changed = update_readme(args.readme, args.results)
            print(f"{args.readme}: results block {'updated' if changed else 'already up to date'}")
        if args.markdown:
            write_document(args.markdown, args.results)
            print(f"{args.markdown}: written")
        if not (args.readme or args.markdown):
            print(render(args.results), end="")
        return 0
    if args.readme or args.markdown:
        raise ConfigError("--readme and --markdown go with --results")
    from prunus.report import write_report

    paths = write_report(args.run_dir, title=args.title)
    print(f"report: {paths['html']}\nsummary: {paths['markdown']}")
    return 0
