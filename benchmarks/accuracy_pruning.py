"""Accuracy of the pruning methods under the quick protocol of docs/benchmarks.md, with paired seeds.

Protocol (every arm identical except the method): CIFAR-style ResNet-20 (16/32/64, 1 input
channel) on Fashion-MNIST, a fixed 10k-image training subset, 5k validation images held out of
the training split (fixed split seed), the full 10k test set for reporting only; 10 epochs of SGD
(momentum 0.9, nesterov), lr 0.1 with cosine decay, weight decay 5e-4, batch 128, random crop
(pad 2) + horizontal flip. Seed s gives every arm the same initialisation and data order.

Arms:
- `baseline`: no pruning.
- `sfp-l2`, `fpgm`, `mfp` (and `sfp-l1`, not run by default): the Trainer plug-ins at rate 0.4
  (masks every epoch, removal after the last), soft (masked channels keep learning and may come
  back); MFP with its defaults (four candidates, switch every 2 epochs, `loss` on 1024 held-out
  validation images).
- `sfp-l2-hard`: SFP-l2 with `hard=True` (masked weights, gradients and momentum held at zero).
- `tp-magnitude`: Torch-Pruning's magnitude pruner (`tp.pruner.BasePruner` with
  `GroupMagnitudeImportance(p=1)`, stem and classifier ignored) under the SAME epoch budget as
  every other arm: train `--epochs` minus `--finetune-epochs` epochs (lr 0.1 cosine, its own
  run), prune once at the MACs ratio the SFP arms achieve (the smallest uniform pruning_ratio
  whose MACs do not exceed it, found by bisection), fine-tune `--finetune-epochs` epochs
  (default half the budget) at lr 0.01, cosine.

Reported: last-epoch test accuracy and test accuracy at the best-validation epoch (never the
best-of-epochs test accuracy), mean +- std over seeds, the paired difference to the baseline
with a 95% t interval, MACs and params. Each finished run is appended (atomically) to
benchmarks/results/<name>_runs.json; a rerun skips finished (arm, seed) pairs of the same
settings and resumes unfinished ones from their checkpoints in runs/<name>/.

Several processes may work on one table at once: each claims the next unfinished (arm, seed)
pair (longest arms first) with an exclusive claim file holding its PID, so two single-thread
workers on a 2-core machine finish the quick protocol in about half the time. A claim whose
process is gone is taken over; the last worker to finish writes the complete table.

    .venv/bin/python benchmarks/accuracy_pruning.py --seeds 0,1,2 --threads 2
    for w in 1 2; do .venv/bin/python benchmarks/accuracy_pruning.py --threads 1 & done; wait   # 2 workers
    .venv/bin/python benchmarks/accuracy_pruning.py --epochs 2 --subset 512 --val-size 500 --test-size 1000 \
        --width-mult 0.25 --seeds 0 --name smoke --results-dir /tmp/prunus-smoke      # smoke test, about a minute

Writes benchmarks/results/<name>.json and benchmarks/results/<name>.md.
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
import torch_pruning as tp
from _common import write_json, write_text

import prunus
from prunus import provenance
from prunus.data import DataConfig, TensorLoader, build_loaders
from prunus.engine import TrainConfig, Trainer
from prunus.formats.run_dir import RunDir
from prunus.methods import create_method
from prunus.models import create_model
from prunus.models.info import example_input
from prunus.pruning import prune
from prunus.report.stats import paired_difference, summarise_records

sys.path.insert(0, str(Path(__file__).resolve().parent))  # run as a script: its sibling helper
from _workers import load_records, locked, run_jobs  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
ARMS: dict[str, tuple[str, dict[str, Any]] | None] = {
    "baseline": None,
    "sfp-l1": ("sfp", {"criterion": "l1"}),
    "sfp-l2": ("sfp", {"criterion": "l2"}),
    "sfp-l2-hard": ("sfp", {"criterion": "l2", "hard": True}),
    "fpgm": ("fpgm", {}),
    "mfp": ("mfp", {}),
    "tp-magnitude": None,
}
DEFAULT_ARMS = ("baseline", "sfp-l2", "sfp-l2-hard", "fpgm", "mfp", "tp-magnitude")  # issue 13's table
# rough relative cost per arm: workers claim the longest first so they finish together
COST = {"mfp": 6, "fpgm": 5, "sfp-l2": 4, "sfp-l2-hard": 4, "sfp-l1": 4, "baseline": 3, "tp-magnitude": 2}
FINETUNE_LR = 0.01
QUICK_TAG = "e10-n10000-v5000-r0.4-ft5-fashion-mnist"  # the settings of the benchmarks.md quick protocol


def _configs(args: argparse.Namespace, seed: int, epochs: int, lr: float) -> tuple[DataConfig, TrainConfig]:
    data = DataConfig(name=args.data, subset=args.subset, val_size=args.val_size, batch_size=128)
    train = TrainConfig(epochs=epochs, lr=lr, weight_decay=5e-4, schedule="cosine", seed=seed, threads=args.threads)
    return data, train


def _loaders(args: argparse.Namespace, dcfg: DataConfig, seed: int) -> Any:
    data = build_loaders(dcfg, seed=seed)
    if args.test_size:  # smoke runs only: the protocol reports on the full test set
        test = data.test.data.subset(torch.arange(min(args.test_size, len(data.test.data))))
        data = replace(data, test=TensorLoader(test, data.test.batch_size))
    return data


def _train(args, seed, run_dir: Path, methods=(), model=None, epochs=None, lr=0.1) -> tuple[Trainer, dict, float]:
    """One training run (resumed from run_dir's checkpoint if there is one), like `prunus train`."""
    dcfg, tcfg = _configs(args, seed, epochs or args.epochs, lr)
    torch.manual_seed(seed)  # same seed -> same initialisation in every arm
    data = _loaders(args, dcfg, seed)
    if model is None:
        model = create_model(
            "resnet20", num_classes=data.num_classes, in_channels=data.in_channels, width_mult=args.width_mult
        )
    start = time.perf_counter()
    trainer = Trainer(model, data, tcfg, list(methods), run_dir, resume=True, progress=args.progress)
    final = trainer.fit()
    return trainer, final, time.perf_counter() - start


def _tp_prune(model: torch.nn.Module, target: float, shape: tuple[int, ...]) -> tuple[torch.nn.Module, float]:
    """Torch-Pruning group-L1 at the smallest uniform ratio keeping <= `target` of the MACs."""
    x = example_input(shape)
    dense = prunus.count(model, shape).macs

    def pruned_at(ratio: float) -> torch.nn.Module:
        m = copy.deepcopy(model)
        ignored = [m.get_submodule(n) for n in ("conv1", "fc")]
        imp = tp.importance.GroupMagnitudeImportance(p=1)
        tp.pruner.BasePruner(m, x, importance=imp, pruning_ratio=ratio, ignored_layers=ignored).step()
        return m

    lo, hi = 0.0, 0.95
    for _ in range(20):  # MACs fall monotonically with the ratio
        mid = (lo + hi) / 2
        if prunus.count(pruned_at(mid), shape).macs <= target * dense:
            hi = mid
        else:
            lo = mid
    return pruned_at(hi), hi


CODE: dict[str, Any] = {}  # set once per worker, at start (main)


def _code() -> dict[str, Any]:
    return {k: v for k, v in provenance().items() if k in ("prunus", "commit", "dirty")}


def _record(arm, seed, tag, trainer, final, seconds, shape, extra=None) -> dict[str, Any]:
    history = trainer.history
    best = max(range(len(history)), key=lambda i: (history[i].get("val_acc", 0.0), -i))
    counts = prunus.count(trainer.model, shape)
    rec = {
        "tag": tag,
        "arm": arm,
        "seed": seed,
        "last_test_acc": final["final_test_acc"],
        "best_val_epoch": history[best]["epoch"],
        "best_val_acc": history[best].get("val_acc"),
        "best_val_test_acc": history[best]["test_acc"],
        "macs": counts.macs,
        "params": counts.params,
        "seconds": seconds,
        "epochs": len(history),
        # what the methods logged after the last epoch (removal counts, achieved MACs)
        "method_metrics": {k: v for k, v in final.items() if not k.startswith("final_") and k != "epochs"},
        **(CODE or _code()),  # the code this worker loaded, not the checkout's state when the record is written
    }
    rec.update(_trace(history))
    rec.update(extra or {})
    return rec


def _run(arm: str, seed: int, args: argparse.Namespace, tag: str, sfp_macs_ratio: float) -> dict[str, Any]:
    runs = ROOT / "runs" / args.name / tag
    shape = (1, 28, 28)
    if arm == "tp-magnitude":
        # equal budget: pretrain (epochs - finetune) epochs with the training recipe, then prune + fine-tune
        pretrain_epochs = args.epochs - args.finetune_epochs
        pre, _, pre_seconds = _train(args, seed, runs / f"tp-pretrain-s{seed}", epochs=pretrain_epochs)
        pruned, ratio = _tp_prune(pre.model.cpu(), sfp_macs_ratio, shape)
        run_dir = runs / f"{arm}-s{seed}"
        before = None
        if not RunDir(run_dir).checkpoint.exists():
            data = _loaders(args, _configs(args, seed, 1, FINETUNE_LR)[0], seed)
            before = Trainer(pruned, data, _configs(args, seed, 1, FINETUNE_LR)[1], progress=False).evaluate(data.test)
        trainer, final, seconds = _train(args, seed, run_dir, model=pruned, epochs=args.finetune_epochs, lr=FINETUNE_LR)
        seconds += pre_seconds
        extra = {"tp_pruning_ratio": ratio, "pretrain_epochs": pretrain_epochs}
        extra.update(finetune_epochs=args.finetune_epochs, finetune_lr=FINETUNE_LR)
        extra["test_acc_before_finetune"] = None if before is None else before["acc"]
        return _record(arm, seed, tag, trainer, final, seconds, shape, extra)
    spec = ARMS[arm]
    methods = [] if spec is None else [create_method(spec[0], rate=args.rate, **spec[1])]
    trainer, final, seconds = _train(args, seed, runs / f"{arm}-s{seed}", methods)
    if arm == "baseline":
        prunus.save(trainer.model.cpu(), RunDir(runs / f"baseline-s{seed}").model, input_shape=shape)
    return _record(arm, seed, tag, trainer, final, seconds, shape)


TRACE_KEYS = ("turnover", "regrown", "masked_norm", "channels_masked")  # per epoch, soft-pruning arms
SWITCH_KEYS = ("choice", "kept", "tie", "scores", "mask_diff")  # per MFP switch


def _trace(history: list[dict[str, Any]]) -> dict[str, Any]:
    """Per-epoch regrowth figures of a soft-pruning arm and MFP's per-switch log, from the epoch records."""
    out: dict[str, Any] = {}
    for prefix in ("sfp", "fpgm", "mfp"):
        rows = [r for r in history if f"{prefix}_turnover" in r]
        if rows:
            out["trace"] = {k: [r.get(f"{prefix}_{k}") for r in rows] for k in TRACE_KEYS}
    switches = [r for r in history if "mfp_choice" in r]
    if switches:  # which criterion MFP picked at each switch, and how different the candidates were
        out["mfp_choices"] = [r["mfp_choice"] for r in switches]
        out["mfp_switches"] = [{"epoch": r["epoch"], **{k: r.get(f"mfp_{k}") for k in SWITCH_KEYS}} for r in switches]
    return out


def _add_traces(records: list[dict[str, Any]], name: str) -> None:
    """Traces for records written before `_record` kept them, read back from each run's metrics.jsonl."""
    for rec in records:
        run = RunDir(ROOT / "runs" / name / rec["tag"] / f"{rec['arm']}-s{rec['seed']}")
        if "trace" not in rec and "mfp_switches" not in rec and run.metrics.is_file():
            rec.update(_trace(run.read_metrics()))


def summarise(records: list[dict[str, Any]], arms: list[str]) -> dict[str, Any]:
    """Per-arm mean +- std and paired differences to the baseline (prunus.report.stats), in `arms` order."""
    stats = summarise_records(
        [r for r in records if r["arm"] in arms], ["last_test_acc", "best_val_test_acc"],
        baseline="baseline", means=("macs", "params", "seconds"),
    )  # fmt: skip
    return {arm: stats[arm] for arm in arms if arm in stats}


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.2f}"


