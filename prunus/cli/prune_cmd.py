"""`prunus prune`: one-shot structured pruning of a saved model, optionally fine-tuned, as a chain of stages.

A thin face over the pipeline: the flags are `prunus.pruning.PruneConfig`'s fields (one of them a
target), the command builds a prune stage (and a finetune stage with `--finetune-epochs`; with
`--model NAME --input-shape C,H,W` instead of a model directory, a create stage first: a fresh
model with random initialisation, e.g. `--model timm:resnet18`), runs
that chain in `--out` through the pipeline runner, and prints the prune stage's table. `--out` is
a run directory: rerunning the same command resumes or does nothing, a changed command is refused
(`--force` starts over), and the final model is what `prunus export/eval/info/bench --out DIR`
and `prunus.load(DIR)` read.
"""

from __future__ import annotations

import argparse
import json
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
    parse_shape,
    print_table,
)
from prunus.cli._config_flags import add_config_flags, config_values
from prunus.errors import ConfigError

__all__ = ["add_parser", "run"]

FINETUNE_LR = 0.01  # a tenth of the training default: fine-tuning starts from trained weights (FinetuneStage's)
# options that only matter when fine-tuning: given without --finetune-epochs they would be ignored
FINETUNE_ONLY = ("lr", "weight_decay", "device", "subset", "val_size", "test_subset", "batch_size")


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    from prunus.pruning import TARGETS, PruneConfig

    p = add_command(
        subparsers,
        "prune",
        "Prune a saved model once to a MACs, parameter, latency or channel target (optionally fine-tune) and save it.",
        "prunus prune runs/r20/model --keep-macs 0.5 --criterion l1 --round-to 8 --out runs/r20-half\n"
        "  prunus prune --model timm:resnet18 --input-shape 3,64,64 --keep-macs 0.5 --out runs/r18-half\n"
        "  prunus prune runs/r20/model --keep-latency 0.4 --runtime onnxruntime --latency-batch 64 --threads 1 "
        "--out runs/r20-fast",
    )
    mark_input(
        p.add_argument(
            "model_dir",
            nargs="?",
            help="model directory (model.json + model.safetensors), or a run holding one; or --model instead",
        )
    )
    g = p.add_argument_group("a fresh model instead of a model directory (random initialisation)")
    g.add_argument("--model", metavar="NAME", help="registry model or timm:NAME (prunus models [--source timm])")
    g.add_argument("--input-shape", type=parse_shape, metavar="C,H,W", help="input shape of the fresh model")
    g.add_argument("--num-classes", type=int, help="classes of the fresh model (default: the model's own)")
    add_output_arg(
        p,
        "--out",
        "pipeline",
        required=True,
        metavar="DIR",
        help="run directory: DIR/01-prune/model (and DIR/02-finetune/ with --finetune-epochs); rerunning resumes",
    )
    p.add_argument("--force", action="store_true", help="start over: replace the run directory --out (a prunus one)")
    t = p.add_argument_group("target (exactly one) and how it is met: the fields of prunus.pruning.PruneConfig")
    dests = add_config_flags(p, PruneConfig, group=t, skip=("ignore", "layer_ratios"), exclusive=TARGETS,
                             required_one=False)  # fmt: skip
    t.add_argument("--ignore", action="append", metavar="MODULE", help="module whose outputs are kept (repeatable)")
    t.add_argument(
        "--layer-ratio",
        action="append",
        default=[],
        metavar="GLOB=RATIO",
        help="per-layer ratio REMOVED for the groups whose module names match GLOB, e.g. 'layer3.*=0.5' (repeatable)",
    )
    p.add_argument("--trust-factory", action="store_true", help="allow importing the user factory named in the file")
    p.add_argument("--json", action="store_true", help="print the prune report as JSON")
    f = p.add_argument_group("fine-tuning (after pruning)")
    f.add_argument("--finetune-epochs", type=int, default=0, help="epochs of fine-tuning (default 0: none)")
    add_data_args(f, "dataset for fine-tuning, data-driven criteria and the test accuracy after pruning")
    f.add_argument("--lr", type=float, help=f"peak learning rate (default {FINETUNE_LR})")
    f.add_argument("--weight-decay", type=float, help="weight decay of the fine-tuning (default 5e-4)")
    add_runtime_args(f)
    p.set_defaults(run=run, config_dests=dests)
    return p


