"""C-SGD overhead: epoch time of training with C-SGD over plain training (target <= 1.10).

Both arms train the same ResNet-20 (1 input channel, same initialisation) on the same fixed
Fashion-MNIST training subset with the same batches, through the same Trainer; the C-SGD arm
clusters every prunable group to 5/8 width (k-means, eps 0.05) and rewrites the gradients of the
clustered tensors after every backward pass, logging chi every 20 steps. Evaluation is outside the
figure: the arms get no validation loader and a one-batch test loader. Epochs are interleaved,
alternating which arm goes first, after one warm-up epoch per arm; the figure is the median epoch
time with C-SGD over the median epoch time without.

    .venv/bin/python benchmarks/bench_csgd_overhead.py [--subset 10000] [--repeats 5] [--threads 2]

Writes benchmarks/results/csgd_overhead.json.
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import replace
from pathlib import Path

import torch
from _common import print_table, write_json

from prunus import provenance
from prunus.data import DataConfig, build_loaders
from prunus.engine import TrainConfig, Trainer
from prunus.methods import create_method
from prunus.models import create_model

RESULTS = Path(__file__).parent / "results"
TARGET = 1.10


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--subset", type=int, default=10000, help="fixed training subset (quick protocol: 10000)")
    ap.add_argument("--repeats", type=int, default=5, help="timed epochs per arm (after one warm-up epoch)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--width-mult", type=float, default=1.0, help="ResNet-20 width (smoke tests: 0.25)")
    ap.add_argument("--data", default="fashion-mnist")
    ap.add_argument("--out", default=str(RESULTS / "csgd_overhead.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    data = build_loaders(DataConfig(name=args.data, subset=args.subset, val_size=5000, batch_size=args.batch_size))
    one_batch = build_loaders(
        DataConfig(name=args.data, subset=args.batch_size, val_size=0, eval_batch_size=args.batch_size, augment=False)
    ).train
    one_batch.shuffle = False
    bundle = replace(data, val=None, test=one_batch)
    cfg = TrainConfig(epochs=args.repeats + 1, lr=0.05, checkpoint=False, threads=args.threads)
    arms = ("plain", "csgd")
    trainers = {}
    for arm in arms:
        torch.manual_seed(0)
        model = create_model(
            "resnet20", in_channels=bundle.in_channels, num_classes=bundle.num_classes, width_mult=args.width_mult
        )
        methods = [create_method("csgd", width=0.625, eps=0.05)] if arm == "csgd" else []
        trainers[arm] = Trainer(model, bundle, cfg, methods, progress=False)

    times: dict[str, list[float]] = {arm: [] for arm in arms}
    for r in range(args.repeats + 1):
        for arm in arms if r % 2 == 0 else arms[::-1]:
            start = time.perf_counter()
            trainers[arm]._run_epoch()
            if r > 0:  # epoch 0 is the warm-up
                times[arm].append(time.perf_counter() - start)
    medians = {arm: statistics.median(t) for arm, t in times.items()}
    ratio = medians["csgd"] / medians["plain"]
    result = {
        "figure": "method overhead (C-SGD)",
        "definition": (
            f"median epoch time with C-SGD (width 0.625, eps 0.05, k-means) over plain training; ResNet-20 "
            f"x{args.width_mult}, {args.data} fixed {args.subset}-image subset, batch {args.batch_size}, interleaved"
        ),
        "epoch_seconds": times,
        "median_epoch_s": medians,
        "ratio": ratio,
        "target": f"<= {TARGET}",
        "steps_per_epoch": len(bundle.train),
        "csgd_metrics_last_epoch": {k: v for k, v in trainers["csgd"].history[-1].items() if k.startswith("csgd_")},
        "repeats": args.repeats,
        **provenance(config=vars(args)),
    }
    write_json(args.out, result)
    rows = [
        (
            arm,
            f"{medians[arm]:.2f}",
            " ".join(f"{x:.2f}" for x in times[arm]),
            "1.000" if arm == "plain" else f"{ratio:.3f}",
            "" if arm == "plain" else f"<= {TARGET}",
        )
        for arm in arms
    ]
    print_table(result["definition"], ("arm", "median epoch (s)", "epochs (s)", "ratio to plain", "target"), rows)


if __name__ == "__main__":
    main()
