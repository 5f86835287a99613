"""`prunus train`: train a registry model, optionally with Method plug-ins, into a run directory."""

from __future__ import annotations

import argparse
import types
import typing
from typing import Any

from prunus.cli._common import (
    add_command,
    add_data_args,
    add_output_arg,
    add_runtime_args,
    data_overrides,
    mark_input,
    parse_int_list,
    parse_set,
)
from prunus.cli._config_flags import SCALARS, add_renamed_flags, config_values, flag_type, float_or_word
from prunus.errors import ConfigError

_UNIONS = (typing.Union, types.UnionType)

__all__ = ["add_parser", "run"]

# Method flags are generated from the registered methods' config fields (see `_add_method_flags`):
# a flag applies to every chosen method that has the field; anything else goes through --set.


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    from prunus.methods import list_methods
    from prunus.models import list_models

    p = add_command(
        subparsers,
        "train",
        "Train a model (optionally with pruning/reactivation methods) into a run directory.",
        "prunus train --model resnet20 --data fashion-mnist --epochs 15 --out runs/r20\n"
        "  prunus train --model resnet20 --epochs 10 --method graft --networks 2 --out runs/graft",
    )
    mark_input(p.add_argument("--config", metavar="YAML", help="recipe/config file; flags override its values"))
    add_output_arg(
        p, "--out", "run", metavar="DIR", help="run directory (config.yaml, metrics.jsonl, checkpoint, model/)"
    )
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    g = p.add_argument_group("model and data")
    g.add_argument(
        "--model",
        type=_model_name,
        metavar="NAME",
        help=f"registry model ({', '.join(list_models())}; default resnet20) or timm:NAME (the timm extra)",
    )
    g.add_argument("--width-mult", type=float, help="channel width multiplier (default 1.0)")
    add_data_args(g)  # --test-subset among them: a shrunk run need not score the whole test set every epoch
    g.add_argument("--no-augment", action="store_true", help="disable random crop and flip")
    t = p.add_argument_group("training")
    t.add_argument("--epochs", type=int, help="number of epochs (default 30)")
    t.add_argument("--lr", type=float, help="peak learning rate (default 0.1)")
    t.add_argument("--optimizer", choices=("sgd", "adamw"), help="sgd (momentum 0.9, nesterov; default) or adamw")
    t.add_argument("--schedule", choices=("cosine", "step", "constant"), help="lr schedule (default cosine)")
    t.add_argument("--milestones", type=parse_int_list, help="epochs for the step schedule, e.g. 60,120")
    t.add_argument("--warmup-epochs", type=float, help="linear lr warm-up, in (fractional) epochs (default 0)")
    t.add_argument("--weight-decay", type=float, help="L2 (sgd) or decoupled (adamw) weight decay (default 5e-4)")
    t.add_argument("--label-smoothing", type=float, help="cross-entropy label smoothing in [0, 1) (default 0)")
    t.add_argument("--amp", action="store_true", default=None, help="mixed precision on CUDA")
    add_runtime_args(t)
    m = p.add_argument_group("methods")
    m.add_argument("--method", action="append", choices=list_methods() or None, help="method plug-in (repeatable)")
    m.add_argument(
        "--networks",
        type=int,
        help="train N independent networks side by side in this process (grafting, ensembles); "
        "under torchrun each rank trains one network when a method needs peers (graft)",
    )
    p.set_defaults(method_flags=_add_method_flags(m))
    m.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="any method argument (YAML value)")
    p.set_defaults(run=run)
    return p


def _model_name(text: str) -> str:
    """argparse type: a registry name (checked here) or timm:NAME (checked with the config, which imports timm)."""
    from prunus.models import list_models
    from prunus.models.timm_models import is_timm_name

    if is_timm_name(text) or text in list_models():
        return text
    raise argparse.ArgumentTypeError(f"invalid choice: {text!r} (choose from {', '.join(list_models())}, or timm:NAME)")


