"""Record a finished training run (RUN_DIR/summary.json) as a committed benchmark result.

    .venv/bin/python benchmarks/record_run.py runs/r20-full train_resnet20_fmnist \
        --command "prunus train --model resnet20 --data fashion-mnist --epochs 15 --threads 2 --out runs/r20-full"

Writes benchmarks/results/NAME.json with the final metrics, per-epoch test/val accuracy, the
resolved config, the command, wall time and the machine.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from _common import write_json

from prunus import provenance
from prunus.formats.run_dir import RunDir

RESULTS = Path(__file__).parent / "results"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("name")
    ap.add_argument("--command", required=True, help="the command that produced the run")
    ap.add_argument("--note", default="", help="anything a reader must know (e.g. resumed, machine load)")
    args = ap.parse_args()
    run = RunDir(args.run_dir)
    summary = run.read_summary()
    epochs = run.read_metrics()
    best = max(epochs, key=lambda r: r.get("val_acc", -1.0))
    record = {
        "name": args.name,
        "command": args.command,
        "metrics": summary["metrics"],
        # summary.json times only the last invocation; a resumed run's wall time is the sum of its epochs
        "train_seconds": sum(r.get("seconds", 0.0) for r in epochs),
        "note": args.note,
        "last_epoch_test_acc": epochs[-1]["test_acc"],
        "test_acc_at_best_val_epoch": best["test_acc"],
        "best_val_epoch": best["epoch"] + 1,
        "per_epoch": [
            {k: r[k] for k in ("epoch", "train_loss", "val_acc", "test_acc", "seconds") if k in r} for r in epochs
        ],
        **provenance(config=summary["config"]),
    }
    write_json(RESULTS / f"{args.name}.json", record)
    print(json.dumps({k: record[k] for k in ("name", "last_epoch_test_acc", "test_acc_at_best_val_epoch")}, indent=2))


if __name__ == "__main__":
    main()
