"""Does soft pruning regrow, and does MFP switch? Per-epoch logs of a short real run.

Trains ResNet-20 on a Fashion-MNIST subset three times, identically seeded: SFP soft, SFP hard and
MFP (all four default candidates, a switch every epoch), and writes what the methods logged:
per epoch `turnover` (masked last time, not now), `regrown` (masked last time, filter norm now
>= 0.1 x the group median), `masked_norm` (median masked-filter norm / group median), and for MFP
per switch the choice, whether it kept the criterion in use, ties, scores and the channels each
pair of candidates disagrees on. A short protocol: it shows the mechanisms, not accuracy.

Usage:
    .venv/bin/python benchmarks/regrowth_and_switches.py --subset 4000 --epochs 6 \
        --out benchmarks/results/regrowth_and_switches.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch
from _common import write_json

from prunus import provenance
from prunus.data import DataConfig, build_loaders
from prunus.engine import TrainConfig, Trainer
from prunus.methods import create_method
from prunus.models import create_model

KEEP = ("turnover", "regrown", "masked_norm", "channels_masked", "choice", "kept", "tie", "scores", "mask_diff")


def run(arm: str, args: argparse.Namespace) -> dict:
    data = build_loaders(
        DataConfig(name="fashion-mnist", subset=args.subset, val_size=args.val_size, batch_size=128), seed=args.seed
    )
    torch.manual_seed(args.seed)
    model = create_model("resnet20", in_channels=1, num_classes=data.num_classes, width_mult=args.width_mult)
    prefix = "mfp" if arm == "mfp" else "sfp"
    if arm == "mfp":
        method = create_method("mfp", rate=args.rate, switch_interval=1, holdout_size=512)
    else:
        method = create_method("sfp", rate=args.rate, hard=arm == "sfp-hard")
    cfg = TrainConfig(epochs=args.epochs, lr=0.1, seed=args.seed, threads=args.threads, checkpoint=False)
    start = time.perf_counter()
    trainer = Trainer(model, data, cfg, [method], progress=False)
    result = trainer.fit()
    epochs = [
        {
            "epoch": r["epoch"],
            "val_acc": r.get("val_acc"),
            **{k: r[f"{prefix}_{k}"] for k in KEEP if f"{prefix}_{k}" in r},
        }
        for r in trainer.history
    ]
    final = {k: v for k, v in result.items() if isinstance(v, (int, float))}
    return {"epochs": epochs, "final": final, "seconds": round(time.perf_counter() - start, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--subset", type=int, default=4000)
    ap.add_argument("--val-size", type=int, default=1000)
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--rate", type=float, default=0.4)
    ap.add_argument("--width-mult", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--arms", nargs="+", default=["sfp-soft", "sfp-hard", "mfp"])
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/regrowth_and_switches.json"))
    args = ap.parse_args()
    out = {"command": "benchmarks/regrowth_and_switches.py " + " ".join(sys.argv[1:]), "load": os.getloadavg(),
           "arms": {}, **provenance(config={k: str(v) for k, v in vars(args).items()})}  # fmt: skip
    for arm in args.arms:
        out["arms"][arm] = run(arm, args)
        print(arm, json.dumps(out["arms"][arm]["epochs"][-1]))
    out["load_after"] = os.getloadavg()
    write_json(args.out, out)


if __name__ == "__main__":
    main()
