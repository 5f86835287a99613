"""Prune time and latency efficiency: `prunus.prune` vs Torch-Pruning called directly, on ResNet-56.

Prune time (target <= 1.0, issue 27; it was 1.5): graph build + 50% channel prune of a dense ResNet-56 (option-B
shortcuts, 1x28x28 input, 10 classes; `--input 3x32x32` for the CIFAR shape). The prunus arm is
the whole public call `prunus.prune(model, x, remove_channels=0.5, criterion="l1")`: tracing, grouping,
scoring, cutting, and the MACs of its report (recorded by the trace's own pass). The Torch-Pruning arm builds
`tp.pruner.BasePruner` with `tp.importance.GroupMagnitudeImportance(p=1)` (group L1) at
pruning_ratio 0.5, ignoring the same stem conv and classifier, and calls `step()`. Model
construction is outside the timers. The arms are interleaved, alternating which goes first, and
the figure is the ratio of medians (prunus / Torch-Pruning).

Latency efficiency (target >= 0.85, issue 11): `prunus.bench.compare_latency` of the dense vs the prunus-pruned
ResNet-56 at batch 64 on every installed runtime (torch, torch-folded, onnxruntime, openvino); the
figure is (dense latency / pruned latency) / (dense MACs / pruned MACs) on the runtime that runs the
pruned model fastest (round_to 1, the same cut as Torch-Pruning's; `bench_latency.py` has the
`round_to auto` arm). The
load average before and after is recorded (the machine may be shared).

    .venv/bin/python benchmarks/bench_prune_speed.py [--repeats 9] [--threads 2] [--input 1x28x28]

Writes benchmarks/results/prune_speed.json.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import torch
import torch_pruning as tp
from _common import print_table, write_json

import prunus
from prunus import provenance
from prunus.deploy.bench import compare_latency
from prunus.models import create_model
from prunus.models.info import example_input, get_info
from prunus.pruning import prune

RESULTS = Path(__file__).parent / "results"


def _shape(text: str) -> tuple[int, int, int]:
    c, h, w = (int(v) for v in text.lower().split("x"))
    return c, h, w


def _model(name: str, shape: tuple[int, int, int], width: float) -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model(name, num_classes=10, in_channels=shape[0], width_mult=width).eval()


def _ignored_names(model: torch.nn.Module, prune_stem: bool) -> list[str]:
    # default: the model's stem and classifier; --prune-stem keeps only the classifier, so the stem's
    # output (the first residual stream) is pruned too, as in Torch-Pruning's ResNet-56 examples
    names = list(get_info(model).ignored)
    return names[1:] if prune_stem else names


def _time_prunus(
    name: str, shape: tuple[int, int, int], width: float, ratio: float, prune_stem: bool = False
) -> tuple[float, torch.nn.Module]:
    model = _model(name, shape, width)
    x = example_input(shape)
    ignored = _ignored_names(model, prune_stem)
    start = time.perf_counter()
    model, _ = prune(model, x, remove_channels=ratio, criterion="l1", ignored_layers=ignored)
    return time.perf_counter() - start, model


def _time_tp(
    name: str, shape: tuple[int, int, int], width: float, ratio: float, prune_stem: bool = False
) -> tuple[float, torch.nn.Module]:
    model = _model(name, shape, width)
    x = example_input(shape)
    ignored = [model.get_submodule(n) for n in _ignored_names(model, prune_stem)]
    start = time.perf_counter()
    pruner = tp.pruner.BasePruner(
        model, x, importance=tp.importance.GroupMagnitudeImportance(p=1), pruning_ratio=ratio, ignored_layers=ignored
    )
    pruner.step()
    return time.perf_counter() - start, model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="resnet56")
    ap.add_argument("--width", type=float, default=1.0, help="width multiplier (1.0 = the real ResNet-56)")
    ap.add_argument("--prune-stem", action="store_true", help="prune the stem's output channels too (only fc kept)")
    ap.add_argument("--input", type=_shape, default=(1, 28, 28), help="CxHxW, default 1x28x28")
    ap.add_argument("--ratio", type=float, default=0.5, help="fraction of channels removed per group")
    ap.add_argument("--repeats", type=int, default=9, help="timed prunes per arm (after one warm-up each)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--latency-repeats", type=int, default=30)
    ap.add_argument("--skip-latency", action="store_true")
    ap.add_argument("--out", default=str(RESULTS / "prune_speed.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    shape = args.input
    load = os.getloadavg()

    _time_prunus(args.model, shape, args.width, args.ratio)  # warm-up: imports, allocator, tracer caches
    _time_tp(args.model, shape, args.width, args.ratio)
    t_prunus: list[float] = []
    t_tp: list[float] = []
    pruned = tp_pruned = None
    for i in range(args.repeats):
        arms = [("prunus", _time_prunus), ("tp", _time_tp)]
        for arm, fn in arms if i % 2 == 0 else arms[::-1]:
            seconds, model = fn(args.model, shape, args.width, args.ratio, args.prune_stem)
            if arm == "prunus":
                t_prunus.append(seconds)
                pruned = model
            else:
                t_tp.append(seconds)
                tp_pruned = model
    med_p, med_t = statistics.median(t_prunus), statistics.median(t_tp)
    dense = _model(args.model, shape, args.width)
    c_dense, c_p, c_t = (prunus.count(m, shape) for m in (dense, pruned, tp_pruned))
    result = {
        "figure": "prune time and latency efficiency",
        "definition": (
            f"graph build + {args.ratio:.0%} channel prune of {args.model} (width {args.width}, input "
            f"{'x'.join(map(str, shape))}): prunus.prune(remove_channels, l1) over tp.pruner.BasePruner + "
            "GroupMagnitudeImportance(p=1) + step(), ratio of medians; interleaved; "
            + ("stem pruned too (only fc ignored)" if args.prune_stem else "stem and fc ignored (prunus default)")
        ),
        "prune_stem": args.prune_stem,
        "prunus_seconds": t_prunus,
        "torch_pruning_seconds": t_tp,
        "prunus_median_s": med_p,
        "torch_pruning_median_s": med_t,
        "time_ratio": med_p / med_t,
        "time_target": "<= 1.0",
        "macs": {"dense": c_dense.macs, "prunus": c_p.macs, "torch_pruning": c_t.macs},
        "params": {"dense": c_dense.params, "prunus": c_p.params, "torch_pruning": c_t.params},
        "repeats": args.repeats,
        "torch_pruning": tp.__version__,
        "load_average_before": load,
        **provenance(config=vars(args)),
    }
    rows = [
        ("prune time (s, median)", f"{med_p:.3f}", f"{med_t:.3f}", f"{med_p / med_t:.2f}", "<= 1.0"),
        ("MACs after", f"{c_p.macs:,}", f"{c_t.macs:,}", f"{c_p.macs / c_t.macs:.3f}", ""),
        ("params after", f"{c_p.params:,}", f"{c_t.params:,}", f"{c_p.params / c_t.params:.3f}", ""),
    ]
    if not args.skip_latency:
        cmp = compare_latency(
            dense, pruned, shape, batch_sizes=(64,), repeats=args.latency_repeats, threads=args.threads
        )
        result["latency"] = cmp.to_dict()
        result["latency_efficiency"] = cmp.latency_efficiency(64)
        result["deployed_efficiency"] = list(cmp.deployed_efficiency(64))
        result["latency_target"] = ">= 0.85 (fastest runtime, batch 64)"
        for r in cmp.rows:
            rows.append(
                (f"latency {r.runtime} b{r.batch} (ms)", f"{r.pruned_ms:.2f}", f"dense {r.dense_ms:.2f}",
                 f"eff {r.efficiency:.2f}", ">= 0.85")
            )  # fmt: skip
    result["load_average_after"] = os.getloadavg()
    write_json(args.out, result)
    _print(rows, result)
    print(f"load average before {load}, after {result['load_average_after']}")


def _print(rows: list[tuple[str, ...]], result: dict) -> None:
    print_table(result["definition"], ("figure", "prunus", "torch-pruning / ref", "ratio", "target"), rows)
    if "latency_efficiency" in result:
        runtime, eff = result.get("deployed_efficiency", ("?", result["latency_efficiency"]))
        print(f"latency efficiency on the fastest runtime ({runtime}, batch 64): {eff:.3f}; "
              f"best over runtimes {result['latency_efficiency']:.3f}")  # fmt: skip


if __name__ == "__main__":
    main()