def _add_method_flags(group: Any) -> list[str]:
    """One flag per scalar (or list-of-names) config field of the registered methods; returns their names."""
    import dataclasses

    from prunus.methods import METHODS, list_methods

    fields: dict[str, tuple[Any, str, list[str]]] = {}  # name -> (type, help, methods)
    renamed: dict[str, str] = {}  # old field name -> new, for the deprecated flags
    for name in list_methods():
        config = METHODS.get(name).meta["config"]
        renamed.update(config.RENAMED)
        hints = typing.get_type_hints(config)
        for f in dataclasses.fields(config):
            kind = flag_type(hints[f.name])
            if kind is None:
                continue
            _, help_text, users = fields.setdefault(f.name, (kind, f.metadata.get("help", ""), []))
            users.append(name)
    added = []
    for field_name, (kind, help_text, users) in fields.items():
        flag = "--" + field_name.replace("_", "-")
        help_text = f"{help_text} ({', '.join(users)})"
        try:
            if kind is bool:
                group.add_argument(flag, dest=field_name, action=argparse.BooleanOptionalAction, help=help_text)
            else:
                metavar = None if kind in SCALARS or kind is float_or_word else "A,B"
                group.add_argument(flag, dest=field_name, type=kind, metavar=metavar, help=help_text)
        except argparse.ArgumentError:  # the name is taken by a run flag (--seed): --set KEY=VALUE only
            continue
        added.append(field_name)
    add_renamed_flags(group, group, renamed, added)
    return added


def _method_specs(args: argparse.Namespace) -> list[dict[str, Any]] | None:
    from prunus.methods import METHODS, method_arguments

    def renamed(name: str) -> set[str]:  # a method's deprecated argument names
        return set(METHODS.get(name).meta["config"].RENAMED)

    flags = args.method_flags
    given_flags = config_values(args, flags)  # deprecated flags (--macs-ratio) under their new names
    if not args.method:
        used = list(given_flags) + args.set
        if used:
            raise ConfigError(f"method options given ({', '.join(map(str, used))}) but no --method")
        return None
    extra = parse_set(args.set)
    specs = []
    for name in args.method:
        # old names (--set macs_ratio=0.5) pass: the method's config moves them to the new ones, with a warning
        accepted = set(method_arguments(name)) | renamed(name)
        margs = {k: v for k, v in given_flags.items() if k in accepted}
        margs.update({k: v for k, v in extra.items() if k in accepted})
        specs.append({"name": name, "args": margs})
    given = set(given_flags) | set(extra)
    taken = set().union(*(set(method_arguments(n)) | renamed(n) for n in args.method))
    if given - taken:
        raise ConfigError(f"option(s) {', '.join(sorted(given - taken))} not accepted by method(s) {args.method}")
    return specs


def run(args: argparse.Namespace) -> int:
    from prunus.training import resolve_run_config, train_run
    from prunus.training.config import RunConfig

    if args.resume and not args.out:
        raise ConfigError("--resume needs --out RUN_DIR")
    if args.resume and args.config is None:
        from prunus.formats.run_dir import RunDir

        saved = RunDir(args.out).config
        if saved.exists():
            args.config = str(saved)  # a resumed run continues with the config it started with
    overrides = {
        "model": {"name": args.model, "width_mult": args.width_mult},
        "data": {
            **data_overrides(args),
            "augment": False if args.no_augment else None,
        },
        "train": {
            "epochs": args.epochs,
            "lr": args.lr,
            "optimizer": args.optimizer,
            "schedule": args.schedule,
            "milestones": args.milestones,
            "warmup_epochs": args.warmup_epochs,
            "weight_decay": args.weight_decay,
            "label_smoothing": args.label_smoothing,
            "seed": args.seed,
            "device": args.device,
            "amp": args.amp,
            "threads": args.threads,
        },
        "methods": _method_specs(args),
        "networks": args.networks,
    }
    config: RunConfig = resolve_run_config(args.config, overrides)
    result = train_run(config, args.out, resume=args.resume, progress=not args.no_progress)
    from prunus.engine.distributed import is_main

    if is_main():
        _print_summary(result.metrics, args.out)
    return 0


def _print_summary(metrics: dict[str, Any], out: str | None) -> None:
    from prunus.cli._common import print_table

    rows = [(k, v) for k, v in metrics.items() if isinstance(v, (int, float))]
    print_table("result", ("metric", "value"), rows)
    if out and "networks" in metrics:
        print(f"run directory: {out} (models in {out}/net0/model ... net{metrics['networks'] - 1}/model)")
    elif out:
        print(f"run directory: {out} (model in {out}/model)")
