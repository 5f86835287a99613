"""Latency efficiency of pruned models on every runtime, and latency budgets met as measured.

Two figures of docs/benchmarks.md, for one model per call (1x28x28 input, 10 classes, untrained
weights: latency does not depend on the values):

- **efficiency** (target >= 0.85): `prunus.prune(remove_channels=0.5)` (50% of the channels of every
  prunable group, stem and classifier kept), for each `--round-to` (`auto`: this CPU's channel block,
  16 on AVX-512, the widths the runtimes' blocked kernels compute without padding), against the dense model with
  `prunus.deploy.bench.compare_latency`: every runtime (torch, torch-folded, and with a static
  batch onnxruntime and openvino), batches `--batches`, calls interleaved dense/pruned, medians. Efficiency =
  (dense latency / pruned latency) / (dense MACs / pruned MACs). The headline is the efficiency on the
  runtime that runs the PRUNED model fastest (where a user deploys it); the best efficiency over
  runtimes is kept too, but a runtime whose dense model is slow can inflate it. `--streams` adds
  an arm cut to the first arm's MACs with every residual stream kept whole (`keep_streams=True`,
  round_to auto): the same MACs removed inside the blocks instead, speed per MAC compared directly.
- **budget** (target: achieved within 10% of requested): `prunus.prune(keep_latency=b,
  runtime=--runtime, latency_batch=64)` for each `--budgets` b; the ratio `prune` measured, and a
  second, independent side-by-side measurement of the same pruned model.

    .venv/bin/python benchmarks/bench_latency.py --model resnet56 [--round-to 1,8,auto] [--streams] [--budgets 0.5,0.3]

Writes benchmarks/results/latency_<model>.json (merged into an existing file per section).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import time
from pathlib import Path

import torch
from _common import write_json

from prunus import provenance
from prunus.deploy.bench import RUNTIMES, compare_latency
from prunus.models import create_model
from prunus.pruning import prune

RESULTS = Path(__file__).parent / "results"
SHAPE = (1, 28, 28)


def _model(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model(name, num_classes=10, in_channels=SHAPE[0]).eval()


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v]


def _floats(text: str) -> list[float]:
    return [float(v) for v in text.split(",") if v]


def _round_tos(text: str) -> list[int | str]:
    """ "1,8,auto" -> [1, 8, "auto"] (auto: this CPU's channel block, `prunus.pruning.channel_block`)."""
    return [v if v == "auto" else int(v) for v in text.split(",") if v]


def _arms(round_tos: list[int | str], streams: bool) -> list[dict]:
    """The cuts compared: 50% of every group's channels per round_to; with `streams`, one more arm at
    the FIRST arm's MACs with the residual streams kept whole (`keep_streams`, round_to auto)."""
    arms: list[dict] = [{"remove_channels": 0.5, "round_to": r} for r in round_tos]
    if streams:
        arms.append({"keep_macs": "first arm", "round_to": "auto", "keep_streams": True})
    return arms


def efficiency(name: str, arms: list[dict], batches: list[int], repeats: int, threads: int) -> list[dict]:
    dense = _model(name)
    x = torch.randn(1, *SHAPE)
    out = []
    for arm in arms:
        settings = dict(arm)
        if settings.get("keep_macs") == "first arm":  # the same MACs as the uniform cut: speed per MAC compared
            settings["keep_macs"] = 1 / out[0]["macs_ratio"]
        pruned, report = prune(copy.deepcopy(dense), x, **settings)
        cmp = compare_latency(dense, pruned, SHAPE, batch_sizes=batches, runtimes=RUNTIMES, repeats=repeats,
                              threads=threads)  # fmt: skip
        r = arm["round_to"]
        row = {
            "cut": {k: v for k, v in settings.items() if k != "round_to"},
            "round_to": r,
            "round_to_resolved": report.round_to,
            "macs_ratio": cmp.macs_ratio,
            "efficiency": {b: cmp.latency_efficiency(b) for b in batches},
            "best_runtime": {b: cmp.best_runtime(b) for b in batches},
            # the headline: efficiency where the pruned model runs fastest (what a user deploys)
            "deployed": {b: list(cmp.deployed_efficiency(b)) for b in batches},
            "speedups": [s.to_dict() for s in cmp.rows],
        }
        out.append(row)
        best = ", ".join(f"b{b}: {row['deployed'][b][1]:.3f} ({row['deployed'][b][0]})" for b in batches)
        print(f"{name} {row['cut']} round_to {r} ({report.round_to}): MACs cut {cmp.macs_ratio:.2f}x, "
              f"efficiency on the fastest runtime {best}", flush=True)  # fmt: skip
        for s in cmp.rows:
            print(f"    {s.runtime:13s} b{s.batch:<3d} dense {s.dense_ms:8.2f} ms  pruned {s.pruned_ms:8.2f} ms  "
                  f"speed-up {s.speedup:.2f}  eff {s.efficiency:.3f}", flush=True)  # fmt: skip
    return out


def budgets(
    name: str, values: list[float], runtime: str, batch: int, repeats: int, threads: int, round_to: int = 1
) -> list[dict]:
    dense = _model(name)
    x = torch.randn(1, *SHAPE)
    out = []
    for b in values:
        start = time.perf_counter()
        pruned, report = prune(copy.deepcopy(dense), x, keep_latency=b, runtime=runtime, latency_batch=batch,
                               threads=threads, round_to=round_to)  # fmt: skip
        seconds = time.perf_counter() - start
        cmp = compare_latency(dense, pruned, SHAPE, batch_sizes=(batch,), runtimes=(runtime,), repeats=repeats,
                              threads=threads)  # fmt: skip
        again = 1.0 / cmp.rows[0].speedup
        row = {
            "requested": b,
            "round_to": round_to,
            "measured_by_prune": report.achieved_latency_ratio,
            "estimated": report.estimated_latency_ratio,
            "remeasured": again,
            "within_10pct": abs(again / b - 1) <= 0.10,
            "macs_ratio_kept": report.achieved_macs_ratio,
            "prune_seconds": seconds,
            "widths": report.widths,
        }
        out.append(row)
        print(f"{name} keep_latency {b} round_to {round_to} on {runtime} b{batch}: "
              f"prune measured {report.achieved_latency_ratio:.3f}, "
              f"re-measured {again:.3f}, table estimate {report.estimated_latency_ratio:.3f}, MACs kept "
              f"{report.achieved_macs_ratio:.3f}, {seconds:.0f} s", flush=True)  # fmt: skip
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="resnet56")
    ap.add_argument("--round-to", type=_round_tos, default=[1, "auto"],
                    help="round_to values for the efficiency arms; auto = this CPU's channel block")  # fmt: skip
    ap.add_argument(
        "--streams", action="store_true", help="add an arm at the first arm's MACs with residual streams kept whole"
    )
    ap.add_argument("--batches", type=_ints, default=[64, 1])
    ap.add_argument("--budgets", type=_floats, default=[], help="latency ratios, e.g. 0.5,0.3")
    ap.add_argument("--runtime", default="onnxruntime", help="runtime of the latency budgets")
    ap.add_argument("--budget-round-to", type=int, default=1, help="round_to of the latency-budget prunes")
    ap.add_argument("--repeats", type=int, default=11)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--skip-efficiency", action="store_true")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    path = Path(args.out) if args.out else RESULTS / f"latency_{args.model}.json"
    result = json.loads(path.read_text()) if path.is_file() else {}
    load = os.getloadavg()
    if "efficiency" in result and "efficiency_commit" not in result:  # older files: the top-level commit is its
        result["efficiency_commit"], result["efficiency_date"] = result.get("commit"), result.get("date")
    result.update({"model": args.model, "input_shape": list(SHAPE), **provenance(config=vars(args))})
    if not args.skip_efficiency:
        arms = _arms(args.round_to, args.streams)
        result["efficiency"] = efficiency(args.model, arms, args.batches, args.repeats, args.threads)
        result["efficiency_load_before"] = load
        # a later --skip-efficiency run replaces the top-level provenance; these keep the efficiency's own
        result["efficiency_commit"], result["efficiency_date"] = result["commit"], result["date"]
    if args.budgets:
        rows = budgets(args.model, args.budgets, args.runtime, 64, args.repeats, args.threads, args.budget_round_to)
        result["budgets"] = [b for b in result.get("budgets", []) if b.get("round_to", 1) != args.budget_round_to]
        result["budgets"] += rows
        result["budget_runtime"] = args.runtime
        result["budgets_load_before"] = load
    result["load_after"] = os.getloadavg()
    write_json(path, result)
    print(f"load average before {load}, after {result['load_after']}; wrote {path}")


if __name__ == "__main__":
    main()
