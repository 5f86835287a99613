"""C-SGD accuracy: narrow a trained ResNet-20 to 5/8 width, merge exactly, compare with controls.

Arms, all evaluated on the full test set, all at the same per-group widths:
  baseline       the trained model as given (--baseline, e.g. a 15-epoch ResNet-20 on Fashion-MNIST)
  csgd-trained   after a short C-SGD phase of E epochs, before merging (the function C-SGD learned)
  csgd-merged    the same, merged (consumer slices summed): should equal csgd-trained
  l1             baseline pruned one-shot by group L1 norm, no fine-tuning
  delete         baseline, same clusters as C-SGD, all but the first member deleted without adding
                 their consumer slices (what merging adds over plain removal), no fine-tuning
  merge-only     baseline, same clusters merged with summing but without C-SGD training (what the
                 centripetal training adds), no fine-tuning
  l1+ft          the fair control for csgd-merged: l1 at the same widths, then fine-tuned with the same
                 E epochs, lr and schedule as the C-SGD phase
  csgd+ft        csgd-merged fine-tuned with plain SGD for another --ft-epochs F (default E), same recipe
  l1+ft-long     the fair control for csgd+ft: l1, fine-tuned E + F epochs (the same total budget)
Targets: max |logit diff| trained vs merged < 1e-3; merged accuracy within 0.5 point of baseline.
One seed (--seed): differences of a few tenths of a point are within seed noise (see the pruning table).

--include-stem also clusters the stem's group (in a ResNet the stem and the first stage's residual
stream share one group), the paper's setting; by default the stem and classifier are left alone.

The C-SGD phase uses the protocol's SGD (momentum 0.9, nesterov, wd 5e-4, batch 128) with lr 0.05
and the library's defaults unless --eps / --bn-eps-factor are given: eps="auto" (from the lr
schedule and step count, predicted residual < 1e-6) and bn_eps_factor 1.0.

    .venv/bin/python benchmarks/accuracy_csgd.py --baseline runs/r20-full/model [--epochs 3] [--threads 2]
    .venv/bin/python benchmarks/accuracy_csgd.py --baseline runs/r20-full/model --include-stem

Writes benchmarks/results/accuracy_csgd.json (accuracy_csgd_stem.json with --include-stem).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import time
from pathlib import Path
from typing import Any

import torch
from _common import print_table, write_json
from torch import nn

import prunus
from prunus import provenance
from prunus.criteria import score
from prunus.data import DataConfig, build_loaders
from prunus.engine import TrainConfig, Trainer
from prunus.measure.evaluation import evaluate as prunus_evaluate
from prunus.methods.csgd import CentripetalSGD
from prunus.models.info import example_input, get_info
from prunus.structure import build_groups, lowest_channels, merge_, remove_

RESULTS = Path(__file__).parent / "results"


def evaluate(model: nn.Module, loader: Any) -> float:
    return float(prunus_evaluate(model, loader)["acc"])


def _groups(model: nn.Module, shape: tuple[int, ...]) -> dict[str, Any]:
    # only the classifier is ignored: the groups C-SGD left alone are skipped by key below, and the
    # stem's group must be prunable when --include-stem clustered it
    return {g.key: g for g in build_groups(model, example_input(shape), (get_info(model).classifier,))}


def l1_pruned(model: nn.Module, clusters: dict[str, list[list[int]]], shape: tuple[int, ...]) -> nn.Module:
    """One-shot group-L1 pruning to the same widths (the lowest-norm channels go)."""
    for key, g in _groups(model, shape).items():
        if key in clusters:
            drop = g.num_channels - len(clusters[key])
            remove_(model, g, lowest_channels(g, score(model, g, "l1"), drop))
    return model


def deleted(model: nn.Module, clusters: dict[str, list[list[int]]], shape: tuple[int, ...]) -> nn.Module:
    """Keep the first member of every cluster, remove the others without summing their consumer slices."""
    for key, g in _groups(model, shape).items():
        if key in clusters:
            remove_(model, g, [i for c in clusters[key] for i in c[1:]])
    return model


def merged_untrained(model: nn.Module, clusters: dict[str, list[list[int]]], shape: tuple[int, ...]) -> nn.Module:
    for key, g in _groups(model, shape).items():
        if key in clusters:
            merge_(model, g, clusters[key])
    return model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--baseline", required=True, help="trained model directory (model.json + model.safetensors)")
    ap.add_argument("--data", default="fashion-mnist")
    ap.add_argument("--data-dir")
    ap.add_argument("--subset", type=int, help="C-SGD on a fixed training subset (default: all 55k)")
    ap.add_argument("--epochs", type=int, default=3, help="C-SGD phase (E), also l1+ft's fine-tuning")
    ap.add_argument("--ft-epochs", type=int, help="csgd+ft's extra fine-tuning F (default E); 0 skips csgd+ft")
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--schedule", choices=("cosine", "constant"), default="cosine")
    ap.add_argument("--eps", type=float, help="default: the library's eps='auto'")
    ap.add_argument("--bn-eps-factor", type=float, help="default: the library's 1.0")
    ap.add_argument("--width", type=float, default=0.625)
    ap.add_argument("--cluster", choices=("kmeans", "even"), default="kmeans")
    ap.add_argument("--include-stem", action="store_true", help="cluster the stem's group too (the paper's setting)")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--progress", action="store_true")
    ap.add_argument("--out", help="default benchmarks/results/accuracy_csgd[_stem].json")
    args = ap.parse_args()
    ft_epochs = args.epochs if args.ft_epochs is None else args.ft_epochs
    if args.epochs < 1 or ft_epochs < 0:
        ap.error("--epochs must be >= 1 and --ft-epochs >= 0")
    out = args.out or str(RESULTS / ("accuracy_csgd_stem.json" if args.include_stem else "accuracy_csgd.json"))
    torch.set_num_threads(args.threads)
    start = time.perf_counter()

    baseline = prunus.load(args.baseline)
    info = get_info(baseline)
    data = build_loaders(
        DataConfig(name=args.data, root=args.data_dir, subset=args.subset, batch_size=args.batch_size), seed=args.seed
    )
    shape = info.input_shape or data.input_shape  # a model saved before training has no recorded shape
    cfg = TrainConfig(
        epochs=args.epochs, lr=args.lr, schedule=args.schedule, seed=args.seed, checkpoint=False, threads=args.threads
    )
    # read before the long training: a commit made while this runs must not be credited with its results
    run_provenance = provenance(config={**vars(args), "train": cfg.to_dict()})
    overrides: dict[str, Any] = {
        k: v for k, v in (("eps", args.eps), ("bn_eps_factor", args.bn_eps_factor)) if v is not None
    }
    if args.include_stem:  # only the classifier is kept (its outputs are the classes)
        overrides["ignored_layers"] = (info.classifier,)
    method = CentripetalSGD(width=args.width, cluster=args.cluster, **overrides)
    torch.manual_seed(args.seed)
    trainer = Trainer(copy.deepcopy(baseline), data, cfg, [method], progress=args.progress)
    clusters = copy.deepcopy(method.clusters)  # planned on the baseline weights in setup
    final = trainer.fit()
    rep = method.merge_report
    csgd_seconds = time.perf_counter() - start

    arms: dict[str, dict[str, Any]] = {}

    def record(name: str, model: nn.Module, acc: float | None = None, epochs: int = 0) -> None:
        c = prunus.count(model, shape)
        acc = evaluate(model, data.test) if acc is None else acc
        arms[name] = {"test_acc": acc, "macs": c.macs, "params": c.params, "epochs_after_baseline": epochs}

    def fine_tuned(model: nn.Module, epochs: int) -> float:
        """Plain SGD with the C-SGD phase's recipe for `epochs` (the schedule restarts), last-epoch test acc."""
        torch.manual_seed(args.seed)
        ft_cfg = dataclasses.replace(cfg, epochs=epochs)
        return float(Trainer(model, data, ft_cfg, progress=args.progress).fit()["final_test_acc"])

    record("baseline", baseline)
    arms["csgd-trained"] = {
        "test_acc": final["csgd_trained_acc"],  # measured by the Trainer around the merge
        "macs": rep["csgd_macs_before"],
        "params": rep["csgd_params_before"],
        "epochs_after_baseline": args.epochs,
    }
    record("csgd-merged", trainer.model, final["csgd_merged_acc"], args.epochs)
    record("l1", l1_pruned(copy.deepcopy(baseline), clusters, shape))
    record("delete", deleted(copy.deepcopy(baseline), clusters, shape))
    record("merge-only", merged_untrained(copy.deepcopy(baseline), clusters, shape))
    l1ft = l1_pruned(copy.deepcopy(baseline), clusters, shape)
    record("l1+ft", l1ft, fine_tuned(l1ft, args.epochs), args.epochs)
    if ft_epochs:
        merged_ft = copy.deepcopy(trainer.model)
        record("csgd+ft", merged_ft, fine_tuned(merged_ft, ft_epochs), args.epochs + ft_epochs)
        l1_long = l1_pruned(copy.deepcopy(baseline), clusters, shape)
        total = args.epochs + ft_epochs
        record("l1+ft-long", l1_long, fine_tuned(l1_long, total), total)
    base = arms["baseline"]
    for a in arms.values():
        a["delta_vs_baseline_pt"] = 100 * (a["test_acc"] - base["test_acc"])
        a["macs_reduction"] = 1 - a["macs"] / base["macs"]
        a["params_reduction"] = 1 - a["params"] / base["params"]
    keys = ("epoch", "csgd_chi", "csgd_max_dev", "csgd_bn_max_dev")
    chi = [{k: r[k] for k in keys if k in r} for r in trainer.history]
    result = {
        "name": "accuracy_csgd",
        "definition": (
            f"C-SGD of {args.baseline} to width {args.width} per group: {args.epochs} epochs, lr {args.lr} "
            f"{args.schedule}, eps {args.eps or 'auto'} (= {method._auto_eps or args.eps:.4g}), bn_eps_factor "
            f"{method.bn_eps_factor}, {args.cluster}, "
            + ("stem clustered too (only the classifier kept)" if args.include_stem else "stem and classifier kept")
            + f"; fine-tuning arms: the same recipe, csgd+ft {ft_epochs} extra epochs; seed {args.seed}; "
            "accuracies on the full test set (last epoch), logit diff on the first 256 training images"
        ),
        "arms": arms,
        "max_logit_diff": rep["csgd_max_logit_diff"],
        "targets": {"max_logit_diff": "< 1e-3", "merged_vs_baseline_pt": ">= -0.5"},
        "met": {
            "max_logit_diff": rep["csgd_max_logit_diff"] < 1e-3,
            "merged_vs_baseline": arms["csgd-merged"]["delta_vs_baseline_pt"] >= -0.5,
        },
        "chi_per_epoch": chi,
        "final": final,
        "groups": len(clusters),
        "clustered_groups": sorted(clusters),
        "include_stem": args.include_stem,
        "csgd_seconds": csgd_seconds,
        "command": "benchmarks/accuracy_csgd.py " + " ".join(f"{k}={v}" for k, v in vars(args).items()),
        **run_provenance,
    }
    write_json(out, result)
    rows = [
        (
            name,
            f"{100 * a['test_acc']:.2f}%",
            f"{a['delta_vs_baseline_pt']:+.2f}",
            f"{a['macs']:,}",
            f"{a['params']:,}",
            f"{100 * a['macs_reduction']:.1f}%",
        )
        for name, a in arms.items()
    ]
    print_table(result["definition"], ("arm", "test acc", "vs baseline (pt)", "MACs", "params", "MACs cut"), rows)
    print(f"max |logit diff| trained vs merged: {rep['csgd_max_logit_diff']:.3g} (target < 1e-3)")
    print("chi / max kernel dev / max BN dev per epoch:")
    for r in chi:
        print(f"  epoch {r['epoch']}: {r['csgd_chi']:.3g} / {r['csgd_max_dev']:.3g} / {r['csgd_bn_max_dev']:.3g}")


if __name__ == "__main__":
    main()
