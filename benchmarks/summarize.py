"""Turn benchmarks/results/*.json into the markdown tables of README.md (between RESULTS markers).

    .venv/bin/python benchmarks/summarize.py            # rewrite README.md's results section
    .venv/bin/python benchmarks/summarize.py --print    # only print the markdown

Every number in the README's results section comes from a results file written by a script in
benchmarks/, so the README cannot drift from what was measured. Missing files are skipped.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
BEGIN, END = "<!-- RESULTS -->", "<!-- /RESULTS -->"


def _load(name: str) -> dict[str, Any] | None:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def _machine(run: dict) -> str:
    # results written before prunus.provenance() put the torch version inside "machine"
    return run["machine"] if "torch" not in run else f"{run['machine']}, torch {run['torch']}"


def _pct(x: float) -> str:
    return f"{100 * x:.2f}%"


def training_section() -> list[str]:
    run = _load("train_resnet20_fmnist")
    if run is None:
        return []
    m = run["metrics"]
    minutes = run.get("train_seconds", m["seconds"]) / 60
    return [
        "### Training (issue 2)",
        "",
        "| model | data | epochs | last-epoch test acc | test acc at best-val epoch | params | MACs | wall time |",
        "|---|---|---|---|---|---|---|---|",
        f"| ResNet-20 | Fashion-MNIST (55k train / 5k val / 10k test) | {m['epochs']} | "
        f"{_pct(run['last_epoch_test_acc'])} | {_pct(run['test_acc_at_best_val_epoch'])} "
        f"(epoch {run['best_val_epoch']}) | {m['params']:,} | {m['macs']:,} | {minutes:.0f} min |",
        "",
        f"`{run['command']}` on {_machine(run)}. {run.get('note', '')}".rstrip(),
        "",
    ]


def performance_rows() -> list[tuple[str, str, str, str]]:
    """(figure, measured, target, reproduce) rows from every performance result that exists."""
    rows: list[tuple[str, str, str, str]] = []
    engine = _load("engine")
    if engine:
        rows.append(
            (
                "engine overhead (Trainer / hand-written loop, ResNet-20)",
                f"{engine['ratio']:.3f}",
                engine["target"],
                "`benchmarks/bench_engine.py`",
            )
        )
    loader = _load("loader")
    if loader:
        rows.append(
            (
                "loader throughput, augmented Fashion-MNIST, 2 threads",
                f"{loader['protocol_images_per_s']:,.0f} images/s",
                f">= {loader['target_images_per_s']:,} images/s",
                "`benchmarks/bench_loader.py`",
            )
        )
    for extra in EXTRA_PERFORMANCE:
        rows.extend(extra())
    return rows


def _pruning_rows() -> list[tuple[str, str, str, str]]:
    rows = []
    for path in sorted(RESULTS.glob("prune_speed*.json")):
        speed = json.loads(path.read_text())
        variant = "stem pruned too" if speed.get("prune_stem") else "stem and fc kept (default)"
        macs = speed["macs"]
        rows.append(
            (
                f"prune time: graph + 50% prune of ResNet-56, prunus / Torch-Pruning ({variant})",
                f"{speed['time_ratio']:.2f}",
                speed["time_target"],
                f"`benchmarks/bench_prune_speed.py{' --prune-stem' if speed.get('prune_stem') else ''}`",
            )
        )
        if "latency_efficiency" in speed:
            per_runtime = ", ".join(
                f"{r['runtime']} {r['efficiency']:.2f}" for r in speed["latency"]["speedups"] if r["batch"] == 64
            )
            rows.append(
                (
                    f"latency efficiency, ResNet-56 50% channels ({variant}), MACs cut "
                    f"{macs['dense'] / macs['prunus']:.2f}x, batch 64 ({per_runtime})",
                    f"{speed['latency_efficiency']:.2f}",
                    speed["latency_target"],
                    f"`benchmarks/bench_prune_speed.py{' --prune-stem' if speed.get('prune_stem') else ''}`",
                )
            )
    overhead = _load("method_overhead")
    if overhead:
        for arm, ratio in overhead["ratio"].items():
            rows.append(
                (
                    f"method overhead: {arm} epoch time / plain",
                    f"{ratio:.3f}",
                    overhead["target"][arm],
                    "`benchmarks/bench_method_overhead.py`",
                )
            )
    csgd = _load("csgd_overhead")
    if csgd:
        rows.append(
            ("method overhead: csgd epoch time / plain", f"{csgd['ratio']:.3f}", csgd["target"],
             "`benchmarks/bench_csgd_overhead.py`")
        )  # fmt: skip
    return rows


def _latency_rows() -> list[tuple[str, str, str, str]]:
    """Rows of benchmarks/bench_latency.py: efficiency per round_to, and latency budgets met as measured."""
    rows = []
    for path in sorted(RESULTS.glob("latency_*.json")):
        res = json.loads(path.read_text())
        model, cmd = res["model"], f"`benchmarks/bench_latency.py --model {res['model']}`"
        load = res.get("efficiency_load_before", [None])[0]
        where = f"1 thread, load avg {load:.0f} on 2 cores" if load is not None else "1 thread"
        for arm in res.get("efficiency", []):
            per_rt = ", ".join(f"{r['runtime']} {r['efficiency']:.2f}" for r in arm["speedups"] if r["batch"] == 64)
            b1 = arm["efficiency"].get("1")
            rows.append(
                (
                    f"latency efficiency, {model} 50% channels, round_to {arm['round_to']}, MACs cut "
                    f"{arm['macs_ratio']:.2f}x, batch 64 ({per_rt}; batch 1 best "
                    f"{'-' if b1 is None else f'{b1:.2f}'}; {where})",
                    f"{arm['efficiency']['64']:.2f} ({arm['best_runtime']['64']})",
                    ">= 0.85 (best runtime, batch 64)",
                    cmd + f" --round-to {arm['round_to']}",
                )
            )
        for b in res.get("budgets", []):
            rows.append(
                (
                    f"latency budget, {model}, {res.get('budget_runtime')} batch 64: requested {b['requested']}, "
                    f"measured by prune {b['measured_by_prune']:.3f}, re-measured {b['remeasured']:.3f} "
                    f"(MACs kept {b['macs_ratio_kept']:.3f})",
                    f"{b['remeasured'] / b['requested']:.2f}",
                    "0.90-1.10 (re-measured / requested)",
                    cmd + f" --skip-efficiency --budgets {b['requested']}",
                )
            )
    return rows


# Benchmark families that contribute rows to the performance table.
EXTRA_PERFORMANCE: list[Callable[[], list[tuple[str, str, str, str]]]] = [_pruning_rows, _latency_rows]


def csgd_section() -> list[str]:
    res = _load("accuracy_csgd")
    if res is None:
        return []
    lines = [
        "### C-SGD: trained vs merged, and controls at the same widths (issue 4)",
        "",
        f"{res['definition']}. Max |logit diff| trained vs merged: **{res['max_logit_diff']:.2e}** (target < 1e-3).",
        "",
        "| arm | test acc | vs baseline (pt) | MACs | params | MACs cut |",
        "|---|---|---|---|---|---|",
    ]
    for name, arm in res["arms"].items():
        lines.append(
            f"| {name} | {_pct(arm['test_acc'])} | {arm['delta_vs_baseline_pt']:+.2f} | {arm['macs']:,} | "
            f"{arm['params']:,} | {100 * arm['macs_reduction']:.1f}% |"
        )
    return [*lines, "", "`l1`, `delete` and `merge-only` are controls with no fine-tuning.", ""]


def performance_section() -> list[str]:
    rows = performance_rows()
    if not rows:
        return []
    lines = ["### Performance (ratios measured side by side in one run; medians)", ""]
    lines += ["| figure | measured | target | reproduce |", "|---|---|---|---|"]
    lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]
    return [*lines, ""]


def accuracy_sections() -> list[str]:
    """Markdown tables that accuracy scripts write next to their JSON (results/*.md), verbatim."""
    lines: list[str] = []
    for md in sorted(RESULTS.glob("accuracy_*.md")):
        if md.stem.endswith("_runs"):
            continue
        text = md.read_text().rstrip()
        if text.startswith("# "):  # a top-level title in its own file is a subsection in the README
            text = "### " + text[2:]
        lines += [text, ""]
        if md.stem == "accuracy_pruning":
            lines += [
                "Note: `tp-magnitude` fine-tunes the already trained baseline, so it sees more training epochs "
                "than the SFP/FPGM/MFP arms (which prune while training within the same budget as the baseline).",
                "",
            ]
    return lines


def render() -> str:
    body = training_section() + performance_section() + accuracy_sections() + csgd_section()
    header = "## Results\n\nProduced by `benchmarks/summarize.py` from `benchmarks/results/`; machine: 2 CPU cores.\n"
    return "\n".join([header, *body]).rstrip() + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--print", action="store_true", help="print the markdown instead of updating README.md")
    args = ap.parse_args()
    text = render()
    if args.print:
        print(text)
        return
    readme = ROOT / "README.md"
    content = readme.read_text()
    if BEGIN not in content:
        raise SystemExit(f"README.md has no {BEGIN} marker")
    head, _, rest = content.partition(BEGIN)
    _, _, tail = rest.partition(END) if END in rest else ("", "", rest)
    readme.write_text(f"{head}{BEGIN}\n{text}{END}{tail}")
    print("README.md results section updated")


if __name__ == "__main__":
    main()