def _layer_ratios(items: list[str]) -> dict[str, float] | None:
    """`--layer-ratio GLOB=RATIO` items -> {glob: ratio}; malformed items are one-line errors."""
    if not items:
        return None
    out: dict[str, float] = {}
    for item in items:
        glob, sep, value = item.rpartition("=")
        if not sep or not glob:
            raise ConfigError(f"--layer-ratio expects GLOB=RATIO, e.g. 'layer3.*=0.5', got {item!r}")
        ratio = parse_set([f"x={value}"])["x"]
        out[glob] = ratio
    return out


def _stages(args: argparse.Namespace, arch: dict[str, Any]) -> list[dict[str, Any]]:
    """The recipe stages the flags describe: prune, then finetune when asked."""
    if args.finetune_epochs < 0:
        raise ConfigError(f"--finetune-epochs must be >= 0, got {args.finetune_epochs}")
    given_data = {k: v for k, v in data_overrides(args).items() if v is not None}
    from prunus.pruning import PruneConfig

    settings = config_values(args, args.config_dests)
    if args.ignore:
        settings["ignore"] = list(args.ignore)
    ratios = _layer_ratios(args.layer_ratio)
    if ratios:
        settings["layer_ratios"] = ratios
    config = PruneConfig.from_dict(settings)  # plain field names in the messages, before any stage is planned
    config.require_target()
    from prunus.criteria import get_criterion

    if get_criterion(config.criterion).needs_data and not args.data:
        raise ConfigError(f"criterion {config.criterion!r} needs data; pass --data")
    prune: dict[str, Any] = {"stage": "prune", **settings}
    prune["evaluate"] = bool(args.data)  # the test accuracy after pruning needs the model's dataset
    if args.threads is not None:
        prune["threads"] = args.threads
    if given_data:
        prune["data"] = given_data
    stages = [prune]
    if args.finetune_epochs == 0:
        given = [f"--{k.replace('_', '-')}" for k in FINETUNE_ONLY if getattr(args, k) is not None]
        if given:
            raise ConfigError(f"{', '.join(given)} only apply to fine-tuning; pass --finetune-epochs N")
        return stages
    train = {"epochs": args.finetune_epochs, "lr": args.lr if args.lr is not None else FINETUNE_LR}
    train.update({k: getattr(args, k) for k in ("weight_decay", "device", "threads") if getattr(args, k) is not None})
    finetune: dict[str, Any] = {"stage": "finetune", "train": train, "data": given_data}
    from prunus.models.timm_models import arch_model_name

    name = arch_model_name(arch)
    if name is not None:  # recorded in the fine-tuning run's config.yaml; the pruned model itself is passed in
        finetune["model"] = {"name": name, "width_mult": arch.get("kwargs", {}).get("width_mult", 1.0)}
    stages.append(finetune)
    return stages


def _fresh(args: argparse.Namespace) -> dict[str, Any] | None:
    """The create stage `--model` asks for (None with a model directory); the flags' misuse is one line."""
    given = [f for f, v in (("--input-shape", args.input_shape), ("--num-classes", args.num_classes)) if v is not None]
    if args.model is None:
        if args.model_dir is None:
            raise ConfigError("give a model directory, or --model NAME --input-shape C,H,W for a fresh model")
        if given:
            verb = "describe" if len(given) > 1 else "describes"
            raise ConfigError(f"{' and '.join(given)} {verb} a fresh --model; a model directory records its own")
        return None
    if args.model_dir is not None:
        raise ConfigError(f"give a model directory ({args.model_dir}) or --model {args.model}, not both")
    if args.input_shape is None:
        raise ConfigError(f"--model {args.model} needs --input-shape C,H,W (the shape to trace and count with)")
    from prunus.models import check_model_name

    check_model_name(args.model)
    create: dict[str, Any] = {"stage": "create", "model": {"name": args.model}, "input_shape": list(args.input_shape)}
    if args.num_classes is not None:
        create["num_classes"] = args.num_classes
    return create


