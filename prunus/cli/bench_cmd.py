"""`prunus bench`: MACs, parameters, bytes on disk and latency of saved models, side by side."""

from __future__ import annotations

import argparse
from typing import Any

from prunus.cli._common import add_command, add_output_arg, mark_input, print_table
from prunus.cli.export_cmd import load_model, parse_ints
from prunus.errors import ConfigError

__all__ = ["add_parser", "run"]


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register `prunus bench`."""
    parser = add_command(
        subparsers,
        "bench",
        "Measure MACs, parameters, file size and median latency (torch, torch-folded, onnxruntime, openvino) "
        "of saved models; with several, side by side as ratios to the first.",
        "prunus bench runs/r20/model runs/r20-half/model --batch-sizes 1,64 --threads 1 --json r20_bench.json",
    )
    mark_input(
        parser.add_argument(
            "model_dir",
            nargs="+",
            metavar="MODEL_DIR",
            help="saved model directories; with two or more, the first is the reference (your dense model)",
        )
    )
    parser.add_argument(
        "--input-shape",
        metavar="C,H,W",
        help="one sample's shape (C,H,W; or C,L, C,D,H,W); default: the one in model.json",
    )
    parser.add_argument(
        "--trust-factory", action="store_true", help="allow importing the user factory named in model.json"
    )
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


def _runtimes(text: str | None) -> tuple[str, ...]:
    from prunus.deploy.bench import RUNTIMES, available_runtimes

    if text is None:
        return available_runtimes()
    runtimes = tuple(r.strip() for r in text.split(",") if r.strip())
    bad = [r for r in runtimes if r not in RUNTIMES]
    if bad or not runtimes:
        raise ConfigError(f"--runtimes={text!r} is not valid; choose from: {', '.join(RUNTIMES)}")
    return runtimes


def run(args: argparse.Namespace) -> int:
    """Benchmark the model(s), print the tables and optionally write JSON."""
    batches = parse_ints(args.batch_sizes, "--batch-sizes")
    runtimes = _runtimes(args.runtimes)
    if args.repeats < 1 or args.warmup < 0 or (args.threads is not None and args.threads < 1):
        raise ConfigError("--repeats and --threads must be >= 1, --warmup >= 0")
    loaded = [load_model(argparse.Namespace(**{**vars(args), "model_dir": d})) for d in args.model_dir]
    shape = loaded[0][1]
    for d, (_, s) in zip(args.model_dir[1:], loaded[1:]):
        if s != shape:
            raise ConfigError(f"{d} takes input {'x'.join(map(str, s))}, the first model {'x'.join(map(str, shape))}")
    if len(loaded) == 1:
        result = _one(args, loaded[0][0], shape, batches, runtimes)
    else:
        result = _several(args, [m for m, _ in loaded], shape, batches, runtimes)
    if args.json:
        from prunus._io.atomic import write_json

        write_json(args.json, result)
        print(f"wrote {args.json}")
    return 0


def _one(args: argparse.Namespace, model: Any, shape: tuple[int, ...], batches: tuple[int, ...], runtimes: Any) -> dict:
    from prunus.deploy.bench import benchmark_model

    (path,) = args.model_dir
    result = benchmark_model(
        model, shape, model_dir=path, batch_sizes=batches, runtimes=runtimes, warmup=args.warmup,
        repeats=args.repeats, threads=args.threads,
    )  # fmt: skip
    result = {"format": "prunus-bench", "model_dir": str(path), **result}  # the format marks it as ours
    print_table(
        f"prunus bench {path}",
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
    return result


def _ratio(r: dict[str, float]) -> str:
    return f"{r['median']:.2f}x [{r['q25']:.2f}-{r['q75']:.2f}]"


def _several(
    args: argparse.Namespace, models: list[Any], shape: tuple[int, ...], batches: tuple[int, ...], runtimes: Any
) -> dict:
    from prunus.deploy.compare import compare_models

    paths = [str(p) for p in args.model_dir]
    cmp = compare_models(
        models, shape, names=paths, paths=paths, batch_sizes=batches, runtimes=runtimes, warmup=args.warmup,
        repeats=args.repeats, threads=args.threads,
    )  # fmt: skip
    result = {"format": "prunus-bench", "input_shape": list(shape), **cmp.to_dict()}
    rows = result["models"]

    def ratio(v: float | None) -> str:
        return "-" if v is None else f"{v:.2f}x"

    print_table(
        f"prunus bench: {len(rows)} models, input {'x'.join(map(str, shape))}, {result['threads']} thread(s); "
        f"ratios = first / this",
        ["model", "MACs", "params", "bytes", "MACs cut", "params cut", "bytes cut"],
        [
            [m["name"], m["macs"], m["params"], m["bytes"], ratio(m["macs_ratio"]), ratio(m["params_ratio"]),
             ratio(m["bytes_ratio"])]
            for m in rows
        ],
    )  # fmt: skip
    print_table(
        "latency (median over interleaved repeats; ms per forward call); speed-up = first / this on the same "
        "runtime, median [IQR] of per-repeat ratios",
        ["model", "runtime", "batch", "median ms", "IQR ms", "speed-up"],
        [
            [m["name"], lat["runtime"], lat["batch"], lat["median_ms"], lat["iqr_ms"], _ratio(pr)]
            for m in rows
            for lat, pr in zip(m["latency"], m["per_runtime"])
        ],
    )
    print_table(
        f"end to end: the first model in eager {result['reference_runtime']} vs each model on its fastest runtime "
        "(median [IQR] of per-repeat ratios)",
        ["model", "batch", "fastest runtime", "speed-up"],
        [[m["name"], b, e["runtime"], _ratio(e)] for m in rows for b, e in m["end_to_end"].items()],
    )
    for m in rows:
        for batch, runtime in m["fastest"].items():
            print(f"fastest at batch {batch} for {m['name']}: {runtime}")
    return result
