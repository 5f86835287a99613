"""Reactivation accuracy: baseline vs WE vs grafting (2 networks) vs the ensemble of 2 baselines.

Every arm trains with `train_run`, exactly like `prunus train`, on the same fixed training subset
with paired seeds. Arm runs per seed:

- `pop2`: two independent baselines in one run (`--networks 2`, no method). Network 0 keeps
  the run's seed, so it IS the `baseline` arm (bit-identical to a single-network run, which the
  tests check), and the pair's logit ensemble is the `ensemble2` arm (the fair comparison for
  grafting's doubled compute);
- `we`: one network with Weight Evolution (defaults, paper crossover); `we_reset_momentum`: the
  same with the evolved rows' optimizer momentum zeroed (the option this implementation adds);
- `graft2`: two networks with ring grafting (entropy, A=0.4, c=500); reported: network 0's
  accuracy and the mean over both networks.

Figures: mean +- std over seeds, paired differences to the baseline with 95% t intervals, and
invalid filters (L1 < 0.1 and < 0.01) of the baseline and of the grafted networks before/after
the last graft.

The issue's protocol (10 epochs, 3 seeds, ResNet-20 AND MobileNetV2, benchmarks.md quick
subset) does not fit the shared 2-core CPU; the defaults below are a REDUCED version and every
result records its settings.

    .venv/bin/python benchmarks/accuracy_reactivation.py [--model resnet20] [--width-mult 0.5]
        [--subset 2000] [--epochs 3] [--seeds 0,1,2] [--threads 1] [--append]

Writes benchmarks/results/accuracy_reactivation_<model>_reduced.json (runs under /tmp).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from prunus import provenance
from prunus._atomic import write_json
from prunus.formats import load
from prunus.methods._grafting import invalid_filters
from prunus.recipes import train_run
from prunus.recipes.config import RunConfig
from prunus.report.stats import paired_difference, summary

RESULTS = Path(__file__).parent / "results"


def _config(args: argparse.Namespace, seed: int, methods: list[dict[str, Any]], networks: int) -> RunConfig:
    return RunConfig.from_dict(
        {
            "model": {"name": args.model, "width_mult": args.width_mult},
            "data": {"name": args.data, "subset": args.subset, "val_size": 0, "batch_size": 128},
            "train": {"epochs": args.epochs, "lr": 0.1, "seed": seed, "threads": args.threads, "checkpoint": False},
            "methods": methods,
            "networks": networks,
        }
    )


def run_seed(args: argparse.Namespace, seed: int, root: Path) -> dict[str, Any]:
    out: dict[str, Any] = {"seed": seed}
    start = time.perf_counter()
    pop = train_run(_config(args, seed, [], 2), root / f"pop2-{seed}", progress=False)
    nets = [load(root / f"pop2-{seed}" / f"net{k}" / "model") for k in range(2)]
    out["baseline"] = pop.metrics["net0_final_test_acc"]
    out["ensemble2"] = pop.metrics["ensemble_test_acc"]
    out["baseline_invalid"] = {str(k): v for k, v in invalid_filters(nets[0]).items()}
    out["pop2_seconds"] = time.perf_counter() - start
    start = time.perf_counter()
    we = train_run(_config(args, seed, [{"name": "we"}], 1), root / f"we-{seed}", progress=False)
    out["we"] = we.metrics["final_test_acc"]
    out["we_seconds"] = time.perf_counter() - start
    we_reset = train_run(
        _config(args, seed, [{"name": "we", "args": {"reset_momentum": True}}], 1), root / f"wer-{seed}", progress=False
    )
    out["we_reset_momentum"] = we_reset.metrics["final_test_acc"]
    start = time.perf_counter()
    graft = train_run(_config(args, seed, [{"name": "graft"}], 2), root / f"graft2-{seed}", progress=False)
    out["graft2"] = graft.metrics["net0_final_test_acc"]
    out["graft2_mean_of_networks"] = statistics.fmean(
        [graft.metrics["net0_final_test_acc"], graft.metrics["net1_final_test_acc"]]
    )
    out["graft2_ensemble"] = graft.metrics["ensemble_test_acc"]
    last = [line for line in (root / f"graft2-{seed}" / "net0" / "metrics.jsonl").read_text().splitlines() if line]
    rec = json.loads(last[-1])
    out["graft2_invalid_before_last_graft"] = {t: rec[f"graft_invalid_{t}"] for t in ("0.1", "0.01")}
    out["graft2_invalid_after_last_graft"] = {t: rec[f"graft_invalid_{t}_after"] for t in ("0.1", "0.01")}
    out["graft2_alpha_mean_last"] = rec["graft_alpha_mean"]
    out["graft2_seconds"] = time.perf_counter() - start
    return out


def markdown(result: dict[str, Any], args: argparse.Namespace) -> str:
    """The README table (benchmarks/summarize.py copies results/accuracy_*.md verbatim)."""
    runs = result["runs"]
    lines = [
        f"# Reactivation accuracy, REDUCED protocol ({args.model} width {args.width_mult})",
        "",
        f"{result['reduced']}. Test accuracy in %; differences are arm minus baseline for the same seed, "
        "mean [95% t interval]. Reproduce: `benchmarks/accuracy_reactivation.py --append --seeds S` per seed.",
        "",
        "| arm | test acc (mean +- std) | diff vs baseline | n |",
        "|---|---|---|---|",
    ]
    for arm, entry in result["summary"].items():
        s, d = entry["test_acc"], entry.get("diff_to_baseline")
        acc = f"{s['mean'] * 100:.2f} +- {(s['std'] or 0) * 100:.2f}"
        diff = "" if d is None else f"{d['mean'] * 100:+.2f}"
        if d is not None and d["low"] is not None:
            diff += f" [{d['low'] * 100:+.2f}, {d['high'] * 100:+.2f}]"
        lines.append(f"| {arm} | {acc} | {diff} | {s['n']} |")
    inv = [
        (
            r["baseline_invalid"]["0.1"],
            r["graft2_invalid_before_last_graft"]["0.1"],
            r["graft2_invalid_after_last_graft"]["0.1"],
        )
        for r in runs
    ]
    lines += [
        "",
        "Invalid filters (L1 < 0.1) per seed: baseline / grafted network 0 before / after its last graft: "
        + ", ".join(f"{a} / {b} / {c}" for a, b, c in inv)
        + ". `ensemble2` = logit ensemble of two independently trained baselines (same compute as graft2).",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="resnet20")
    ap.add_argument("--width-mult", type=float, default=0.5)
    ap.add_argument("--data", default="fashion-mnist")
    ap.add_argument("--subset", type=int, default=2000)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=None)
    ap.add_argument("--append", action="store_true", help="keep the other seeds' runs already in --out")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]  # "" with --append: re-summarise only
    out = args.out or str(RESULTS / f"accuracy_reactivation_{args.model}_reduced.json")
    records = []
    if args.append and Path(out).exists():  # seeds run as separate commands (each under ~10 minutes)
        records = [r for r in json.loads(Path(out).read_text())["runs"] if r["seed"] not in seeds]
    with tempfile.TemporaryDirectory(prefix="prunus-react-") as tmp:
        for seed in seeds:
            records.append(run_seed(args, seed, Path(tmp)))
            print(records[-1], flush=True)
    records.sort(key=lambda r: r["seed"])
    base = {r["seed"]: r["baseline"] for r in records}
    table: dict[str, Any] = {}
    for arm in ("baseline", "we", "we_reset_momentum", "graft2", "graft2_mean_of_networks", "ensemble2"):
        vals = {r["seed"]: r[arm] for r in records}
        table[arm] = {"test_acc": summary(vals.values())}
        if arm != "baseline":
            table[arm]["diff_to_baseline"] = paired_difference(vals, base)
    result = {
        "figure": "reactivation accuracy (REDUCED protocol)",
        "reduced": (
            f"{args.model} width {args.width_mult}, {args.data} {args.subset}-image training subset, "
            f"{args.epochs} epochs, seeds {sorted(r['seed'] for r in records)}, full test set; "
            "the issue asks 10 epochs x 3 seeds x ResNet-20 and MobileNetV2 on the quick-protocol subset"
        ),
        "summary": table,
        "runs": records,
        "load_average": os.getloadavg(),
        **provenance(config=vars(args)),
    }
    write_json(out, result)
    Path(out).with_suffix(".md").write_text(markdown(result, args))
    for arm, entry in table.items():
        s = entry["test_acc"]
        line = f"{arm:26s} {s['mean'] * 100:.2f} +- {(s['std'] or 0) * 100:.2f}"
        d = entry.get("diff_to_baseline")
        if d and d["low"] is not None:
            line += f"   diff {d['mean'] * 100:+.2f} [{d['low'] * 100:+.2f}, {d['high'] * 100:+.2f}]"
        print(line)


if __name__ == "__main__":
    main()