def run(args: argparse.Namespace) -> int:
    from prunus.data.locate import check_root
    from prunus.formats import load
    from prunus.formats.run_dir import RunDir, resolve_model_dir
    from prunus.models.info import get_info
    from prunus.pipeline import run_pipeline
    from prunus.pipeline.recipe import single_chain

    check_root(args.data_dir)
    create = _fresh(args)
    if create is not None:  # create -> prune (-> finetune); the create stage validates the rest
        stages = [create, *_stages(args, {"name": args.model, "kwargs": {}})]
        plan = single_chain(stages, name="prune", seed=args.seed or 0)
        model = None
    else:
        source = resolve_model_dir(args.model_dir)
        model = load(source, trust_factory=args.trust_factory)
        if len(get_info(model).input_shape) < 2:
            raise ConfigError(f"{args.model_dir} records no input_shape; it is needed to trace the model")
        plan = single_chain(_stages(args, dict(get_info(model).arch or {})), name="prune", seed=args.seed or 0,
                            input=source)  # fmt: skip
    out = RunDir(args.out)
    if args.force and out.is_pipeline():  # main's guard refused anything that is not a pipeline's directory
        out.check_no_links()
        shutil.rmtree(out.root)
    echo = (lambda line: None) if args.json else print
    if create is not None:
        echo(f"note: {args.model} is built with random initialisation (seed {args.seed or 0}, no pretrained "
             "weights): the criterion ranks untrained filters")  # fmt: skip
    # the stages load the input model (and what they make from it) by its factory too
    summary = run_pipeline(plan, out.root, progress=not args.no_progress, echo=echo, trust_factory=args.trust_factory)
    stages = summary.records[0]["stages"]
    report = next(s for s in stages if s["kind"] == "prune")["metrics"]["report"]
    final = out.at(stages[-1]["model"]).root
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        _print_report(report, stages[-1]["metrics"] if len(stages) > 1 else {}, final)
    return 0


def _print_report(report: dict[str, Any], finetuned: dict[str, Any], out: Path) -> None:
    def opt(v: float | None) -> str:
        return "-" if v is None else f"{v:.4f}"

    rows = [
        ("MACs kept (pruned / dense)", opt(report["requested_macs_ratio"]), f"{report['achieved_macs_ratio']:.4f}"),
        (
            "params kept (pruned / dense)",
            opt(report["requested_params_ratio"]),
            f"{report['achieved_params_ratio']:.4f}",
        ),  # fmt: skip
        ("channels removed (prunable groups)", opt(report["requested_ratio"]), f"{report['achieved_ratio']:.4f}"),
        ("MACs (before -> after)", "-", f"{report['dense_macs']:,} -> {report['pruned_macs']:,}"),
        ("params (before -> after)", "-", f"{report['dense_params']:,} -> {report['pruned_params']:,}"),
    ]
    if report["requested_latency_ratio"] is not None:
        where = f"{report['runtime']}, batch {report['latency_batch']}"
        rows.append((f"latency kept, measured ({where})", opt(report["requested_latency_ratio"]),
                     f"{report['achieved_latency_ratio']:.4f}"))  # fmt: skip
        rows.append(("latency kept, table estimate", "-", f"{report['estimated_latency_ratio']:.4f}"))
    if report["round_to"] > 1:
        rows.append(("widths rounded to a multiple of", "-", str(report["round_to"])))
    if report["rate"] is not None:
        rows.append(("per-group rate", "-", f"{report['rate']:.4f}"))
    if finetuned.get("final_test_acc") is not None:
        rows.append(("test accuracy after fine-tuning", "-", f"{finetuned['final_test_acc'] * 100:.2f}%"))
    print_table(f"prune ({report['criterion']}): requested vs achieved", ("quantity", "requested", "achieved"), rows)
    streams = {k: why for k, why in report.get("kept_whole", {}).items() if "coupled with" in why}
    for key, why in streams.items():  # a whole residual stream at full width is worth a line: it surprises people
        print(f"kept at full width: {key} ({why})")
    if streams:
        print("  (the stem and classifier are kept by default; --ignore NAME ... replaces that list, e.g. --ignore fc)")
    print(f"pruned model: {out}")
