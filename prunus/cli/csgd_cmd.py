"""`prunus csgd`: narrow a trained model with Centripetal SGD, merge it exactly, save the result.

The data, batch and optimizer settings default to those of the run that produced the model
(MODEL_DIR/../config.yaml, when the model was saved by `prunus train`); the C-SGD phase has its
own epochs, lr and schedule. The table compares the trained (unmerged) and merged models.
"""

from __future__ import annotations

import argparse
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

__all__ = ["add_parser", "run"]

# a budget instead of --width (fractions KEPT), and where a latency budget is measured
BUDGET_FLAGS = ("macs_ratio", "params_ratio", "latency_ratio", "runtime", "latency_batch")
# flag -> CentripetalSGD argument (None = not given: the method's default applies)
METHOD_FLAGS = ("width", "eps", "bn_eps_factor", "cluster", "log_every", *BUDGET_FLAGS)


def add_parser(subparsers: Any) -> argparse.ArgumentParser:

    p = add_command(
        subparsers,
        "csgd",
        "Cluster filters, train them together with Centripetal SGD, merge them exactly, save the narrow model.",
        "prunus csgd runs/r20/model --width 0.625 --eps 0.05 --epochs 3 --out runs/r20-csgd\n"
        "  prunus csgd runs/r20/model --macs-ratio 0.5 --epochs 3 --out runs/r20-csgd-half",
    )
    mark_input(p.add_argument("model_dir", help="trained model directory (model.json + model.safetensors)"))
    add_output_arg(
        p, "--out", "run", required=True, metavar="DIR", help="run directory; the merged model goes to DIR/model"
    )
    mark_input(
        p.add_argument(
            "--config", metavar="YAML", help="run config for data/training defaults (default: the model's run)"
        )
    )
    p.add_argument("--resume", action="store_true", help="continue an interrupted C-SGD run in --out")
    p.add_argument("--trust-factory", action="store_true", help="allow importing the user factory named in the file")
    m = p.add_argument_group("C-SGD")
    m.add_argument("--width", type=float, help="ratio of channels kept per group (default 0.625 without a budget)")
    budget = m.add_mutually_exclusive_group()
    budget.add_argument("--macs-ratio", type=float, help="instead of --width: fraction of the MACs kept, in (0, 1]")
    budget.add_argument("--params-ratio", type=float, help="instead of --width: fraction of the parameters kept")
    budget.add_argument(
        "--latency-ratio", type=float, help="instead of --width: fraction of the latency kept on --runtime (measured)"
    )
    m.add_argument(
        "--runtime", choices=("onnxruntime", "torch"), help="runtime of --latency-ratio (default onnxruntime)"
    )
    m.add_argument("--latency-batch", type=int, help="batch size --latency-ratio is measured at (default 64)")
    m.add_argument("--eps", type=float, help="centripetal strength (default: auto, from the lr schedule and steps)")
    m.add_argument("--bn-eps-factor", type=float, help="BatchNorm vectors use eps x this (default 1.0)")
    m.add_argument("--cluster", choices=("kmeans", "even"), help="how channels are clustered (default kmeans)")
    m.add_argument("--log-every", type=int, help="steps between chi logs (default 20)")
    m.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="any csgd argument (YAML value)")
    g = p.add_argument_group("data")
    add_data_args(g, "dataset (default: the model's run, else fashion-mnist)")
    t = p.add_argument_group("training")
    t.add_argument("--epochs", type=int, default=3, help="C-SGD epochs (default 3)")
    t.add_argument("--lr", type=float, default=0.05, help="peak learning rate (default 0.05)")
    t.add_argument("--schedule", choices=("cosine", "constant"), default="cosine", help="lr schedule (default cosine)")
    t.add_argument("--weight-decay", type=float)
    add_runtime_args(t)
    p.set_defaults(run=run)
    return p


def _method_args(args: argparse.Namespace) -> dict[str, Any]:
    from prunus.methods import method_arguments

    margs = {k: getattr(args, k) for k in METHOD_FLAGS if getattr(args, k) is not None}
    margs.update(parse_set(args.set, method_arguments("csgd"), owner="csgd"))
    return margs


def run(args: argparse.Namespace) -> int:
    from prunus.engine.distributed import is_main
    from prunus.formats import load
    from prunus.model_info import get_info
    from prunus.recipes import resolve_run_config, train_run

    model = load(args.model_dir, trust_factory=args.trust_factory)
    baseline = get_info(model).metrics.get("final_test_acc")
    config_path = args.config
    if config_path is None:
        saved = Path(args.model_dir).resolve().parent / "config.yaml"
        config_path = str(saved) if saved.exists() else None
    arch = get_info(model).arch or {}
    overrides = {
        "model": {"name": arch.get("name"), "width_mult": arch.get("kwargs", {}).get("width_mult")},
        "data": data_overrides(args),
        # the phase's own schedule: never inherit the trained run's warm-up or milestones
        "train": {
            "epochs": args.epochs,
            "lr": args.lr,
            "schedule": args.schedule,
            "warmup_epochs": 0.0,
            "milestones": (),
            "weight_decay": args.weight_decay,
            "seed": args.seed,
            "device": args.device,
            "threads": args.threads,
        },
        "methods": [{"name": "csgd", "args": _method_args(args)}],
    }
    config = resolve_run_config(config_path, overrides)
    result = train_run(config, args.out, resume=args.resume, progress=not args.no_progress, model=model)
    if is_main():
        _print_report(result.metrics, baseline, args.out)
    return 0


def _print_report(m: dict[str, Any], baseline: float | None, out: str) -> None:
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
    print(f"merged model: {out}/model")
