"""Engine overhead: Trainer training throughput over a minimal hand-written loop (target >= 0.95).

Both arms train the same ResNet-20 on the same augmented Fashion-MNIST batches (same loader,
same optimizer settings); epochs of the two arms are interleaved so machine noise hits both,
and the ratio of medians is reported. The Trainer arm runs its full epoch (hooks, NaN check,
progress, metrics record) with evaluation disabled by giving it no validation/test loader work
beyond one batch, which is timed too.

    .venv/bin/python benchmarks/bench_engine.py [--steps 20] [--repeats 5] [--threads 2]

Writes benchmarks/results/engine.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from dataclasses import replace
from pathlib import Path

import torch
from _common import write_json
from torch import nn

from prunus import provenance
from prunus.data import DataConfig, build_loaders
from prunus.engine import TrainConfig, Trainer
from prunus.models import create_model

RESULTS = Path(__file__).parent / "results"


def minimal_epoch(model: nn.Module, loader, opt: torch.optim.Optimizer, epoch: int) -> int:
    """The reference loop: what anyone would write by hand."""
    loss_fn = nn.CrossEntropyLoss()
    model.train()
    loader.set_epoch(epoch)
    seen = 0
    for x, y in loader:
        loss = loss_fn(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        loss.item()  # the hand-written loop also reads the loss to print it
        seen += y.numel()
    return seen


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=20, help="training steps per timed epoch")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=128)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    n_train = args.steps * args.batch_size
    data = build_loaders(
        DataConfig(name="fashion-mnist", subset=n_train, batch_size=args.batch_size, val_size=5000), seed=0
    )
    # The Trainer evaluates val and test after every epoch; for a training-throughput figure we
    # hand it a one-batch test loader and no validation loader, and time that evaluation too.
    small_test = build_loaders(
        DataConfig(name="fashion-mnist", subset=args.batch_size, val_size=0, eval_batch_size=args.batch_size), seed=0
    ).train
    small_test.shuffle, small_test.augment = False, None
    bundle = replace(data, val=None, test=small_test)
    cfg = TrainConfig(epochs=args.repeats + 1, lr=0.05, checkpoint=False, threads=args.threads)

    torch.manual_seed(0)
    ref_model = create_model("resnet20", in_channels=1, num_classes=10)
    ref_opt = torch.optim.SGD(ref_model.parameters(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4)
    torch.manual_seed(0)
    trainer = Trainer(create_model("resnet20", in_channels=1, num_classes=10), bundle, cfg, progress=False)

    minimal_epoch(ref_model, data.train, ref_opt, 0)  # warm-up both arms
    trainer._run_epoch()
    ref_times, trainer_times = [], []
    seen = 0
    for r in range(args.repeats):
        # alternate which arm goes first so a slow phase of the machine hits both equally
        order = ("minimal", "trainer") if r % 2 == 0 else ("trainer", "minimal")
        for arm in order:
            t0 = time.perf_counter()
            if arm == "minimal":
                seen = minimal_epoch(ref_model, data.train, ref_opt, r + 1)
                ref_times.append(time.perf_counter() - t0)
            else:
                trainer._run_epoch()
                trainer_times.append(time.perf_counter() - t0)
    ref_ips = seen / statistics.median(ref_times)
    trainer_ips = seen / statistics.median(trainer_times)
    result = {
        "figure": "engine overhead",
        "definition": "Trainer images/s over a minimal hand-written loop, ResNet-20, augmented Fashion-MNIST",
        "minimal_images_per_s": ref_ips,
        "trainer_images_per_s": trainer_ips,
        "ratio": trainer_ips / ref_ips,
        "target": ">= 0.95",
        "steps_per_epoch": args.steps,
        "repeats": args.repeats,
        **provenance(config=vars(args)),
    }
    write_json(RESULTS / "engine.json", result)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