SINGLE_CRITERION_ARMS = ("sfp-l1", "sfp-l2", "sfp-l2-hard", "fpgm")


def mfp_vs_best_lines(summary: dict[str, Any], records: list[dict[str, Any]]) -> list[str]:
    """MFP minus the best single-criterion arm (by mean last-epoch accuracy), paired by seed."""
    singles = [a for a in SINGLE_CRITERION_ARMS if a in summary]
    if "mfp" not in summary or not singles:
        return []
    by = {a: {r["seed"]: r["last_test_acc"] for r in records if r["arm"] == a} for a in ("mfp", *singles)}
    best = max(singles, key=lambda a: summary[a]["last_test_acc"]["mean"])
    soft = [a for a in singles if a != "sfp-l2-hard"]
    out = ["", "MFP against the single criteria, paired by seed (last-epoch test acc, mean [95% t interval]):", ""]
    for arm in dict.fromkeys([best, *(soft and [max(soft, key=lambda a: summary[a]["last_test_acc"]["mean"])])]):
        d = paired_difference(by["mfp"], by[arm])
        label = "the best single criterion" if arm == best else "the best soft single criterion"
        out.append(f"- mfp - {arm} ({label}): {_pct(d['mean'])} [{_pct(d['low'])}, {_pct(d['high'])}]")
    return out


