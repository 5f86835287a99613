"""Run an accuracy protocol written as a pipeline recipe and commit its results.

The recipe holds the protocol (model, data, epochs, arms, seeds); `prunus.pipeline` runs it
(resuming whatever finished), and `prunus.report` computes the statistics (mean ± std, paired
differences with 95% t intervals), the tables and the provenance. This script only copies them
into benchmarks/results/<name>.json and <name>.md, where the README block picks the table up.

    .venv/bin/python benchmarks/accuracy_recipe.py benchmarks/recipes/accuracy_pruning.yaml
    .venv/bin/python benchmarks/accuracy_recipe.py benchmarks/recipes/accuracy_pruning.yaml \\
        --set data.subset=512 --set train.epochs=1 --set seeds=[0] --name smoke --results-dir /tmp/smoke
"""

from __future__ import annotations

import argparse
from pathlib import Path

from _common import parse_set, write_json, write_text

import prunus
from prunus.formats.run_dir import RunDir
from prunus.pipeline import load_recipe, run_pipeline
from prunus.report.stats import summarise_records

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("recipe")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="recipe override (YAML value)")
    ap.add_argument("--name", help="result file stem (default: the recipe's name)")
    ap.add_argument("--results-dir", default=str(ROOT / "benchmarks" / "results"))
    ap.add_argument("--progress", action="store_true")
    args = ap.parse_args()
    plan = load_recipe(args.recipe, parse_set(args.set))
    name = args.name or plan.name
    run_dir = ROOT / "runs" / name
    summary = run_pipeline(plan, run_dir, progress=args.progress)
    stats = summarise_records(summary.records, ["acc", "best_val_test_acc"], baseline=plan.baseline,
                              means=("macs", "params", "bytes", "latency_ms"))  # fmt: skip
    results = Path(args.results_dir)
    write_json(results / f"{name}.json", {"recipe": plan.raw, "summary": stats, "records": summary.records,
                                         "provenance": prunus.provenance()})  # fmt: skip
    report = RunDir(run_dir).report_md  # written by the recipe's report stage
    write_text(results / f"{name}.md", report.read_text(encoding="utf-8"))
    print(report.read_text(encoding="utf-8"))


if __name__ == "__main__":
    main()
