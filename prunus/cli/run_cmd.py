"""`prunus run`: run a pipeline recipe (stages x seeds x arms), resuming whatever already finished."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from prunus.cli._common import add_command, add_output_arg, mark_input, parse_set, print_table

__all__ = ["add_parser", "run"]


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = add_command(
        subparsers,
        "run",
        "Run a pipeline recipe: train -> csgd/prune/finetune -> export -> bench -> report, resumable.",
        "prunus run recipes/quickstart.yaml --out runs/demo --set baseline.train.epochs=1",
    )
    mark_input(p.add_argument("recipe", help="pipeline recipe (YAML with a 'stages' list)"))
    add_output_arg(
        p,
        "--out",
        "pipeline",
        metavar="DIR",
        help="run directory (default runs/<recipe name>): a new path, an empty directory, or one a pipeline "
        "wrote (it holds recipe.yaml), which a rerun resumes; a file, a link, a directory of other files "
        "or one holding the recipe is refused",
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a recipe value (YAML): data.subset=2000, seeds=[0,1], <stage>.train.epochs=1",
    )
    p.add_argument("--dry-run", action="store_true", help="validate the recipe and print the plan; run nothing")
    p.add_argument("--no-progress", action="store_true", help="no training progress bars")
    p.add_argument(
        "--trust-factory",
        action="store_true",
        help="allow importing the user factory that the recipe's input model names in its model.json",
    )
    p.set_defaults(run=run)
    return p


def run(args: argparse.Namespace) -> int:
    from prunus.formats.outputs import check_output
    from prunus.pipeline import load_recipe, run_pipeline
    from prunus.report.tables import METHOD_COLUMNS, STAGE_COLUMNS, arm_rows, method_rows, stage_rows

    plan = load_recipe(args.recipe, parse_set(args.set, owner="recipe"))
    out = Path(args.out or Path("runs") / plan.name)
    if args.out is None:  # main checked a given --out before; the default is known only now
        check_output(out, "pipeline", sources=[args.recipe], flag="run directory")
    if args.dry_run:
        rows = [(arm, i, s.name, s.kind, s.input or "-") for arm, chain in plan.arms.items()
                for i, s in enumerate(chain, 1)]  # fmt: skip
        rows += [("(all)", "-", s.name, s.kind, "every chain") for s in plan.final]
        print_table(
            f"plan {plan.name!r}: seeds {list(plan.seeds)} -> {out}", ("arm", "#", "stage", "kind", "input"), rows
        )
        return 0
    summary = run_pipeline(plan, out, progress=not args.no_progress, trust_factory=args.trust_factory)
    for rec in summary.records[:4]:
        print_table(f"{plan.name}: arm {rec['arm']}, seed {rec['seed']}", STAGE_COLUMNS, stage_rows(rec))
        methods = method_rows(rec)  # what WE, grafting, C-SGD, MFP did, as the stages recorded it
        if methods:
            print_table(f"{plan.name}: arm {rec['arm']}, seed {rec['seed']}: methods", METHOD_COLUMNS, methods)
    if len(summary.records) > 1:
        columns = ("arm", "n", "test acc", f"diff vs {plan.baseline}", "MACs", "params", "bytes", "latency (ms)")
        print_table(
            f"{plan.name}: arms over seeds {list(plan.seeds)}", columns, arm_rows(summary.records, plan.baseline)
        )
    print(f"run directory: {out}")
    return 0
