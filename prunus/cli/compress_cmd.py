"""`prunus compress`: DE sparsification + quantization + entropy coding of a saved model into a .prn file.

A thin face over the compress stage: the flags are `CompressConfig`'s fields (plus the data the
calibration images come from), and the work is `prunus.pipeline._compress_stage.compress_model`,
the same function the pipeline's compress stage runs. With `--calib-file` (your own tensors, any
input rank: `prunus.compress.calib_file`) it calls `prunus.compress.compress` on them directly.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from prunus.cli._common import add_command, add_output_arg, mark_input, parse_set, print_table
from prunus.cli._config_flags import add_config_flags, config_values

__all__ = ["add_parser", "run"]

# fields with no flag of their own: the per-layer forms go through --set, progress is --no-progress
NO_FLAG = ("sparsity", "bits", "progress")
# the names these flags had before they were generated from CompressConfig (deprecated aliases)
OLD_FLAGS = {"--calib": "rescore_size", "--search-batch": "calib_size"}


def _bits(text: str) -> int | str:
    if text == "auto":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--bits takes 'auto' or an integer from 2 to 8, got {text!r}") from None


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    from prunus.compress import CompressConfig
    from prunus.data import list_datasets

    p = add_command(
        subparsers,
        "compress",
        "Sparsify (directed evolution), quantize and entropy-code a saved model into one .prn file.",
        "prunus compress runs/l300/model --sparsity 0.9 --bits auto --max-drop 1.0 --out model.prn",
    )
    mark_input(
        p.add_argument("model_dir", help="model directory (model.json + model.safetensors), or a run holding one")
    )
    p.add_argument("--trust-factory", action="store_true", help="allow importing the user factory named in the file")
    add_output_arg(p, "--out", "file", required=True, help="the .prn file to write (an existing one needs --force)")
    g = p.add_argument_group("what to compress to (CompressConfig; --set for per-layer sparsity or bits)")
    g.add_argument("--sparsity", type=float, help="share of weights removed from every layer (default 0.9)")
    g.add_argument("--bits", type=_bits, help="2-8 for every layer, or auto (greedy under the budget; default)")
    dests = add_config_flags(p, CompressConfig, skip=NO_FLAG, group=g)
    for old, dest in OLD_FLAGS.items():  # kept for one release; they still work, with a warning
        g.add_argument(old, dest=f"old_{dest}", type=int, help=argparse.SUPPRESS)
    g.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="any CompressConfig field (YAML)")
    d = p.add_argument_group("calibration (images from the TRAINING split)")
    d.add_argument("--data", choices=list_datasets(), help="dataset (default fashion-mnist)")
    mark_input(d.add_argument("--data-dir", help="directory holding the dataset files"))
    mark_input(
        d.add_argument(
            "--calib-file",
            help="your own tensors instead of --data (any input rank): a safetensors file with x (training inputs) "
            "and optionally y, holdout_x/holdout_y (validation: the budget batch), test_x/test_y (for --test); "
            "see prunus.compress.calib_file",
        )
    )
    o = p.add_argument_group("output")
    o.add_argument(
        "--test", action="store_true", help="also evaluate the input and the compressed model on the test split"
    )
    o.add_argument("--json", action="store_true", help="print the full report as JSON")
    o.add_argument(
        "--no-progress", action="store_true", help="no progress (bar and lines: DE cycles, candidates, fine-tune steps)"
    )
    o.add_argument("--threads", type=int, help="torch CPU threads")
    p.set_defaults(run=run, config_dests=dests)
    return p


def _settings(args: argparse.Namespace) -> tuple[dict[str, Any], list[str]]:
    """CompressConfig fields given on the command line (flags, deprecated names, --set), and the warnings to print."""
    import dataclasses

    from prunus.compress import CompressConfig
    from prunus.errors import ConfigError

    given = config_values(args, args.config_dests)
    warnings = []
    for old, dest in OLD_FLAGS.items():
        value = getattr(args, f"old_{dest}", None)
        if value is not None:
            flag = "--" + dest.replace("_", "-")
            if dest in given:
                raise ConfigError(f"{old} is the old name of {flag}; give one of them")
            warnings.append(f"prunus: warning: {old} is deprecated; use {flag}")
            given[dest] = value
    for name in ("sparsity", "bits"):
        if getattr(args, name) is not None:
            given[name] = getattr(args, name)
    fields = sorted(f.name for f in dataclasses.fields(CompressConfig))
    overrides = parse_set(args.set, accepted=fields, owner="CompressConfig")
    clash = sorted(set(overrides) & set(given))
    if clash:
        raise ConfigError(f"{', '.join(clash)} given both as a flag and with --set; give it once")
    return {**given, **overrides}, warnings


def run(args: argparse.Namespace) -> int:
    import torch

    from prunus.compress import CompressConfig
    from prunus.compress.report import LAYER_COLUMNS, layer_rows
    from prunus.data import DataConfig
    from prunus.errors import ConfigError
    from prunus.formats import load
    from prunus.pipeline._compress_stage import CompressStage, compress_model, has_validation

    if args.threads is not None:
        if args.threads < 1:
            raise ConfigError(f"--threads must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    if not str(args.out).endswith(".prn"):
        raise ConfigError(f"--out must name a .prn file, got {args.out!r}")
    import dataclasses

    fields, warnings = _settings(args)
    settings = CompressConfig.from_dict(fields)  # typed: a bool field refuses 'maybe'
    for line in warnings:  # after validation: a refused command prints its one error line only
        print(line, file=sys.stderr)
    # --seed draws the calibration slice and seeds the search, as the stage's chain seed does
    cal = None
    if args.calib_file is not None:  # read and checked before the model loads and minutes of search
        from prunus.compress.calib_file import read_calibration

        if args.data is not None or args.data_dir is not None:
            raise ConfigError("--calib-file and --data/--data-dir both name the calibration data; give one")
        cal = read_calibration(args.calib_file)
        if args.test and cal.test is None:
            raise ConfigError(f"--test needs test_x and test_y in {args.calib_file}")
    model = load(args.model_dir, trust_factory=args.trust_factory)
    # progress lines go to stdout, like training's; --json keeps stdout for the report alone
    progress = not (args.no_progress or args.json)
    test: dict[str, float] = {}
    if cal is not None:
        from prunus.compress import compress

        report = compress(model, cal.calib, dataclasses.replace(settings, progress=progress), out=args.out,
                          holdout=cal.holdout)  # fmt: skip
        where = "the file's holdout_x" if cal.holdout is not None else "the file's x"
        if args.test and cal.test is not None:
            test = {"test_acc_input": _accuracy(model, *cal.test), "test_acc": _accuracy(report.model, *cal.test)}
    else:
        data = DataConfig(name=args.data or "fashion-mnist", root=args.data_dir)
        stage = CompressStage(compress=dataclasses.replace(settings, seed=0), data=data)
        report, bundle = compress_model(stage, model, args.out, seed=settings.seed, progress=progress)
        where = "validation images" if has_validation(bundle) else "training images"
        if args.test:
            from prunus.measure import evaluate

            test = {
                "test_acc_input": evaluate(model, bundle.test)["acc"],
                "test_acc": evaluate(report.model, bundle.test)["acc"],
            }
    if args.json:
        print(json.dumps({**report.to_json(), **test}, indent=2))
        return 0
    print_table(f"{args.out}: per layer", LAYER_COLUMNS, layer_rows(report.layers))
    if len(report.attempts) > 1:  # the budget escalation ran: every rung, what it tried and what it gave
        print_table("budget escalation (prunus.compress.escalate)", ATTEMPT_COLUMNS, attempt_rows(report.attempts))
    js = report.to_json()
    preset = report.config["preset"]
    why = (
        ("chosen: the model has a convolution" if preset == "convnet" else "chosen: no convolution")
        if settings.preset == "auto"
        else "as given"
    )
    rows = [
        ("settings preset (prunus.compress.presets)", f"{preset} ({why})"),
        ("file bytes", f"{report.file_bytes:,}"),
        ("fp32 file bytes", f"{report.fp32_bytes:,}"),
        ("ratio vs fp32", f"{report.ratio:.1f}x"),
        ("sparsity", f"{report.sparsity:.4f}"),
        ("order-0 bound of the coded weights (bytes)", f"{js['bound_bytes']:,.1f}"),
        ("stream bits / order-0 bound", f"{js['stream_over_bound']:.4f}"),
        ("file bits / order-0 bound", f"{js['file_over_bound']:.4f}"),
        ("file bits / (bound + verbatim tensors)", f"{js['file_over_floor']:.4f}"),
        ("file bytes by part", ", ".join(f"{k} {v:,}" for k, v in js["file_parts"].items())),
        (
            "budget batch accuracy",
            f"{report.teacher_acc * 100:.2f}% -> {report.acc * 100:.2f}% (input -> compressed, on {where})",
        ),
        ("budget batch KL", f"{report.kl:.5f}"),
        *([("budget (auto bits)", _budget_text(report.budget))] if report.budget else []),
        *((k.replace("_", " "), f"{v * 100:.2f}%") for k, v in test.items()),
        ("seconds", ", ".join(f"{k} {v:.1f}" for k, v in report.seconds.items())),
    ]
    print_table(f"{args.model_dir} -> {args.out}", ("metric", "value"), rows)
    return 0


def _accuracy(model: Any, x: Any, y: Any, chunk: int = 256) -> float:
    """Top-1 accuracy of `model` (eval mode, no grad) on tensors `x`, `y`, in chunks."""
    import torch

    model.eval()
    with torch.no_grad():
        right = sum(int((model(x[i : i + chunk]).argmax(1) == y[i : i + chunk]).sum()) for i in range(0, len(x), chunk))
    return right / max(1, len(x))


ATTEMPT_COLUMNS = ("rung", "settings", "budget", "drop (pt)", "KL", "bytes", "ratio", "mean bits", "seconds")


def attempt_rows(attempts: list[dict]) -> list[tuple[str, ...]]:
    """One row per escalation rung run."""
    return [
        (str(a["rung"]), a["settings"], "met" if a["met"] else "NOT MET", f"{a['drop_pt']:+.2f}", f"{a['kl']:.4g}",
         f"{a['file_bytes']:,}", f"{a['ratio']:.1f}x", "-" if a["mean_bits"] is None else f"{a['mean_bits']:.2f}",
         f"{a['seconds']:.1f}")
        for a in attempts
    ]  # fmt: skip


def _budget_text(budget: dict) -> str:
    """One cell: met or NOT MET (at which rung; on a miss the next setting), the drop against what, the limits."""
    limits = ", ".join(f"{k} {budget[k]:g}" for k in ("max_drop", "max_kl") if budget[k] is not None)
    if budget["against"] == "pruned":  # the verdict is quantization's share: its limit is quant_drop's
        limits = f"quant_drop {budget['max_drop']:g}"
    rung = f" at rung {budget['rung']} ({budget['settings']})" if "rung" in budget else ""
    verdict = f"met{rung}" if budget["met"] else f"NOT MET{rung}; next to try: {budget.get('next', '?')}"
    if budget["met"] and budget.get("met_at_confidence") is False:  # the measured drop fits, its bound does not
        verdict += f" (on the measured drop; not at {budget['confidence']:.0%} confidence)"
    caveat = "" if budget.get("held_out", True) else "; the fine-tunes trained on these images: optimistic"
    se, upper = budget.get("drop_se_pt"), budget.get("drop_upper_pt")
    bound = f"; at most {upper:+.2f} pt at {budget['confidence']:.0%} confidence" if upper is not None else ""
    fresh = " nothing was chosen on" if budget.get("independent") else ""
    noise = f" (s.e. {se:.2f} on {budget['images']} images{fresh}{bound})" if se is not None and se == se else ""
    share = budget.get("quant_drop_pt")
    quant = (f", quantization {share:+.2f} pt vs the pruned model (quant_drop {budget['quant_drop']:g})"
             if share is not None and budget["against"] != "pruned" else "")  # fmt: skip
    return (f"{verdict}: {budget['drop_pt']:+.2f} pt lost{noise}, KL {budget['kl']:.4g} vs the "
            f"{budget['against']} model ({limits}); "
            f"pruning alone {budget['pruned_drop_pt']:+.2f} pt{quant}{caveat}")  # fmt: skip
