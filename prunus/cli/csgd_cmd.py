"""`prunus csgd`: narrow a trained model with Centripetal SGD, merge it exactly, save the result.

A thin face over the csgd stage (the one C-SGD rounds loop): the C-SGD flags are the method's
config fields (`CSGDConfig`), the data and optimizer settings default to those of the run that
produced the model (MODEL_DIR/../config.yaml, when the model was saved by `prunus train`), and the
C-SGD phase has its own epochs, lr and schedule. The stage runs in `--out` through the pipeline
runner (rerunning resumes; a changed command is refused, `--force` starts over); the table
compares the trained (unmerged) and merged models.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path
from typing import Any

from prunus.cli._common import (
    add_command,
    add_data_args,
    add_output_arg,
    add_runtime_args,
    data_overrides,
    mark_input,
    parse_set,
    print_table,
)
from prunus.cli._config_flags import add_config_flags, config_values

__all__ = ["add_parser", "run"]

# CSGDConfig fields without a flag: Python-only or per-group mappings (--set), the stage's own width,
# merge_at_end (the command always merges) and seed (k-means; --seed is the run's seed: --set seed=N)
NO_FLAG = ("width", "widths", "filter_fn", "ignored_layers", "merge_at_end", "seed")


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    from prunus.methods.csgd import CSGDConfig
    from prunus.pruning import BUDGETS

    p = add_command(
        subparsers,
        "csgd",
        "Cluster filters, train them together with Centripetal SGD, merge them exactly, save the narrow model.",
        "prunus csgd runs/r20/model --width 0.625 --eps 0.05 --epochs 3 --out runs/r20-csgd\n"
        "  prunus csgd runs/r20/model --keep-macs 0.5 --epochs 3 --out runs/r20-csgd-half",
    )
    mark_input(p.add_argument("model_dir", help="trained model directory (model.json + model.safetensors)"))
    add_output_arg(
        p, "--out", "pipeline", required=True, metavar="DIR",
        help="run directory; the merged model goes to DIR/01-csgd/model; rerunning resumes",
    )  # fmt: skip
    p.add_argument("--force", action="store_true", help="start over: replace the run directory --out (a prunus one)")
    mark_input(
        p.add_argument(
            "--config", metavar="YAML", help="run config for data/training defaults (default: the model's run)"
        )
    )
    p.add_argument("--resume", action="store_true", help="accepted for compatibility: rerunning always resumes")
    p.add_argument("--trust-factory", action="store_true", help="allow importing the user factory named in the file")
    m = p.add_argument_group("C-SGD (the fields of prunus.methods.csgd.CSGDConfig)")
    m.add_argument("--width", type=float, help="ratio of channels kept per group (default 0.625 without a budget)")
    m.add_argument("--rounds", type=int, help="cluster -> train -> merge this many times, narrowing geometrically")
    dests = add_config_flags(p, CSGDConfig, skip=NO_FLAG, group=m, exclusive=BUDGETS)
    m.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="any csgd argument (YAML value)")
    g = p.add_argument_group("data")
    add_data_args(g, "dataset (default: the model's run, else fashion-mnist)")
    t = p.add_argument_group("training")
    t.add_argument("--epochs", type=int, default=3, help="C-SGD epochs (per round; default 3)")
    t.add_argument("--lr", type=float, default=0.05, help="peak learning rate (default 0.05)")
    t.add_argument("--schedule", choices=("cosine", "constant"), default="cosine", help="lr schedule (default cosine)")
    t.add_argument("--weight-decay", type=float, help="weight decay (default: the model's run, else 5e-4)")
    add_runtime_args(t)
    p.set_defaults(run=run, config_dests=dests)
    return p


def _saved_run(model_dir: str, config: str | None) -> dict[str, Any]:
    """The config of the run that produced the model (its data and training defaults), or {}."""
    from prunus.config import load_yaml
    from prunus.formats.run_dir import RunDir

    if config is None:
        saved = RunDir(Path(model_dir).resolve().parent).config
        config = str(saved) if saved.exists() else None
    return load_yaml(config) if config is not None else {}


def _stage(args: argparse.Namespace, saved: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(top-level blocks, the csgd stage) of the recipe the flags describe."""
    from prunus.methods import method_arguments
    from prunus.methods.csgd import CSGDConfig

    margs = config_values(args, args.config_dests)
    # old names (--set macs_ratio=0.5) pass: the stage moves them to the new ones, with a warning
    margs.update(parse_set(args.set, [*method_arguments("csgd"), *CSGDConfig.RENAMED], owner="csgd"))
    width = margs.pop("width", None) if args.width is None else args.width
    # the phase's own schedule: never inherit the trained run's warm-up or milestones
    train = {"epochs": args.epochs, "lr": args.lr, "schedule": args.schedule, "warmup_epochs": 0.0, "milestones": []}
    train.update({k: getattr(args, k) for k in ("weight_decay", "device", "threads") if getattr(args, k) is not None})
    data = {k: v for k, v in data_overrides(args).items() if v is not None}
    stage: dict[str, Any] = {"stage": "csgd", "train": train, "data": data, "args": margs}
    if width is not None:
        stage["width"] = width
    if args.rounds is not None:
        stage["rounds"] = args.rounds
    inherited_train = {k: v for k, v in (saved.get("train") or {}).items() if k not in ("seed", "epochs")}
    top = {"data": dict(saved.get("data") or {}), "train": inherited_train}
    return top, stage


def run(args: argparse.Namespace) -> int:
    from prunus.formats import load
    from prunus.formats.run_dir import RunDir, resolve_model_dir
    from prunus.models.info import get_info
    from prunus.pipeline import parse_recipe, run_pipeline

    source = resolve_model_dir(args.model_dir)
    model = load(source, trust_factory=args.trust_factory)
    baseline = get_info(model).metrics.get("final_test_acc")
    saved = _saved_run(str(source), args.config)
    top, stage = _stage(args, saved)
    seed = args.seed if args.seed is not None else int((saved.get("train") or {}).get("seed", 0))
    raw = {"version": 1, "name": "csgd", "input": str(source), "seeds": [seed], **top, "stages": [stage]}
    plan = parse_recipe(raw, layout="single")
    out = RunDir(args.out)
    if args.force and out.is_pipeline():
        out.check_no_links()
        shutil.rmtree(out.root)
    summary = run_pipeline(plan, out.root, progress=not args.no_progress, trust_factory=args.trust_factory)
    from prunus.engine.distributed import is_main

    if is_main():
        final = summary.records[0]["stages"][-1]
        _print_report(final["metrics"], baseline, out.at(final["model"]).root)
    return 0


def _print_report(m: dict[str, Any], baseline: float | None, out: Path) -> None:
    def pct(v: Any) -> str:
        return f"{v * 100:.2f}%" if isinstance(v, (int, float)) else "-"

    rows = [
        ("test accuracy", pct(m.get("csgd_trained_acc")), pct(m.get("csgd_merged_acc"))),
        ("MACs", f"{m.get('csgd_macs_before', 0):,}", f"{m.get('csgd_macs_after', 0):,}"),
        ("params", f"{m.get('csgd_params_before', 0):,}", f"{m.get('csgd_params_after', 0):,}"),
        ("max |logit diff|", "", f"{m.get('csgd_max_logit_diff', float('nan')):.3g}"),
    ]
    if baseline is not None:
        rows.insert(0, ("baseline test accuracy (model.json)", pct(baseline), ""))
    print_table("C-SGD: trained vs merged", ("", "trained (unmerged)", "merged"), rows)
    print(f"merged model: {out}")