def trace_lines(records: list[dict[str, Any]]) -> list[str]:
    """Regrowth per epoch (soft-pruning arms) and MFP's switches, one line per run."""
    lines = []
    traced = sorted((r for r in records if "trace" in r), key=lambda r: (r["arm"], r["seed"]))
    if traced:
        lines += [
            "",
            "Soft pruning per epoch: `turnover` = channels masked at the previous re-selection that left the mask "
            "(came back); `regrown` = channels masked at the previous re-selection whose filter norm is now >= 0.1 "
            "of their group's median (alive, not decayed; 0 in hard mode); `masked norm` = masked filters' median "
            "norm over their group's median (the last epoch's is 0: the final mask zeroes them):",
            "",
        ]
        for r in traced:
            t = r["trace"]
            norms = ", ".join("n/a" if v is None else f"{v:.2f}" for v in t["masked_norm"])
            head = f"- {r['arm']} seed {r['seed']}: turnover {t['turnover']}, regrown {t['regrown']}"
            lines.append(f"{head}, masked norm [{norms}]")
    switched = sorted((r for r in records if "mfp_switches" in r), key=lambda r: r["seed"])
    if switched:
        lines += ["", "MFP switches (epoch: choice; fewest channels any two candidates' masks differ by):", ""]
        for r in switched:
            cells = []
            for sw in r["mfp_switches"]:
                diff = min((sw.get("mask_diff") or {}).values(), default=None)
                how = " kept" if sw.get("kept") else ""
                cells.append(f"{sw['epoch']}: {sw['choice']}{how} (min diff {diff})")
            lines.append(f"- seed {r['seed']}: " + "; ".join(cells))
    return lines


