"""Latency budget vs MACs budget at the same measured latency: accuracy after the same short fine-tune.

The question of issue 11: if a user wants a model that runs in a fraction b of the dense model's
time, is it better to prune for latency directly (`prunus.prune(keep_latency=b)`, widths chosen
from a latency table measured on the deploy runtime) or to prune for MACs (`keep_macs=m`, the
usual uniform rate) with m chosen so that the result is just as fast, measured?

For each budget b:
- `latency` arm: `prune(baseline, keep_latency=b, runtime=onnxruntime, latency_batch=64)`; its
  latency ratio L is measured side by side with the dense model (onnxruntime, batch 64, 1 thread);
- `macs` arm: `prune(baseline, keep_macs=m)`, m found by bisection so that its measured latency
  ratio matches L (within `--match-tol`, else the closest of the tries is kept and the gap is
  recorded);
- both arms are measured once more side by side, and fine-tuned with the same recipe for each
  seed: `--epochs` epochs SGD nesterov lr `--lr` cosine, wd 5e-4, batch 128, crop + flip, on the
  quick protocol's data (fixed 10k-image training subset, 5k validation images held out, full test
  set reported). Seeds are PAIRED: seed s gives both arms the same data order.

Reported: last-epoch test accuracy per arm, mean +- std, and the paired difference latency - macs
with a 95% t interval. The pruned structures are saved under runs/<name>/<tag>/ (latency
measurements are not repeatable bit for bit, so a resumed run reuses them), and every finished
fine-tune is recorded at once in benchmarks/results/<name>_<model>.json, so a killed run resumes
where it stopped. The Markdown table (<name>_<model>.md, rendered into the README) is written once
every (budget, arm, seed) has run.

    .venv/bin/python benchmarks/accuracy_latency_budget.py --baseline runs/r56-quick-s0 --model resnet56
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path
from typing import Any

import torch
from _common import write_json, write_text
from torch import nn

import prunus
from prunus import provenance
from prunus.data import DataConfig, build_loaders
from prunus.deploy.bench import compare_latency
from prunus.engine import TrainConfig, Trainer
from prunus.errors import ConfigError
from prunus.measure.evaluation import evaluate
from prunus.models.info import get_info
from prunus.report.stats import summarise_records

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"  # --results-dir overrides
ARMS = ("latency", "macs")


def latency_ratio(dense: nn.Module, pruned: nn.Module, shape: tuple[int, ...], repeats: int) -> float:
    """Pruned / dense latency, onnxruntime batch 64, 1 thread, side by side (medians)."""
    cmp = compare_latency(dense, pruned, shape, batch_sizes=(64,), runtimes=("onnxruntime",), repeats=repeats,
                          threads=1)  # fmt: skip
    return 1.0 / cmp.rows[0].speedup


def macs_pruned_like(dense: nn.Module, x: torch.Tensor, target: float, tol: float, repeats: int) -> dict[str, Any]:
    """The `keep_macs` prune whose measured latency ratio is closest to `target` (bisection on m)."""
    shape = tuple(x.shape[1:])
    lo, hi = 0.005, 1.0
    tries: list[dict[str, Any]] = []
    best: tuple[float, nn.Module, dict[str, Any]] | None = None
    for _ in range(8):
        m = (lo + hi) / 2 if tries else min(max(target / 2, lo), hi)  # latency falls slower than MACs: start low
        try:
            pruned, rep = prunus.prune(copy.deepcopy(dense), x, keep_macs=m)
        except ConfigError as exc:  # below the MACs floor (one channel per group): m is too small
            tries.append({"macs_ratio_requested": m, "error": str(exc)})
            lo = m
            continue
        r = latency_ratio(dense, pruned, shape, repeats)
        tries.append({"macs_ratio_requested": m, "macs_ratio": rep.achieved_macs_ratio, "latency_ratio": r})
        gap = abs(r / target - 1)
        if best is None or gap < best[0]:
            best = (gap, pruned, tries[-1])
        if gap <= tol:
            break
        if r > target:
            hi = m
        else:
            lo = m
    assert best is not None
    return {"model": best[1], "chosen": best[2], "tries": tries, "matched": best[0] <= tol}


def structures(args: argparse.Namespace, baseline: nn.Module, x: torch.Tensor, work: Path) -> dict[str, Any]:
    """Per budget, the two pruned models (loaded when a previous run saved them) and their measurements."""
    shape = tuple(x.shape[1:])
    out: dict[str, Any] = {}
    for b in args.budgets:
        d = work / f"budget{b}"
        meta_path = d / "arms.json"
        if meta_path.exists():
            meta = json.loads(meta_path.read_text())
            models = {a: prunus.load(d / a) for a in ARMS}
            # matched again under this run's --match-tol (the saved MACs arm is the closest try either way)
            target = meta["latency_ratio_measured_by_prune"]
            gaps = [abs(t["latency_ratio"] / target - 1) for t in meta["macs_search"] if "latency_ratio" in t]
            meta["matched"] = bool(gaps) and min(gaps) <= args.match_tol
        else:
            lat, rep = prunus.prune(copy.deepcopy(baseline), x, keep_latency=b, runtime="onnxruntime",
                                    latency_batch=64, threads=1)  # fmt: skip
            target = rep.achieved_latency_ratio
            found = macs_pruned_like(baseline, x, target, args.match_tol, args.repeats)
            models = {"latency": lat, "macs": found["model"]}
            meta = {
                "requested_latency_ratio": b,
                "latency_ratio_measured_by_prune": target,
                "macs_search": found["tries"],
                # False: no keep_macs lands within --match-tol of the latency arm (the closest is kept);
                # the arms are then not compared (the table says so)
                "matched": found["matched"],
            }
            for a, m in models.items():  # one more side-by-side measurement of both, the figure reported
                c = prunus.count(m, shape)
                meta[a] = {"latency_ratio": latency_ratio(baseline, m, shape, args.repeats), "macs": c.macs,
                           "params": c.params}  # fmt: skip
                prunus.save(m, d / a, input_shape=shape)
            write_json(meta_path, meta)
        meta["match_tol"] = args.match_tol
        for a in ARMS:
            print(f"budget {b} {a}: latency ratio {meta[a]['latency_ratio']:.3f}, MACs {meta[a]['macs']:,}", flush=True)
        out[str(b)] = {"meta": meta, "models": models}
    return out


def fine_tune(model: nn.Module, args: argparse.Namespace, seed: int) -> dict[str, Any]:
    data = build_loaders(
        DataConfig(name=args.data, subset=args.subset, val_size=args.val_size, batch_size=128), seed=seed
    )
    cfg = TrainConfig(epochs=args.epochs, lr=args.lr, schedule="cosine", seed=seed, checkpoint=False,
                      threads=args.threads)  # fmt: skip
    torch.manual_seed(seed)
    start = time.perf_counter()
    final = Trainer(model, data, cfg, progress=args.progress).fit()
    return {"last_test_acc": float(final["final_test_acc"]), "seconds": time.perf_counter() - start}


def markdown(summary: dict[str, Any], meta: dict[str, Any], settings: dict[str, Any]) -> str:
    lines = [
        f"# Latency budget vs MACs budget at the same measured latency ({settings['model']})",
        "",
        f"{settings['model']} baseline `{settings['baseline']}` ({100 * settings['baseline_test_acc']:.2f}% test); "
        f"pruned to each latency budget on onnxruntime (batch 64, 1 thread), and by MACs to the same measured "
        f"latency (the closest of up to 8 bisection tries, compared when within {100 * settings['match_tol']:.0f}% "
        f"of prune's own measurement; the table's re-measured ratios are side by side); each fine-tuned "
        f"{settings['epochs']} epochs (SGD lr {settings['lr']} cosine) on the quick "
        f"protocol's data, seeds {settings['seeds']} (paired). Test accuracy in %, last epoch; difference = latency "
        "arm - MACs arm, mean [95% t interval].",
        "",
        "| budget | arm | latency ratio (measured) | MACs kept | params kept | test acc | latency - MACs |",
        "|---|---|---|---|---|---|---|",
    ]
    for b, m in meta.items():
        s = summary.get(b) or {}
        for a in ARMS:
            if a not in s:  # not fine-tuned: MACs pruning could not reach the latency arm's latency
                lines.append(
                    f"| {b} | {a} | {m[a]['latency_ratio']:.3f} | {m[a]['macs'] / settings['dense_macs']:.3f} | "
                    f"{m[a]['params'] / settings['dense_params']:.3f} | not compared | MACs pruning cannot reach "
                    "this latency |"
                )
                continue
            acc = s[a]["last_test_acc"]
            std = acc["std"] if acc["std"] is not None else 0.0
            diff = ""
            if a == "latency" and "last_test_acc_diff" in s[a]:
                d = s[a]["last_test_acc_diff"]
                diff = f"{100 * d['mean']:+.2f}" + (
                    f" [{100 * d['low']:+.2f}, {100 * d['high']:+.2f}]" if d["low"] is not None else ""
                )
            lines.append(
                f"| {b} | {a} | {m[a]['latency_ratio']:.3f} | {m[a]['macs'] / settings['dense_macs']:.3f} | "
                f"{m[a]['params'] / settings['dense_params']:.3f} | {100 * acc['mean']:.2f} ± {100 * std:.2f} | "
                f"{diff or '—'} |"
            )
    lines += ["", f"prunus {settings['prunus']} (commit {settings['commit']}), generated {settings['date']}.", ""]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--baseline", required=True, help="trained model directory")
    ap.add_argument("--model", required=True, help="registry name (names the result files)")
    ap.add_argument("--budgets", default="0.5,0.3")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--data", default="fashion-mnist")
    ap.add_argument("--subset", type=int, default=10000)
    ap.add_argument("--val-size", type=int, default=5000)
    ap.add_argument("--match-tol", type=float, default=0.03, help="relative latency gap accepted for the MACs arm")
    ap.add_argument("--repeats", type=int, default=11, help="latency repeats per measurement")
    ap.add_argument("--threads", type=int, default=2, help="fine-tuning threads (latency is measured at 1)")
    ap.add_argument("--name", default="accuracy_latency_budget")
    ap.add_argument("--results-dir", default=str(RESULTS))
    ap.add_argument("--progress", action="store_true")
    args = ap.parse_args()
    args.budgets = [float(b) for b in args.budgets.split(",") if b]
    seeds = [int(s) for s in args.seeds.split(",") if s]
    torch.set_num_threads(args.threads)
    run_provenance = provenance(config={k: v for k, v in vars(args).items()})  # read before the long work
    baseline = prunus.load(args.baseline).eval()
    shape = get_info(baseline).input_shape
    x = torch.zeros(1, *shape)
    tag = f"{args.model}-e{args.epochs}-lr{args.lr}-n{args.subset}-v{args.val_size}"
    work = ROOT / "runs" / args.name / tag
    found = structures(args, baseline, x, work)
    out_path = Path(args.results_dir) / f"{args.name}_{args.model}.json"
    old = json.loads(out_path.read_text()) if out_path.exists() else {}
    records: list[dict[str, Any]] = [r for r in old.get("records", []) if r.get("tag") == tag]
    dense = prunus.count(baseline, shape)
    data = build_loaders(DataConfig(name=args.data, subset=args.subset, val_size=args.val_size, batch_size=128))
    settings = {
        "model": args.model,
        "baseline": args.baseline,
        "baseline_test_acc": evaluate(baseline, data.test)["acc"],
        "dense_macs": dense.macs,
        "dense_params": dense.params,
        "tag": tag,
        "epochs": args.epochs,
        "lr": args.lr,
        "seeds": seeds,
        "match_tol": args.match_tol,
        **run_provenance,
    }

    def save(summary: dict[str, Any] | None = None) -> None:
        write_json(out_path, {"settings": settings, "structures": {b: f["meta"] for b, f in found.items()},
                              "records": records, "summary": summary})  # fmt: skip

    for b, f in found.items():
        if not f["meta"]["matched"]:
            continue  # MACs pruning cannot reach this latency: nothing to compare at equal latency
        for seed in seeds:
            for a in ARMS:
                if any(r["budget"] == b and r["arm"] == a and r["seed"] == seed for r in records):
                    continue
                res = fine_tune(copy.deepcopy(f["models"][a]), args, seed)
                records.append({"tag": tag, "budget": b, "arm": a, "seed": seed, **res})
                print(f"budget {b} seed {seed} {a}: {100 * res['last_test_acc']:.2f}% ({res['seconds']:.0f} s)",
                      flush=True)  # fmt: skip
                save()
    summary = {
        b: summarise_records([r for r in records if r["budget"] == b], ["last_test_acc"], baseline="macs", means=())
        for b in found
        if found[b]["meta"]["matched"]
    }
    save(summary)
    text = markdown(summary, {b: f["meta"] for b, f in found.items()}, settings)
    write_text(Path(args.results_dir) / f"{args.name}_{args.model}.md", text)
    print(text)


if __name__ == "__main__":
    main()
