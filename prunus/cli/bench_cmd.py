"""`prunus bench`: MACs, parameters, bytes on disk and latency of a saved model."""

from __future__ import annotations

import argparse
from typing import Any

from prunus.cli._common import add_command, add_output_arg, print_table
from prunus.cli.export_cmd import add_model_args, load_model, parse_ints
from prunus.errors import ConfigError

__all__ = ["add_parser", "run"]


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register `prunus bench`."""
    parser = add_command(
        subparsers,
        "bench",
        "Measure MACs, parameters, file size and median latency (torch, torch-folded, onnxruntime, openvino) "
        "of a saved model.",
        "prunus bench runs/r20/model --batch-sizes 1,64 --repeats 50 --json r20_bench.json",
    )
    add_model_args(parser)
    parser.add_argument("--batch-sizes", default="1,16,64", metavar="B1,B2,..", help="default: 1,16,64")
    parser.add_argument(
        "--runtimes",
        default=None,
        metavar="R1,R2",
        help="any of torch (eager), torch-folded (eager, BN folded into convs), onnxruntime, openvino "
        "(OpenVINO CPU plugin, f32) (default: every one installed)",
    )
    parser.add_argument("--repeats", type=int, default=30, help="timed calls per runtime and batch (default: 30)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed calls before timing (default: 5)")
    parser.add_argument("--threads", type=int, default=None, help="intra-op threads (default: the runtime's)")
    add_output_arg(parser, "--json", "file", metavar="OUT.json", help="also write the results to this JSON file")
    parser.set_defaults(run=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Benchmark the model, print the tables and optionally write JSON."""
    from prunus._io.atomic import write_json
    from prunus.deploy.bench import RUNTIMES, available_runtimes, benchmark_model

    batches = parse_ints(args.batch_sizes, "--batch-sizes")
    if args.runtimes is None:
        runtimes = available_runtimes()
    else:
        runtimes = tuple(r.strip() for r in args.runtimes.split(",") if r.strip())
    bad = [r for r in runtimes if r not in RUNTIMES]
    if bad or not runtimes:
        raise ConfigError(f"--runtimes={args.runtimes!r} is not valid; choose from: {', '.join(RUNTIMES)}")
    if args.repeats < 1 or args.warmup < 0 or (args.threads is not None and args.threads < 1):
        raise ConfigError("--repeats and --threads must be >= 1, --warmup >= 0")
    model, shape = load_model(args)
    result = benchmark_model(
        model,
        shape,
        model_dir=args.model_dir,
        batch_sizes=batches,
        runtimes=runtimes,
        warmup=args.warmup,
        repeats=args.repeats,
        threads=args.threads,
    )
    result = {"model_dir": str(args.model_dir), **result}
    print_table(
        f"prunus bench {args.model_dir}",
        ["input (C,H,W)", "MACs", "params", "bytes", "threads"],
        [["x".join(map(str, shape)), result["macs"], result["params"], result["bytes"], result["threads"]]],
    )
    print_table(
        "latency (median over repeats; ms per forward call)",
        ["runtime", "batch", "median ms", "p90 ms", "IQR ms", "images/s"],
        [
            [r["runtime"], r["batch"], r["median_ms"], r["p90_ms"], r["iqr_ms"], round(r["images_per_s"])]
            for r in result["latency"]
        ],
    )
    for batch, runtime in result["fastest"].items():
        print(f"fastest at batch {batch}: {runtime}")
    if args.json:
        write_json(args.json, result)
        print(f"wrote {args.json}")
    return 0
