"""Method overhead: epoch time of SFP, FPGM and MFP over plain training (targets 1.05, 1.05, 1.10).

Every arm trains the same ResNet-20 (1 input channel, same initialisation) on the same fixed
Fashion-MNIST training subset with the same batches (one loader seed), through the same Trainer;
the arms differ only in the method plug-in (rate 0.4, defaults otherwise: SFP l2, FPGM, MFP with
its four candidates, switch every 2 epochs, `loss` meta-attribute on 1024 training images).
Evaluation is outside the figure: the arms get no validation loader and a one-batch test loader.

The timed unit is a round of 2 epochs (one MFP switch period: MFP evaluates its neighbours on
every other epoch, so single epochs would alternate between cheap and expensive). Rounds are
interleaved across arms, rotating which arm goes first, after one warm-up round per arm; the
figure is median round time of the arm over that of plain training.

    .venv/bin/python benchmarks/bench_method_overhead.py [--subset 10000] [--rounds 3] [--threads 2]

Writes benchmarks/results/method_overhead.json.
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
ROUND = 2  # epochs per timed unit = MFP's default switch_interval
ARMS = {"plain": None, "sfp": {"rate": 0.4}, "fpgm": {"rate": 0.4}, "mfp": {"rate": 0.4}}
TARGETS = {"sfp": 1.05, "fpgm": 1.05, "mfp": 1.10}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--subset", type=int, default=10000, help="fixed training subset (quick protocol: 10000)")
    ap.add_argument("--rounds", type=int, default=3, help="timed rounds of 2 epochs per arm (after one warm-up)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--data", default="fashion-mnist")
    ap.add_argument("--arms", default=",".join(ARMS), help=f"comma-separated subset of {','.join(ARMS)}")
    ap.add_argument("--out", default=str(RESULTS / "method_overhead.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    arms = [a.strip() for a in args.arms.split(",") if a.strip()]
    if "plain" not in arms or any(a not in ARMS for a in arms):
        raise SystemExit(f"--arms must include plain and name only {', '.join(ARMS)}")

    data = build_loaders(DataConfig(name=args.data, subset=args.subset, val_size=5000, batch_size=args.batch_size))
    one_batch = build_loaders(
        DataConfig(name=args.data, subset=args.batch_size, val_size=0, eval_batch_size=args.batch_size, augment=False)
    ).train
    one_batch.shuffle = False
    bundle = replace(data, val=None, test=one_batch)
    epochs = ROUND * (args.rounds + 1)
    cfg = TrainConfig(epochs=epochs, lr=0.1, checkpoint=False, threads=args.threads)
    trainers = {}
    for arm in arms:
        torch.manual_seed(0)
        model = create_model("resnet20", in_channels=bundle.in_channels, num_classes=bundle.num_classes)
        methods = [] if ARMS[arm] is None else [create_method(arm, **ARMS[arm])]
        trainers[arm] = Trainer(model, bundle, cfg, methods, progress=False)

    times: dict[str, list[float]] = {arm: [] for arm in arms}
    for r in range(args.rounds + 1):
        order = arms[r % len(arms) :] + arms[: r % len(arms)]
        for arm in order:
            start = time.perf_counter()
            for _ in range(ROUND):
                trainers[arm]._run_epoch()
            if r > 0:  # round 0 is the warm-up
                times[arm].append(time.perf_counter() - start)
    base = statistics.median(times["plain"])
    ratios = {arm: statistics.median(t) / base for arm, t in times.items() if arm != "plain"}
    result = {
        "figure": "method overhead",
        "definition": (
            f"median time of a {ROUND}-epoch round with the method over plain training; ResNet-20, "
            f"{args.data} fixed {args.subset}-image subset, batch {args.batch_size}, rate 0.4, interleaved rounds"
        ),
        "round_seconds": times,
        "median_round_s": {arm: statistics.median(t) for arm, t in times.items()},
        "ratio": ratios,
        "target": {arm: f"<= {TARGETS[arm]}" for arm in ratios},
        "method_metrics_last_epoch": {
            arm: {k: v for k, v in t.history[-1].items() if k.startswith(f"{arm}_")}
            for arm, t in trainers.items()
            if arm != "plain"
        },
        "rounds": args.rounds,
        **provenance(config=vars(args)),
    }
    write_json(args.out, result)
    rows = []
    for arm in arms:
        t = times[arm]
        ratio = "1.000" if arm == "plain" else f"{ratios[arm]:.3f}"
        target = "" if arm == "plain" else f"<= {TARGETS[arm]}"
        rows.append((arm, f"{statistics.median(t):.2f}", " ".join(f"{x:.2f}" for x in t), ratio, target))
    print_table(result["definition"], ("arm", "median round (s)", "rounds (s)", "ratio to plain", "target"), rows)


if __name__ == "__main__":
    main()
