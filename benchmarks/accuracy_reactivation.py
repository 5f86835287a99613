"""Reactivation accuracy: baseline vs WE (paper / reference rules) vs grafting (2 networks, same or the
repository's per-network learning rates) vs the ensemble of 2 baselines.

Protocol (defaults = the quick protocol of docs/benchmarks.md): ResNet-20 (or `--model
mobilenetv2`) on Fashion-MNIST, a fixed 10k-image training subset, 5k validation images held out
of the training split, the full 10k test set for reporting only; 10 epochs SGD nesterov lr 0.1
cosine, wd 5e-4, batch 128, crop + flip; seeds 0,1,2, PAIRED (seed s gives every arm the same
initialisation and data order). Every job trains with `train_run`, exactly like `prunus train`,
in its own run directory under runs/<name>/<tag>/ (checkpointed: a killed job resumes).

Evaluation point (since issue 26), as the reference repositories: WE and grafting change the
networks after an epoch has been scored (at the start of the next one), never after the last
epoch, so every accuracy below is of a network as trained, before its evolution or graft.

Jobs per seed and the arms they give:
- `pop2`: two independent baselines in one run (`--networks 2`, no method). Network 0 keeps the
  run's seed, so it IS the `baseline` arm (bit-identical to a single-network run, which the
  tests check); the pair's logit ensemble is the `ensemble2` arm, the fair comparison for
  grafting's doubled compute;
- `we-paper`: one network with Weight Evolution (defaults: paper crossover): arm `we`;
- `we-code`: the same with `mode=code`, the repository's rules (crossover, kernel-height
  whole-filter rule, selection): arm `we-reference-rules`;
- `graft2-same-lr`: two networks with ring grafting (entropy, A=0.4, c=500), both at the run's lr
  (the paper's headline setting): arms `graft2` (network 0, same seed as the baseline),
  `graft2-mean` (mean of both networks' accuracies), `graft2-ensemble` (their logit ensemble);
- `graft2-diff-lr`: the same with `per_network_lr=True`, the repository's (its flag cannot be
  turned off): network 0 at x0.5 the lr, network 1 at x1.0: arms `graft2-difflr`,
  `graft2-difflr-mean`, `graft2-difflr-ensemble`.

Jobs recorded under the names used before issue 26 (`graft2`, `we`, `we-reset-momentum`) scored the
networks after their last graft / evolution and are not read; `pop2` (no method: unchanged) is.

Reported: last-epoch test accuracy and test accuracy at the best-validation epoch (ensembles:
last epoch only), mean +- std, paired difference to the baseline with a 95% t interval; invalid
filters (L1 < 0.1 and < 0.01, `prunus.methods._grafting.invalid_filters`) of every arm's final
network and of grafted network 0 just before its last graft (at the start of the last epoch).
Several workers may share the jobs (benchmarks/_workers.py); the last to finish writes the table.
The table holds every job recorded for the tag, whichever worker ran it; jobs still missing are
listed above it, so a protocol run piecewise over several sessions shows where it stands
(`--table-only` writes it without running):

    for w in 1 2; do .venv/bin/python benchmarks/accuracy_reactivation.py --threads 1 & done; wait
    .venv/bin/python benchmarks/accuracy_reactivation.py --model mobilenetv2 --threads 2
    .venv/bin/python benchmarks/accuracy_reactivation.py --model mobilenetv2 --table-only
    .venv/bin/python benchmarks/accuracy_reactivation.py --epochs 2 --subset 256 --val-size 256 \\
        --width-mult 0.25 --seeds 0 --name smoke --results-dir /tmp/prunus-smoke     # smoke run

Writes benchmarks/results/<name>_<model>.json and .md, and every finished job to <name>_runs.json.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import torch
from _common import write_json, write_text

from prunus import provenance
from prunus.formats import load
from prunus.formats.run_dir import RunDir
from prunus.methods.graft import invalid_filters
from prunus.report.stats import summarise_records
from prunus.training import train_run
from prunus.training.config import RunConfig

sys.path.insert(0, str(Path(__file__).resolve().parent))  # run as a script: its sibling helper
from _workers import load_records, locked, run_jobs  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
#: job -> (methods, networks); longest first, so parallel workers finish together
JOBS: dict[str, tuple[list[dict[str, Any]], int]] = {
    "graft2-same-lr": ([{"name": "graft"}], 2),
    "graft2-diff-lr": ([{"name": "graft", "args": {"per_network_lr": True}}], 2),
    "pop2": ([], 2),
    "we-paper": ([{"name": "we"}], 1),
    "we-code": ([{"name": "we", "args": {"mode": "code"}}], 1),
}
#: single-network jobs -> their arm; two-network jobs -> the stem of their three arms (net 0, -mean, -ensemble)
ARM_OF = {
    "we-paper": "we",
    "we-code": "we-reference-rules",
    "graft2-same-lr": "graft2",
    "graft2-diff-lr": "graft2-difflr",
}
GRAFT_JOBS = ("graft2-same-lr", "graft2-diff-lr")
ARMS = (
    "baseline",
    "ensemble2",
    "we",
    "we-reference-rules",
    *(f"{ARM_OF[j]}{suffix}" for j in GRAFT_JOBS for suffix in ("", "-mean", "-ensemble")),
)
QUICK = {"epochs": 10, "subset": 10000, "val_size": 5000, "width_mult": 1.0, "data": "fashion-mnist"}
QUICK_SEEDS = (0, 1, 2)


def _config(args: argparse.Namespace, seed: int, job: str) -> RunConfig:
    methods, networks = JOBS[job]
    return RunConfig.from_dict(
        {
            "model": {"name": args.model, "width_mult": args.width_mult},
            "data": {"name": args.data, "subset": args.subset, "val_size": args.val_size, "batch_size": 128},
            "train": {"epochs": args.epochs, "lr": 0.1, "seed": seed, "threads": args.threads, "checkpoint": True},
            "methods": methods,
            "networks": networks,
        }
    )


def _history(run_dir: Path) -> list[dict[str, Any]]:
    return RunDir(run_dir).read_metrics()


def _accuracies(run_dir: Path, final_test_acc: float) -> dict[str, Any]:
    """Last-epoch test accuracy and the test accuracy at the best-validation epoch of one network."""
    history = _history(run_dir)
    best = max(range(len(history)), key=lambda i: (history[i].get("val_acc", 0.0), -i))
    return {
        "last_test_acc": final_test_acc,
        "best_val_epoch": history[best]["epoch"],
        "best_val_test_acc": history[best]["test_acc"],
        "invalid": {str(k): v for k, v in invalid_filters(load(RunDir(run_dir).model)).items()},
    }


def run_job(args: argparse.Namespace, job: str, seed: int, runs: Path) -> dict[str, Any]:
    """Train one job (resuming its checkpoint if there is one) and read back what the arms need."""
    run_dir = runs / f"{job}-s{seed}"
    start = time.perf_counter()
    result = train_run(_config(args, seed, job), run_dir, resume=True, progress=args.progress)
    m = result.metrics
    out: dict[str, Any] = {"seconds": time.perf_counter() - start}
    if JOBS[job][1] == 1:
        out["networks"] = [_accuracies(run_dir, m["final_test_acc"])]
        return out
    out["networks"] = [_accuracies(RunDir(run_dir).network(k).root, m[f"net{k}_final_test_acc"]) for k in range(2)]
    out["ensemble_test_acc"] = m["ensemble_test_acc"]
    if job in GRAFT_JOBS:
        # the last graft runs at the start of the last epoch (none in a one-epoch run)
        grafted = [r for r in _history(RunDir(run_dir).network(0).root) if "graft_alpha_mean" in r]
        last = grafted[-1] if grafted else None
        out["invalid_before_last_graft"] = {t: last[f"graft_invalid_{t}"] for t in ("0.1", "0.01")} if last else None
        out["alpha_mean_last"] = last["graft_alpha_mean"] if last else None
    return out


def arm_records(jobs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The arms' per-seed records (see the module docstring) from the jobs' records."""
    out = []
    for r in jobs:
        nets, seed = r["networks"], r["seed"]

        def arm(name: str, **values: Any) -> None:
            out.append({"arm": name, "seed": seed, **values})  # noqa: B023 (used at once)

        if r["arm"] == "pop2":
            arm("baseline", **nets[0])
            arm("ensemble2", last_test_acc=r["ensemble_test_acc"])
        elif r["arm"] in GRAFT_JOBS:
            stem = ARM_OF[r["arm"]]
            arm(stem, **nets[0], invalid_before_last_graft=r["invalid_before_last_graft"])
            mean = {k: statistics.fmean(n[k] for n in nets) for k in ("last_test_acc", "best_val_test_acc")}
            arm(f"{stem}-mean", **mean)
            arm(f"{stem}-ensemble", last_test_acc=r["ensemble_test_acc"])
        else:
            arm(ARM_OF[r["arm"]], **nets[0])
    return out


