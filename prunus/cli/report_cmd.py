"""`prunus report`: (re)write a pipeline run's report.html and summary.md."""

from __future__ import annotations

import argparse
from typing import Any

from prunus.cli._common import add_command, mark_input

__all__ = ["add_parser", "run"]


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = add_command(
        subparsers,
        "report",
        "Write RUN_DIR/report.html and summary.md (self-contained HTML with plots, and a Markdown summary).",
        "prunus report runs/demo",
    )
    mark_input(
        p.add_argument(
            "run_dir",
            help="pipeline run directory (written by prunus run); report.html and summary.md are (re)written in it",
        ),
        "dir",
    )
    p.add_argument("--title", help="report title (default: the recipe name)")
    p.add_argument(
        "--trust-factory",
        action="store_true",
        help="load models built by a user factory (their model.json names a 'module:function' to import) to draw "
        "their layer widths; without it those widths are left out with a note",
    )
    p.set_defaults(run=run)
    return p


def run(args: argparse.Namespace) -> int:
    from prunus.report import write_report

    paths = write_report(args.run_dir, title=args.title, trust_factory=args.trust_factory)
    print(f"report: {paths['html']}\nsummary: {paths['markdown']}")
    return 0
