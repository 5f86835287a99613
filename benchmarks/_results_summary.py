"""The README's short results summary: one headline figure per method, each with its command.

Rendered from the same committed result files as docs/RESULTS.md (where the full tables live), so
the README cannot drift from what was measured. A method whose result file is missing has no row:
the summary never shows a number that was not measured.

    python benchmarks/render_results.py --readme README.md   # make results

Example:
    >>> from pathlib import Path
    >>> "| method |" in summary(Path(__file__).parent / "results")
    True
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["summary"]

Row = tuple[str, str, str, str]  # method, headline, setting, reproduce


def _load(results: Path, name: str) -> dict[str, Any] | None:
    path = results / f"{name}.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def _diff(stats: dict[str, Any]) -> str:
    """A paired difference in points with its 95% interval: `-0.97 pt [-1.76, -0.19]`."""
    low, high = stats.get("low"), stats.get("high")
    interval = f" [{100 * low:+.2f}, {100 * high:+.2f}]" if low is not None and high is not None else ""
    return f"{100 * stats['mean']:+.2f} pt{interval}"


def _soft_pruning(results: Path) -> list[Row]:
    run = _load(results, "accuracy_pruning")
    if run is None:
        return []
    s, cfg = run["summary"], run["settings"]
    kept = s["mfp"]["macs"] / s["baseline"]["macs"]
    others = ", ".join(
        f"{arm} {_diff(s[arm]['last_test_acc_diff']).split(' [')[0]}"
        for arm in ("fpgm", "sfp-l2", "tp-magnitude")
        if arm in s
    )
    return [
        (
            "MFP (soft pruning, criterion switched by the network's state)",
            f"{_diff(s['mfp']['last_test_acc_diff'])} test accuracy vs the unpruned baseline at {kept:.3f} of its "
            f"MACs ({others})",
            f"ResNet-20, Fashion-MNIST {cfg['subset']:,}-image subset, {cfg['epochs']} epochs, "
            f"{len(cfg['seeds'])} paired seeds, 95% interval",
            "`python benchmarks/accuracy_pruning.py`",
        )
    ]


def _csgd(results: Path) -> list[Row]:
    run = _load(results, "accuracy_csgd")
    if run is None:
        return []
    arms = run["arms"]
    merged, base = arms["csgd-merged"], arms["baseline"]
    control = arms.get("l1+ft")
    vs = f"; L1 pruning + the same epochs: {control['delta_vs_baseline_pt']:+.2f} pt" if control else ""
    return [
        (
            "C-SGD (centripetal SGD, exact merge)",
            f"merged == trained (max logit difference {run['max_logit_diff']:.1e}); "
            f"{merged['delta_vs_baseline_pt']:+.2f} pt vs the {100 * base['test_acc']:.2f}% baseline with "
            f"{100 * merged['macs_reduction']:.1f}% of the MACs removed{vs}",
            "ResNet-20 on full Fashion-MNIST, 3 C-SGD epochs, seed 0",
            "`python benchmarks/accuracy_csgd.py`",
        )
    ]


def _reactivation(results: Path) -> list[Row]:
    rows: list[Row] = []
    for model in ("resnet20", "mobilenetv2"):
        run = _load(results, f"accuracy_reactivation_{model}")
        if run is None:
            continue
        s, cfg = run["summary"], run["settings"]
        setting = (
            f"{model}, Fashion-MNIST {cfg['subset']:,}-image subset, {cfg['epochs']} epochs, {len(cfg['seeds'])} "
            f"paired seeds (commit {cfg['commit']})"
        )
        cmd = f"`python benchmarks/accuracy_reactivation.py --model {model}`"
        if "we" in s:
            we = _diff(s["we"]["last_test_acc_diff"])
            rows.append(("WE (weight evolution)", f"{we} vs the baseline", setting, cmd))
        if "graft2" in s:
            rows.append(
                ("Filter grafting (2 networks)", f"{_diff(s['graft2']['last_test_acc_diff'])} vs the baseline", setting,
                 cmd)
            )  # fmt: skip
    return rows


def _compression(results: Path) -> list[Row]:
    rows = []
    files = (("compress_lenet300_100", "LeNet-300-100"), ("compress_resnet20", "ResNet-20"),
             ("compress_resnet20_defaults", "ResNet-20 with the convnet-preset defaults"),
             ("compress_mobilenetv2", "MobileNetV2 with the convnet-preset defaults"))  # fmt: skip
    for name, model in files:
        run = _load(results, name)
        if run is None:
            continue
        points = "; ".join(
            f"{p['ratio']:.1f}x smaller than fp32 at {-p['test_drop_pt']:+.2f} pt (budget {p['max_drop_budget_pt']:g} "
            f"pt) in {p['compress_wall_seconds'] / 60:.1f} min"
            for p in run["points"]
        )
        rows.append(
            (
                "DE (sparsify, quantize, entropy-code into .prn)",
                points,
                f"{model} ({100 * run['teacher_test_acc']:.2f}% test), Fashion-MNIST, 2 cores",
                "`python benchmarks/compress_lenet.py` (each point's command: docs/RESULTS.md)",
            )
        )
    return rows


def _fastest(speedups: list[dict], batch: int) -> dict:
    """The row of the runtime that runs the pruned model fastest at `batch`."""
    return min((r for r in speedups if r["batch"] == batch), key=lambda r: r["pruned_ms"])


def _efficiency(results: Path) -> list[Row]:
    """One line per model: the runtime-aware cut on the fastest runtime at batch 64, beside the plain 50% cut."""
    cells, models = [], []
    for name, label in (("resnet56", "ResNet-56"), ("mobilenetv2", "MobileNetV2"), ("vgg16_bn", "VGG-16-BN")):
        run = _load(results, f"latency_{name}")
        arms = (run or {}).get("efficiency") or []
        if not arms or "round_to_resolved" not in arms[0]:  # before the fastest-runtime headline
            continue
        # the runtime-aware setting the README recommends (streams kept, round_to auto), not the best of the arms
        best = next((a for a in arms if a.get("cut", {}).get("keep_streams")), arms[-1])
        plain, top = _fastest(arms[0]["speedups"], 64), _fastest(best["speedups"], 64)
        cut = best.get("cut", {})
        how = ", ".join(
            [f"round_to {best['round_to']}"] + (["residual streams kept"] if cut.get("keep_streams") else [])
        )
        cells.append(
            f"{label} {top['efficiency']:.2f} ({how}: {top['speedup']:.2f}x faster for {best['macs_ratio']:.2f}x "
            f"fewer MACs on {top['runtime']}; plain 50% cut {plain['efficiency']:.2f})"
        )
        models.append(name)
    if not cells:
        return []
    return [
        (
            "Latency efficiency (speed-up / MACs cut, fastest runtime, batch 64)",
            "; ".join(cells),
            "untrained weights, 1x28x28, 1 thread, torch / onnxruntime / OpenVINO",
            "`python benchmarks/bench_latency.py --model M --round-to 1,auto --streams` (M: " + ", ".join(models) + ")",
        )
    ]


def _latency(results: Path) -> list[Row]:
    run = _load(results, "latency_resnet56")
    if run is None or not run.get("budgets"):
        return _efficiency(results)
    budgets = ", ".join(f"{b['requested']} -> {b['remeasured']:.3f}" for b in run["budgets"])
    return [
        *_efficiency(results),
        (
            "Latency budget (measured on the runtime)",
            f"requested -> re-measured latency ratio: {budgets}",
            f"ResNet-56, {run.get('budget_runtime')}, batch 64, 1 thread",
            "`python benchmarks/bench_latency.py --model resnet56 --skip-efficiency`",
        ),
    ]


def _coverage(results: Path) -> list[Row]:
    run = _load(results, "coverage_timm")
    if run is None or not run.get("models"):
        return []
    families = run["plan"]["families"]
    recs = [run["models"][f["model"]] for f in families if f["model"] in run["models"]]
    passed = {arm: sum(r[arm]["pass"] for r in recs) for arm in ("prunus", "torch_pruning")}
    both = sorted(
        r["prunus"]["prune_s"] / r["torch_pruning"]["prune_s"]
        for r in recs
        if all(r[a]["prune"]["ok"] and r[a].get("prune_s") for a in ("prunus", "torch_pruning"))
    )
    median = (both[(len(both) - 1) // 2] + both[len(both) // 2]) / 2 if both else None
    timing = f"; median prune time prunus / Torch-Pruning {median:.2f}" if median is not None else ""
    alone = _load(results, "prune_time_timm")
    if alone is not None and alone["summary"]["median_ratio"] is not None:  # timed alone, medians of repeats
        s = alone["summary"]
        timing = f"; median prune time prunus / Torch-Pruning {s['median_ratio']:.2f} ({s['timed_both']} models)"
    out_of_reach = sum(bool(r["prunus"]["pass"] and r["prunus"].get("budget_out_of_reach")) for r in recs)
    unreachable = f", or out of the model's reach and warned: {out_of_reach}" if out_of_reach else ""
    return [
        (
            "Any CNN: one model per timm CNN family",
            f"prunus passes {passed['prunus']} of {len(recs)}, Torch-Pruning {passed['torch_pruning']} of "
            f"{len(recs)} (prune, forward, train step, save/load, ONNX, MACs on target{unreachable}){timing}",
            f"{len(recs)} of {len(families)} families measured (seeded random order), timm {run['timm']}, 64x64 "
            "input, half the MACs kept",
            "`python benchmarks/coverage_timm.py`"
            + (", `python benchmarks/bench_prune_time_timm.py`" if alone is not None else ""),
        )
    ]


SECTIONS: list[Callable[[Path], list[Row]]] = [_soft_pruning, _csgd, _reactivation, _compression, _latency, _coverage]


def summary(results_dir: str | os.PathLike[str]) -> str:
    """The README's "Results" section: a table of headline figures and a link to docs/RESULTS.md."""
    results = Path(results_dir)
    rows = [row for section in SECTIONS for row in section(results)]
    lines = [
        "## Results",
        "",
        "Headline figures, measured on 2 CPU cores; every table, its conditions and its command are in "
        "[docs/RESULTS.md](docs/RESULTS.md). Both are generated by `make results` from `benchmarks/results/`.",
        "",
        "| method | measured | setting | reproduce |",
        "|---|---|---|---|",
        *(f"| {' | '.join(cell.replace('|', '/') for cell in row)} |" for row in rows),
        "",
    ]
    return "\n".join(lines)