def _incomplete(settings: dict[str, Any]) -> list[str]:
    """A warning paragraph when jobs are missing: the arms are then summarised over the seeds they have."""
    missing = settings.get("missing") or []
    if not missing:
        return []
    return [
        f"**Incomplete: {len(missing)} job(s) not run yet ({', '.join(missing)}).** Each arm is summarised "
        "over the seeds it has (column n); differences use only the seeds both arms have.",
        "",
    ]


def run_conditions(records: list[dict[str, Any]]) -> str:
    """One sentence on how the jobs ran: torch threads (the most common count, then the exceptions by job),
    the machine and the commits. Thread counts matter because a different count changes float reduction order, so
    two runs of the same seed diverge as training goes on: a seed is then less tightly paired."""
    if not records:
        return ""
    threads = Counter(r.get("threads") for r in records)
    usual = threads.most_common(1)[0][0]
    odd = [
        f"{r['arm']} seed {r['seed']} ({r.get('threads')})"
        for r in sorted(records, key=lambda r: (r["seed"], r["arm"]))
        if r.get("threads") != usual
    ]
    commits = sorted({f"{r.get('commit')}{' (dirty)' if r.get('dirty') else ''}" for r in records})
    machines = sorted({str(r.get("machine")) for r in records})
    return (
        f"Jobs ran at {usual} torch thread(s)"
        + (f", except {', '.join(odd)}" if odd else "")
        + f"; machine {', '.join(machines)}; commits {', '.join(commits)}."
    )


