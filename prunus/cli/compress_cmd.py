"""`prunus compress`: DE sparsification + quantization + entropy coding of a saved model into a .prn file."""

from __future__ import annotations

import argparse
import json
from typing import Any

from prunus.cli._common import add_command, add_output_arg, mark_input, parse_set, print_table

__all__ = ["add_parser", "run"]


def _bits(text: str) -> int | str:
    if text == "auto":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--bits takes 'auto' or an integer from 2 to 8, got {text!r}") from None


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    from prunus.data import list_datasets

    p = add_command(
        subparsers,
        "compress",
        "Sparsify (directed evolution), quantize and entropy-code a saved model into one .prn file.",
        "prunus compress runs/l300/model --sparsity 0.9 --bits auto --max-drop 1.0 --out model.prn",
    )
    mark_input(p.add_argument("model_dir", help="model directory (model.json + model.safetensors)"))
    add_output_arg(p, "--out", "file", required=True, help="the .prn file to write (an existing one needs --force)")
    g = p.add_argument_group("what to compress to")
    g.add_argument("--sparsity", type=float, default=0.9, help="share of weights removed (default 0.9)")
    g.add_argument("--allocation", choices=("uniform", "global"), default="uniform",
                   help="uniform: every layer at --sparsity; global: one budget the search allocates")  # fmt: skip
    g.add_argument("--bits", type=_bits, default="auto", help="2-8 for every layer, or auto (greedy under the budget)")
    g.add_argument("--quantizer", choices=("kmeans", "uniform", "best"), default="kmeans")
    g.add_argument(
        "--max-drop", type=float, default=1.0, help="auto bits: accuracy points allowed to be lost (default 1.0)"
    )
    g.add_argument("--max-kl", type=float, help="auto bits: KL(teacher || compressed) allowed")
    g = p.add_argument_group("calibration (images from the TRAINING split)")
    g.add_argument("--data", default="fashion-mnist", choices=list_datasets(), help="dataset (default fashion-mnist)")
    mark_input(g.add_argument("--data-dir", help="directory holding the dataset files"))
    g.add_argument(
        "--calib", type=int, default=4096, help="training images for re-scoring and the bit budget (default 4096)"
    )
    g.add_argument(
        "--search-batch", type=int, default=1024, help="of those, images DE candidates are scored on (default 1024)"
    )
    g.add_argument("--seed", type=int, default=0, help="seed of the search and of the calibration slice")
    g.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="any other CompressConfig field")
    g = p.add_argument_group("output")
    g.add_argument(
        "--test", action="store_true", help="also evaluate the input and the compressed model on the test split"
    )
    g.add_argument("--json", action="store_true", help="print the full report as JSON")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")
    g.add_argument("--threads", type=int, help="torch CPU threads")
    p.set_defaults(run=run)
    return p


def run(args: argparse.Namespace) -> int:
    import dataclasses

    import torch

    from prunus.compress import CompressConfig, compress
    from prunus.compress.report import LAYER_COLUMNS, layer_rows
    from prunus.data import DataConfig, build_loaders, training_slice
    from prunus.errors import ConfigError
    from prunus.formats import load

    if args.threads is not None:
        if args.threads < 1:
            raise ConfigError(f"--threads must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    if not str(args.out).endswith(".prn"):
        raise ConfigError(f"--out must name a .prn file, got {args.out!r}")
    fields = {f.name for f in dataclasses.fields(CompressConfig)}
    overrides = parse_set(args.set, accepted=sorted(fields), owner="CompressConfig")
    cfg = CompressConfig(**{
        "sparsity": args.sparsity, "allocation": args.allocation, "bits": args.bits, "quantizer": args.quantizer,
        "max_drop": args.max_drop, "max_kl": args.max_kl, "calib_size": args.search_batch, "rescore_size": args.calib,
        "seed": args.seed, "progress": not args.no_progress, **overrides,
    })  # fmt: skip
    model = load(args.model_dir)
    bundle = build_loaders(DataConfig(name=args.data, root=args.data_dir, augment=False))
    calib = training_slice(bundle, max(args.calib, args.search_batch), seed=args.seed)
    report = compress(model, calib, cfg, out=args.out)
    test: dict[str, float] = {}
    if args.test:
        from prunus.evaluation import evaluate

        test = {
            "test_acc_input": evaluate(model, bundle.test)["acc"],
            "test_acc": evaluate(report.model, bundle.test)["acc"],
        }
    if args.json:
        print(json.dumps({**report.to_json(), **test}, indent=2))
        return 0
    print_table(f"{args.out}: per layer", LAYER_COLUMNS, layer_rows(report.layers))
    js = report.to_json()
    rows = [
        ("file bytes", f"{report.file_bytes:,}"),
        ("fp32 file bytes", f"{report.fp32_bytes:,}"),
        ("ratio vs fp32", f"{report.ratio:.1f}x"),
        ("sparsity", f"{report.sparsity:.4f}"),
        ("order-0 bound of the coded weights (bytes)", f"{js['bound_bytes']:,.1f}"),
        ("stream bits / order-0 bound", f"{js['stream_over_bound']:.4f}"),
        ("file bits / order-0 bound", f"{js['file_over_bound']:.4f}"),
        ("file bits / (bound + verbatim tensors)", f"{js['file_over_floor']:.4f}"),
        ("file bytes by part", ", ".join(f"{k} {v:,}" for k, v in js["file_parts"].items())),
        ("calibration accuracy (input -> compressed)", f"{report.teacher_acc * 100:.2f}% -> {report.acc * 100:.2f}%"),
        ("calibration KL", f"{report.kl:.5f}"),
        *([("budget (auto bits)", _budget_text(report.budget))] if report.budget else []),
        *((k.replace("_", " "), f"{v * 100:.2f}%") for k, v in test.items()),
        ("seconds", ", ".join(f"{k} {v:.1f}" for k, v in report.seconds.items())),
    ]
    print_table(f"{args.model_dir} -> {args.out}", ("metric", "value"), rows)
    return 0


def _budget_text(budget: dict) -> str:
    """One cell: met or NOT MET, the drop against what, and the limits."""
    limits = ", ".join(f"{k} {budget[k]:g}" for k in ("max_drop", "max_kl") if budget[k] is not None)
    verdict = "met" if budget["met"] else "NOT MET (see the warning)"
    return (f"{verdict}: {budget['drop_pt']:+.2f} pt lost, KL {budget['kl']:.4g} vs the {budget['against']} model "
            f"({limits}); pruning alone {budget['pruned_drop_pt']:+.2f} pt")  # fmt: skip