def markdown(summary: dict[str, Any], settings: dict[str, Any], records: list[dict[str, Any]] = ()) -> str:
    """The results table with the protocol stated above it."""
    base_macs = summary.get("baseline", {}).get("macs")
    lines = [
        f"# Pruning accuracy, {settings['protocol']}",
        "",
        f"ResNet-20 on {settings['data']}, {settings['subset']}-image training subset, {settings['val_size']} val, "
        f"{settings['test_set']}; {settings['epochs']} epochs SGD nesterov lr 0.1 cosine, wd 5e-4, batch 128, "
        f"crop pad 2 + flip; width {settings['width_mult']}; rate {settings['rate']}; seeds {settings['seeds']} "
        "(paired); every arm gets the same epoch budget. tp-magnitude: "
        f"{settings['epochs'] - settings['finetune_epochs']} epochs of the same training, Torch-Pruning group-L1 "
        f"at the SFP arms' MACs ratio ({settings['sfp_macs_ratio']:.3f}), then "
        f"{settings['finetune_epochs']} epochs fine-tuning at lr {FINETUNE_LR}. Accuracies in %; differences are "
        "arm minus baseline for the same seed, mean [95% t interval].",
        "",
        "| arm | MACs | params | last-epoch test acc | diff vs baseline | test acc @ best val | diff vs baseline | n |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for arm, e in summary.items():
        cells = [arm, f"{e['macs'] / 1e6:.2f}M" + (f" ({e['macs'] / base_macs:.3f})" if base_macs else "")]
        cells.append(f"{e['params'] / 1e3:.1f}K")
        for metric in ("last_test_acc", "best_val_test_acc"):
            s = e[metric]
            cells.append(f"{_pct(s['mean'])} ± {_pct(s['std'])}")
            d = e.get(f"{metric}_diff")
            cells.append("—" if d is None else f"{_pct(d['mean'])} [{_pct(d['low'])}, {_pct(d['high'])}]")
        cells.append(str(e["last_test_acc"]["n"]))
        lines.append("| " + " | ".join(cells) + " |")
    lines += mfp_vs_best_lines(summary, list(records))
    lines += trace_lines(list(records))
    lines += ["", f"prunus {settings['prunus']} (commit {settings['commit']}), generated {settings['date']}.", ""]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--subset", type=int, default=10000)
    ap.add_argument("--val-size", type=int, default=5000)
    ap.add_argument("--width-mult", type=float, default=1.0, help="ResNet-20 width (protocol: 1.0; smoke runs: less)")
    ap.add_argument("--test-size", type=int, help="evaluate on the first N test images only (smoke runs)")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--arms", default=",".join(DEFAULT_ARMS), help=f"comma-separated subset of {','.join(ARMS)}")
    ap.add_argument("--rate", type=float, default=0.4)
    ap.add_argument("--finetune-epochs", type=int, help="tp-magnitude fine-tuning epochs (default: half of --epochs)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--data", default="fashion-mnist")
    ap.add_argument("--name", default="accuracy_pruning", help="result file stem (and runs/ subdirectory)")
    ap.add_argument("--results-dir", default=str(RESULTS), help="where <name>.json/.md and <name>_runs.json go")
    ap.add_argument("--progress", action="store_true", help="show the Trainer's progress")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    CODE.update(_code())  # before the first record: the checkout may move on while jobs run
    args.finetune_epochs = args.finetune_epochs or max(1, args.epochs // 2)
    if not 1 <= args.finetune_epochs < args.epochs:
        raise SystemExit(f"--finetune-epochs must be in [1, --epochs - 1] (equal budget), got {args.finetune_epochs}")
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    arms = [a.strip() for a in args.arms.split(",") if a.strip()]
    unknown = [a for a in arms if a not in ARMS]
    if unknown:
        raise SystemExit(f"unknown arm(s) {unknown}; choose from {', '.join(ARMS)}")
    tag = f"e{args.epochs}-n{args.subset}-v{args.val_size}-r{args.rate}-ft{args.finetune_epochs}-{args.data}"
    if args.test_size:
        tag += f"-t{args.test_size}"
    if args.width_mult != 1.0:
        tag += f"-w{args.width_mult}"
    results = Path(args.results_dir)
    # the SFP arms cut floor(N * rate) channels of every prunable group: their MACs ratio is fixed
    dense = create_model("resnet20", in_channels=1, width_mult=args.width_mult)
    _, report = prune(dense, torch.randn(1, 1, 28, 28), remove_channels=args.rate)
    runs_file = results / f"{args.name}_runs.json"
    work_dir = ROOT / "runs" / args.name
    jobs = sorted(((arm, seed) for seed in seeds for arm in arms), key=lambda j: (-COST.get(j[0], 1), j[1]))

    def run(arm: str, seed: int) -> dict[str, Any]:
        return _run(arm, seed, args, tag, report.achieved_macs_ratio)

    if run_jobs(jobs, tag=tag, runs_file=runs_file, work_dir=work_dir, run=run):
        return  # the last worker to finish writes the table
    with locked(work_dir / f"{tag}.lock"):
        records = load_records(runs_file)
    current = [r for r in records if r["tag"] == tag and r["seed"] in seeds]
    _add_traces(current, args.name)
    settings = {
        "protocol": "quick" if tag == QUICK_TAG else f"custom ({tag})",
        "tag": tag,
        "data": args.data,
        "subset": args.subset,
        "val_size": args.val_size,
        "epochs": args.epochs,
        "test_set": f"first {args.test_size} test images" if args.test_size else "full test set",
        "rate": args.rate,
        "width_mult": args.width_mult,
        "seeds": seeds,
        "finetune_epochs": args.finetune_epochs,
        "sfp_macs_ratio": report.achieved_macs_ratio,
        **provenance(config=vars(args)),
    }
    summary = summarise(current, [a for a in ARMS if a in arms])
    write_json(results / f"{args.name}.json", {"settings": settings, "summary": summary, "records": current})
    text = markdown(summary, settings, current)
    write_text(results / f"{args.name}.md", text)
    print(text)


if __name__ == "__main__":
    main()