def markdown(summary: dict[str, Any], arms: list[dict[str, Any]], settings: dict[str, Any]) -> str:
    """The results table with the protocol above it and the invalid-filter counts below."""
    pct = lambda x: "n/a" if x is None else f"{100 * x:.2f}"  # noqa: E731
    lines = [
        f"# Reactivation accuracy, {settings['protocol']} ({settings['model']}, width {settings['width_mult']})",
        "",
        f"{settings['model']} on {settings['data']}, {settings['subset']}-image training subset, "
        f"{settings['val_size']} val, full test set; {settings['epochs']} epochs SGD nesterov lr 0.1 cosine, wd 5e-4, "
        f"batch 128, crop + flip; seeds {settings['seeds']} (paired). Accuracies in %; differences are arm minus "
        "baseline for the same seed, mean [95% t interval]. Every network is scored before its evolution or "
        "graft (the reference repositories' order; none follows the last epoch). `ensemble2`: logit ensemble of "
        "two independent baselines (graft2's compute); `we`: paper crossover; `we-reference-rules`: `mode=code`, "
        "the repository's rules; `graft2`: grafted network 0 (the baseline's seed), both networks at lr 0.1, "
        "`-mean` the two networks' mean, `-ensemble` their logit ensemble; `graft2-difflr`: the repository's "
        "per-network rates, network 0 at x0.5 (the baseline's seed), network 1 at x1.0.",
        "",
        *_incomplete(settings),
        "| arm | last-epoch test acc | diff vs baseline | test acc @ best val | diff vs baseline | n |",
        "|---|---|---|---|---|---|",
    ]
    for name, e in summary.items():
        cells = [name]
        for metric in ("last_test_acc", "best_val_test_acc"):
            s, d = e.get(metric), e.get(f"{metric}_diff")
            cells.append("—" if s is None else f"{pct(s['mean'])} ± {pct(s['std'])}")
            cells.append("—" if d is None else f"{pct(d['mean'])} [{pct(d['low'])}, {pct(d['high'])}]")
        cells.append(str(e["last_test_acc"]["n"]))
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Invalid filters (L1 < 0.1 / < 0.01) of each final network:", ""]
    for name in ARMS:
        rows = sorted((r for r in arms if r["arm"] == name and "invalid" in r), key=lambda r: r["seed"])
        if rows:
            cells = [f"seed {r['seed']}: {r['invalid']['0.1']} / {r['invalid']['0.01']}" for r in rows]
            before = [r.get("invalid_before_last_graft") for r in rows]
            extra = ""
            if all(before):
                extra = " (just before the last graft: " + ", ".join(f"{b['0.1']} / {b['0.01']}" for b in before) + ")"
            lines.append(f"- {name}: " + ", ".join(cells) + extra)
    if settings.get("conditions"):
        lines += ["", settings["conditions"]]
    lines += ["", f"prunus {settings['prunus']} (commit {settings['commit']}), generated {settings['date']}.", ""]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="resnet20", help="resnet20 or mobilenetv2 (the protocol runs both)")
    ap.add_argument("--width-mult", type=float, default=1.0)
    ap.add_argument("--data", default="fashion-mnist")
    ap.add_argument("--subset", type=int, default=10000)
    ap.add_argument("--val-size", type=int, default=5000)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--jobs", default=",".join(JOBS), help=f"comma-separated subset of {','.join(JOBS)}")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--name", default="accuracy_reactivation", help="result file stem (and runs/ subdirectory)")
    ap.add_argument("--results-dir", default=str(RESULTS))
    ap.add_argument("--progress", action="store_true", help="show the Trainer's progress")
    ap.add_argument(
        "--table-only",
        action="store_true",
        help="run nothing: write the table from the jobs recorded so far (missing jobs are listed in it)",
    )
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    jobs = [j.strip() for j in args.jobs.split(",") if j.strip()]
    unknown = [j for j in jobs if j not in JOBS]
    if unknown:
        raise SystemExit(f"unknown job(s) {unknown}; choose from {', '.join(JOBS)}")
    tag = f"{args.model}-w{args.width_mult}-e{args.epochs}-n{args.subset}-v{args.val_size}-{args.data}"
    results = Path(args.results_dir)
    runs_file = results / f"{args.name}_runs.json"
    work_dir = ROOT / "runs" / args.name
    order = sorted(((j, s) for s in seeds for j in jobs), key=lambda js: (list(JOBS).index(js[0]), js[1]))

    code = provenance()  # the code this worker loaded: the checkout may move on while jobs run

    def run(job: str, seed: int) -> dict[str, Any]:
        return {**run_job(args, job, seed, work_dir / tag), **code}

    if not args.table_only and run_jobs(order, tag=tag, runs_file=runs_file, work_dir=work_dir, run=run):
        return  # the last worker to finish writes the table
    with locked(work_dir / f"{tag}.lock"):
        records = current_records(load_records(runs_file), tag)
    write_table(args, tag, seeds, records, results)


