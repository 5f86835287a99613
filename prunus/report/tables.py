"""The report's tables as rows of strings: the console (`prunus run`), summary.md and report.html share them.

Example:
    >>> rec = {"stages": [{"name": "csgd", "kind": "csgd", "seconds": 1.0, "metrics": {"csgd_max_logit_diff": 0.007}}]}
    >>> method_rows(rec)
    [['csgd', 'csgd', 'max logit diff 0.007 at the merge']]
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from prunus.methods.figures import describe
from prunus.report.headline import Architecture, ArmHeadline, ratio_text
from prunus.report.stats import summarise_records

__all__ = [
    "ARCH_COLUMNS",
    "ARM_COLUMNS",
    "HEADLINE_COLUMNS",
    "METHOD_COLUMNS",
    "STAGE_COLUMNS",
    "arch_rows",
    "arm_rows",
    "headline_rows",
    "method_rows",
    "stage_rows",
]

STAGE_COLUMNS = ("stage", "kind", "test acc", "MACs", "params", "bytes on disk", "latency (ms, batch 64)", "time (s)")
ARM_COLUMNS = ("arm", "n", "test acc (mean ± std)", "diff vs baseline [95% t]", "MACs", "params", "bytes",
               "latency (ms)")  # fmt: skip
METHOD_COLUMNS = ("stage", "method", "what it did")
ARCH_COLUMNS = ("#", "stages", "MACs", "params", "latency median (ms)", "quartiles (ms)", "timed calls",
                "load avg (max) / CPUs")  # fmt: skip
HEADLINE_COLUMNS = ("arm", "seeds", "test acc", "MACs", "params", "bytes", "latency (ms)")


def _pct(x: Any) -> str:
    return "—" if x is None else f"{100 * x:.2f}%"


def _int(x: Any) -> str:
    return "—" if x is None else f"{int(round(x)):,}"


def _ms(x: Any) -> str:
    return "—" if x is None else f"{x:.2f}"


def stage_rows(record: dict[str, Any]) -> list[list[str]]:
    """One row per stage of a chain record: accuracy, MACs, params, bytes, latency, time."""
    rows = []
    for s in record["stages"]:
        m = s["metrics"]
        rows.append([s["name"], s["kind"], _pct(m.get("acc")), _int(m.get("macs")), _int(m.get("params")),
                     _int(m.get("bytes")), _ms(m.get("latency_ms")), f"{s['seconds']:.1f}"])  # fmt: skip
    return rows


def method_rows(record: dict[str, Any]) -> list[list[str]]:
    """One row per (stage, method) of a chain record whose stage recorded method figures (WE, grafting,
    C-SGD, MFP, SFP): what the method did, in a few numbers."""
    return [[s["name"], method, text] for s in record["stages"] for method, text in describe(s["metrics"])]


def arm_rows(records: Sequence[dict[str, Any]], baseline: str | None) -> list[list[str]]:
    """Per arm over seeds: accuracy mean ± std, paired difference to the baseline, mean costs."""
    stats = summarise_records(records, ["acc"], baseline=baseline, means=("macs", "params", "bytes", "latency_ms"))
    rows = []
    for arm, e in stats.items():
        acc = e.get("acc") or {"mean": None, "std": None, "n": 0}
        diff = e.get("acc_diff")
        if diff is None or diff["mean"] is None:
            d = "—"
        elif diff["low"] is None:
            d = f"{100 * diff['mean']:+.2f} pt (n={diff['n']})"
        else:
            d = f"{100 * diff['mean']:+.2f} pt [{100 * diff['low']:+.2f}, {100 * diff['high']:+.2f}]"
        spread = "" if acc["std"] is None else f" ± {100 * acc['std']:.2f}"
        rows.append([arm, str(acc["n"]), f"{_pct(acc['mean'])}{spread}", d, _int(e.get("macs")),
                     _int(e.get("params")), _int(e.get("bytes")), _ms(e.get("latency_ms"))])  # fmt: skip
    return rows


def arch_rows(archs: Sequence[Architecture]) -> list[list[str]]:
    """One row per distinct architecture: the stages sharing it and its pooled latency with quartiles."""
    rows = []
    for i, a in enumerate(archs, 1):
        names = a.stage_names
        stages = f"{', '.join(names)} ({len(a.stages)} measurement{'s' if len(a.stages) > 1 else ''})"
        calls = str(a.n) if a.per_call else f"{a.n} stage medians"
        load = "not recorded" if not a.loads else f"{max(x for x, _ in a.loads):.1f} / {max(c for _, c in a.loads)}"
        if a.busy:
            load += " (busy)"
        rows.append([str(i), stages, _int(a.macs), _int(a.params), f"{a.median:.2f}", f"{a.q25:.2f} – {a.q75:.2f}",
                     calls, load])  # fmt: skip
    return rows


def _change(dense: Any, final: Any, fmt: Any, noun: str, fewer: str, more: str) -> str:
    if dense is None or final is None:
        return fmt(final if final is not None else dense)
    if dense == final:
        return fmt(final)
    return f"{fmt(dense)} → {fmt(final)} ({ratio_text(float(dense), float(final), noun, fewer, more)})"


def headline_rows(heads: Sequence[ArmHeadline]) -> list[list[str]]:
    """Per arm: dense → final of each figure, with its ratio (means over seeds)."""
    rows = []
    for h in heads:
        d, f = h.dense, h.final
        if d["acc"] is None or f["acc"] is None or d["acc"] == f["acc"]:
            acc = _pct(f["acc"] if f["acc"] is not None else d["acc"])
        else:
            acc = f"{_pct(d['acc'])} → {_pct(f['acc'])} ({100 * (f['acc'] - d['acc']):+.1f} pt)"
        rows.append([h.arm, str(h.seeds), acc, _change(d["macs"], f["macs"], _int, "MACs", "fewer", "more"),
                     _change(d["params"], f["params"], _int, "params", "fewer", "more"),
                     _change(d["bytes"], f["bytes"], _int, "file", "smaller", "larger"),
                     _change(d["latency_ms"], f["latency_ms"], _ms, "", "faster", "slower")])  # fmt: skip
    return rows
