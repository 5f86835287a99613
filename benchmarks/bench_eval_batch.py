"""Evaluation speed by batch size: which `eval_batch_size` should the Trainer and `prunus eval` use on CPU?

Every epoch of a protocol run scores the validation and test splits (15k Fashion-MNIST images in
the quick protocol), so evaluation can cost as much as training. On CPU, per-image inference time
GROWS with the batch once a batch's activations leave the caches, so the biggest batch is not
the fastest. This times `prunus.measure.evaluation.evaluate` over the real Fashion-MNIST test split (10k
images) for each model and batch size, interleaved (every round visits all batch sizes, the
order rotating), medians over rounds, and reports each batch size's time over the best one.
Untrained weights: the time does not depend on them.

    .venv/bin/python benchmarks/bench_eval_batch.py [--models resnet20,resnet56,mobilenetv2] \
        [--batches 16,32,64,128,256,1024] [--rounds 3] [--threads 2]

Writes benchmarks/results/eval_batch.json.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import torch
from _common import write_json

from prunus import provenance
from prunus.data import DataConfig, TensorLoader, build_loaders
from prunus.measure.evaluation import evaluate
from prunus.models import create_model

RESULTS = Path(__file__).parent / "results"


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v]


def time_model(name: str, batches: list[int], rounds: int, test) -> dict:
    """Median seconds of one full evaluation of `test` per batch size (interleaved rounds)."""
    torch.manual_seed(0)
    model = create_model(name, num_classes=10, in_channels=1).eval()
    loaders = {b: TensorLoader(test.data, b) for b in batches}
    evaluate(model, loaders[batches[0]])  # warm-up: allocator, thread pool, first-call costs
    seconds: dict[int, list[float]] = {b: [] for b in batches}
    for r in range(rounds):
        order = batches[r % len(batches) :] + batches[: r % len(batches)]
        for b in order:
            start = time.perf_counter()
            evaluate(model, loaders[b])
            seconds[b].append(time.perf_counter() - start)
    med = {b: statistics.median(s) for b, s in seconds.items()}
    best = min(med, key=med.get)
    row = {
        "model": name,
        "images": len(test.data),
        "median_seconds": {str(b): med[b] for b in batches},
        "over_best": {str(b): med[b] / med[best] for b in batches},
        "best_batch": best,
        "rounds": {str(b): seconds[b] for b in batches},
    }
    print(f"{name}: " + "  ".join(f"b{b} {med[b]:.2f} s ({med[b] / med[best]:.2f}x)" for b in batches), flush=True)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="resnet20,resnet56,mobilenetv2")
    ap.add_argument("--batches", type=_ints, default=[16, 32, 64, 128, 256, 1024])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--data", default="fashion-mnist")
    ap.add_argument("--out", default=str(RESULTS / "eval_batch.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    meta = provenance(config=vars(args))  # read at start: the code that runs is the code recorded
    load = os.getloadavg()
    test = build_loaders(DataConfig(name=args.data, augment=False)).test
    rows = [time_model(m, args.batches, args.rounds, test) for m in args.models.split(",") if m]
    write_json(
        args.out,
        {
            "figure": "evaluation time by batch size",
            "definition": f"prunus.measure.evaluation.evaluate over the {args.data} test split, per batch size: median "
            "seconds over interleaved rounds, and over the fastest batch size",
            "models": rows,
            "load_average_before": load,
            "load_average_after": os.getloadavg(),
            **meta,
        },
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