def current_records(records: list[dict[str, Any]], tag: str) -> list[dict[str, Any]]:
    """The records of `tag` from this protocol's jobs (retired job names, scored after a graft, are left out)."""
    return [r for r in records if r["tag"] == tag and r["arm"] in JOBS]


def expected_jobs(seeds: list[int], records: list[dict[str, Any]], quick: bool) -> list[tuple[str, int]]:
    """Every (job, seed) the table should hold: all jobs for the requested seeds, the seeds already
    recorded, and the protocol's own seeds when this is the quick protocol."""
    all_seeds = set(seeds) | {r["seed"] for r in records} | (set(QUICK_SEEDS) if quick else set())
    return [(job, s) for s in sorted(all_seeds) for job in JOBS]


def write_table(
    args: argparse.Namespace, tag: str, seeds: list[int], records: list[dict[str, Any]], results: Path
) -> None:
    """Write <name>_<model>.json and .md from every record of `tag`, saying which jobs are still missing."""
    mine = {"epochs": args.epochs, "subset": args.subset, "val_size": args.val_size}
    quick = (
        mine == {k: QUICK[k] for k in mine} and args.width_mult == QUICK["width_mult"] and args.data == QUICK["data"]
    )
    expected = expected_jobs(seeds, records, quick)
    done = {(r["arm"], r["seed"]) for r in records}
    arms = arm_records(records)
    summary = summarise_records(arms, ["last_test_acc", "best_val_test_acc"], baseline="baseline", means=())
    summary = {a: summary[a] for a in ARMS if a in summary}
    settings = {
        "protocol": "quick protocol" if quick else f"custom protocol ({tag})",
        "tag": tag,
        "model": args.model,
        "width_mult": args.width_mult,
        "data": args.data,
        "subset": args.subset,
        "val_size": args.val_size,
        "epochs": args.epochs,
        "seeds": sorted({s for _, s in expected}),
        "missing": [f"{job} seed {s}" for job, s in expected if (job, s) not in done],
        "conditions": run_conditions(records),
        "seconds": {r["arm"]: statistics.fmean(x["seconds"] for x in records if x["arm"] == r["arm"]) for r in records},
        **provenance(config=vars(args)),
    }
    stem = f"{args.name}_{args.model}"
    write_json(results / f"{stem}.json", {"settings": settings, "summary": summary, "arms": arms, "jobs": records})
    text = markdown(summary, arms, settings)
    write_text(results / f"{stem}.md", text)
    print(text)


if __name__ == "__main__":
    main()
