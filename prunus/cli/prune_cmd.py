"""`prunus prune`: one-shot structured pruning of a saved model, optional fine-tuning, saved with its history."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from prunus.cli._common import (
    add_command,
    add_data_args,
    add_output_arg,
    add_runtime_args,
    data_overrides,
    mark_input,
    print_table,
)
from prunus.errors import ConfigError

__all__ = ["add_parser", "run"]

FINETUNE_LR = 0.01  # a tenth of the training default: fine-tuning starts from trained weights


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    from prunus.criteria import list_criteria

    p = add_command(
        subparsers,
        "prune",
        "Prune a saved model once to a MACs, parameter, latency or channel target (optionally fine-tune) and save it.",
        "prunus prune runs/r20/model --macs-ratio 0.5 --criterion l1 --round-to 8 --out runs/r20-half\n"
        "  prunus prune runs/r20/model --latency-ratio 0.4 --runtime onnxruntime --latency-batch 64 --threads 1 "
        "--out runs/r20-fast",
    )
    mark_input(p.add_argument("model_dir", help="model directory (model.json + model.safetensors)"))
    add_output_arg(p, "--out", "model", required=True, metavar="DIR", help="where the pruned model is saved")
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--macs-ratio", type=float, help="fraction of the MACs KEPT, in (0, 1]; 0.5 = half the MACs")
    target.add_argument("--params-ratio", type=float, help="fraction of the parameters KEPT, in (0, 1]")
    target.add_argument(
        "--latency-ratio",
        type=float,
        help="fraction of the dense latency KEPT on --runtime at --latency-batch, in (0, 1]; measured, not estimated",
    )
    target.add_argument("--ratio", type=float, help="fraction of channels REMOVED from every prunable group, in [0, 1)")
    p.add_argument("--criterion", default="l1", choices=list_criteria(), help="filter criterion (default l1)")
    p.add_argument("--global", dest="global_pruning", action="store_true", help="rank channels across groups")
    p.add_argument(
        "--round-to",
        type=int,
        default=1,
        metavar="N",
        help="keep every pruned width a multiple of N channels (or the full width), e.g. 8 or 16 (default 1)",
    )
    p.add_argument(
        "--runtime",
        default="onnxruntime",
        choices=("onnxruntime", "torch"),
        help="runtime a --latency-ratio is measured on (default onnxruntime)",
    )
    p.add_argument("--latency-batch", type=int, default=64, help="batch size of the latency budget (default 64)")
    p.add_argument("--ignore", action="append", metavar="MODULE", help="module whose outputs are kept (repeatable)")
    p.add_argument("--trust-factory", action="store_true", help="allow importing the user factory named in the file")
    p.add_argument("--json", action="store_true", help="print the prune report as JSON")
    f = p.add_argument_group("fine-tuning (after pruning)")
    f.add_argument("--finetune-epochs", type=int, default=0, help="epochs of fine-tuning (default 0: none)")
    add_data_args(f, "dataset for fine-tuning or data-driven criteria")
    f.add_argument("--lr", type=float, help=f"peak learning rate (default {FINETUNE_LR})")
    f.add_argument("--weight-decay", type=float)
    add_runtime_args(f)
    p.set_defaults(run=run)
    return p


def _criterion_batch(args: argparse.Namespace, model: Any) -> Any:
    """A fixed, unaugmented training batch for data-driven criteria (taylor)."""
    from prunus.criteria import get_criterion
    from prunus.data import DataConfig, build_loaders, training_slice

    if not get_criterion(args.criterion).needs_data:
        return None
    if not args.data:
        raise ConfigError(f"criterion {args.criterion!r} needs data; pass --data")
    given = {k: v for k, v in data_overrides(args).items() if v is not None}
    data = build_loaders(DataConfig(**{**given, "augment": False}), seed=0)
    return training_slice(data, data.train.batch_size)  # the first training batch, in dataset order


# options that only matter when fine-tuning: given without --finetune-epochs they would be ignored
FINETUNE_ONLY = ("lr", "weight_decay", "seed", "device", "subset", "val_size", "batch_size")


def _finetune_config(args: argparse.Namespace, arch: dict[str, Any]) -> Any:
    """The fine-tuning RunConfig, resolved (and so validated) before anything is pruned or written."""
    from prunus.recipes import resolve_run_config

    if args.finetune_epochs == 0:
        given = [f"--{k.replace('_', '-')}" for k in FINETUNE_ONLY if getattr(args, k) is not None]
        if given:
            raise ConfigError(f"{', '.join(given)} only apply to fine-tuning; pass --finetune-epochs N")
        return None
    overrides: dict[str, Any] = {
        "data": data_overrides(args),
        "train": {
            "epochs": args.finetune_epochs,
            "lr": args.lr if args.lr is not None else FINETUNE_LR,
            "weight_decay": args.weight_decay,
            "seed": args.seed,
            "device": args.device,
            "threads": args.threads,
        },
    }
    if "name" in arch:  # recorded for the run's config.yaml; the pruned model itself is passed in
        overrides["model"] = {"name": arch["name"], "width_mult": arch.get("kwargs", {}).get("width_mult")}
    return resolve_run_config(None, overrides)


def _finetune(args: argparse.Namespace, config: Any, model: Any, out: Path) -> dict[str, Any]:
    from prunus.recipes import train_run

    result = train_run(config, out / "finetune", model=model, progress=not args.no_progress)
    return {k: v for k, v in result.metrics.items() if isinstance(v, (int, float))}


def run(args: argparse.Namespace) -> int:

    from prunus.formats import load, save
    from prunus.model_info import example_input, get_info
    from prunus.pruning import prune

    if args.finetune_epochs < 0:
        raise ConfigError(f"--finetune-epochs must be >= 0, got {args.finetune_epochs}")
    if args.latency_batch < 1:
        raise ConfigError(f"--latency-batch must be >= 1, got {args.latency_batch}")
    from prunus.data.locate import check_root

    check_root(args.data_dir)
    model = load(args.model_dir, trust_factory=args.trust_factory)
    shape = get_info(model).input_shape
    if len(shape) != 3:
        raise ConfigError(f"{args.model_dir} records no input_shape; it is needed to trace the model")
    finetune_config = _finetune_config(args, dict(get_info(model).arch or {}))
    batch = _criterion_batch(args, model)
    model, report = prune(
        model,
        example_input(shape),
        ratio=args.ratio,
        macs_ratio=args.macs_ratio,
        params_ratio=args.params_ratio,
        criterion=args.criterion,
        ignored_layers=args.ignore,
        global_pruning=args.global_pruning,
        batch=batch,
        round_to=args.round_to,
        latency_ratio=args.latency_ratio,
        runtime=args.runtime,
        latency_batch=args.latency_batch,
        threads=args.threads,
    )
    out = Path(args.out)
    metrics: dict[str, Any] = {"macs": report.pruned_macs, "params": report.pruned_params}
    if finetune_config is not None:
        metrics.update(_finetune(args, finetune_config, model, out))
    save(
        model.cpu(),
        out,
        input_shape=shape,
        metrics=metrics,
        extra={"prune_report": report.to_dict(), "source": str(args.model_dir)},
    )
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        _print_report(report, metrics, out)
    return 0


def _print_report(report: Any, metrics: dict[str, Any], out: Path) -> None:
    def opt(v: float | None) -> str:
        return "-" if v is None else f"{v:.4f}"

    rows = [
        ("MACs kept (pruned / dense)", opt(report.requested_macs_ratio), f"{report.achieved_macs_ratio:.4f}"),
        ("params kept (pruned / dense)", opt(report.requested_params_ratio), f"{report.achieved_params_ratio:.4f}"),
        ("channels removed (prunable groups)", opt(report.requested_ratio), f"{report.achieved_ratio:.4f}"),
        ("MACs (before -> after)", "-", f"{report.dense_macs:,} -> {report.pruned_macs:,}"),
        ("params (before -> after)", "-", f"{report.dense_params:,} -> {report.pruned_params:,}"),
    ]
    if report.requested_latency_ratio is not None:
        where = f"{report.runtime}, batch {report.latency_batch}"
        rows.append((f"latency kept, measured ({where})", opt(report.requested_latency_ratio),
                     f"{report.achieved_latency_ratio:.4f}"))  # fmt: skip
        rows.append(("latency kept, table estimate", "-", f"{report.estimated_latency_ratio:.4f}"))
    if report.round_to > 1:
        rows.append(("widths rounded to a multiple of", "-", str(report.round_to)))
    if report.rate is not None:
        rows.append(("per-group rate", "-", f"{report.rate:.4f}"))
    if "final_test_acc" in metrics:
        rows.append(("test accuracy after fine-tuning", "-", f"{metrics['final_test_acc'] * 100:.2f}%"))
    print_table(f"prune ({report.criterion}): requested vs achieved", ("quantity", "requested", "achieved"), rows)
    print(f"pruned model: {out}")
