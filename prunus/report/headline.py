"""What a run gained, in ratios, and its latency measured once per distinct architecture.

Every model-making stage times its model (`prunus.pipeline._stage_metrics`): the records keep
each timed call (`latency_times_ms`), the load average while timing and `arch_key`, a fingerprint
of the layer shapes. Stages whose models have the same widths (a baseline shared by arms, a
fine-tune, its compressed copy, the same stage in every seed) are ONE architecture here: their
calls are pooled into one median with its interquartile range, so identical networks are never
shown as different latencies. Records from an older prunus (no per-call times, no fingerprint)
group by (MACs, params) and pool the stages' medians.

`headline(records)` compares each arm's first measured model (dense) with its final one, over
seeds: accuracy in points, MACs, params, bytes and latency as "3.1x fewer MACs".

Example:
    >>> stages = [{"name": "a", "kind": "train", "metrics": {"latency_ms": 2.0, "latency_times_ms": [1.0, 2.0, 3.0],
    ...            "arch_key": "k", "macs": 10, "params": 5}}]
    >>> [(a.median, a.n) for a in architectures([{"arm": "x", "seed": 0, "stages": stages}])]
    [(2.0, 3)]
    >>> ratio_text(300, 100, "MACs")
    '3.0x fewer MACs'
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

ONE_MODEL = "one model measured"  # the first phrase of an arm with nothing to compare
KEYS = ("acc", "macs", "params", "bytes", "latency_ms")

__all__ = [
    "ONE_MODEL",
    "Architecture",
    "ArmHeadline",
    "architectures",
    "busy_note",
    "chain_architectures",
    "chain_latency",
    "headline",
    "ratio_text",
    "within_spread",
]


@dataclass
class Architecture:
    """One distinct architecture and every latency measurement of it, pooled."""

    key: str
    macs: Any
    params: Any
    times: list[float] = field(default_factory=list)  # every timed call (or, for old records, stage medians)
    per_call: bool = True  # False: `times` are stage medians (records without per-call times)
    stages: list[str] = field(default_factory=list)  # "arm/seed s/stage" of each measurement
    loads: list[tuple[float, int]] = field(default_factory=list)  # (1-min load average, CPUs) per measurement
    unrecorded_loads: int = 0  # measurements that did not record the load

    @property
    def n(self) -> int:
        return len(self.times)

    @property
    def median(self) -> float:
        return float(np.percentile(self.times, 50))

    @property
    def q25(self) -> float:
        return float(np.percentile(self.times, 25))

    @property
    def q75(self) -> float:
        return float(np.percentile(self.times, 75))

    @property
    def busy(self) -> int:
        """Measurements taken while the load average exceeded the CPU count."""
        return sum(load > cpus for load, cpus in self.loads)

    @property
    def stage_names(self) -> list[str]:
        return list(dict.fromkeys(s.rsplit("/", 1)[-1] for s in self.stages))


def _arch_key(metrics: dict[str, Any]) -> str:
    key = metrics.get("arch_key")
    return str(key) if key else f"macs={metrics.get('macs')},params={metrics.get('params')}"


def architectures(records: Sequence[dict[str, Any]]) -> list[Architecture]:
    """Every distinct architecture any stage timed, in order of first appearance, its timings pooled.

    A stage record copied from another arm's identical stage (the runner's `same_as`) carries the
    same measurement: it is counted once.
    """
    archs: dict[str, Architecture] = {}
    seen: set[str] = set()
    for rec in records:
        for s in rec["stages"]:
            m = s["metrics"]
            if not isinstance(m.get("latency_ms"), (int, float)):
                continue
            ident = json.dumps(m, sort_keys=True, default=str)
            if ident in seen:  # the same measurement, recorded again by a stage shared between arms
                continue
            seen.add(ident)
            key = _arch_key(m)
            arch = archs.setdefault(key, Architecture(key, m.get("macs"), m.get("params")))
            times = m.get("latency_times_ms")
            if isinstance(times, list) and times and all(isinstance(t, (int, float)) for t in times):
                arch.times.extend(float(t) for t in times)
            else:
                arch.times.append(float(m["latency_ms"]))
                arch.per_call = False
            arch.stages.append(f"{rec['arm']}/seed {rec['seed']}/{s['name']}")
            load, cpus = m.get("latency_load"), m.get("latency_cpus")
            if isinstance(load, (int, float)) and isinstance(cpus, int) and cpus > 0:
                arch.loads.append((float(load), cpus))
            else:
                arch.unrecorded_loads += 1
    return list(archs.values())


def chain_architectures(
    record: dict[str, Any], archs: Sequence[Architecture]
) -> tuple[Architecture | None, Architecture | None]:
    """The architectures of a chain's first and last timed stages (None where nothing was timed)."""
    by_key = {a.key: a for a in archs}
    timed = [s["metrics"] for s in record["stages"] if isinstance(s["metrics"].get("latency_ms"), (int, float))]
    if not timed:
        return None, None
    return by_key.get(_arch_key(timed[0])), by_key.get(_arch_key(timed[-1]))


def chain_latency(record: dict[str, Any], archs: Sequence[Architecture]) -> tuple[float | None, float | None]:
    """(dense, final) pooled median latency of a chain: its first and last timed stages' architectures."""
    first, last = chain_architectures(record, archs)
    return (first.median if first else None), (last.median if last else None)


def within_spread(a: Architecture, b: Architecture) -> bool:
    """Whether two architectures' interquartile ranges overlap: their latencies are not told apart."""
    return a.key != b.key and a.q25 <= b.q75 and b.q25 <= a.q75


def busy_note(archs: Sequence[Architecture]) -> str | None:
    """A sentence when any latency was measured on a busy machine (or without the load recorded)."""
    loads = [x for a in archs for x in a.loads]
    busy = [x for x in loads if x[0] > x[1]]
    total = sum(len(a.stages) for a in archs)
    if busy:
        worst = max(busy)
        return (f"The machine was busy while latency was timed: the 1-minute load average exceeded the CPU count "
                f"in {len(busy)} of {total} measurements (up to {worst[0]:.1f} on {worst[1]} CPUs), so the "
                "latencies are noisier (and likely slower) than on a quiet machine: compare with care.")  # fmt: skip
    unrecorded = sum(a.unrecorded_loads for a in archs)
    if unrecorded:
        return (f"{unrecorded} of {total} latency measurements did not record the machine's load (an older "
                "prunus): whether the machine was busy is not known.")  # fmt: skip
    return None


def ratio_text(dense: float, final: float, noun: str, fewer: str = "fewer", more: str = "more") -> str:
    """'3.1x fewer MACs' (dense / final), '1.2x more MACs' when it grew, 'same MACs' within 0.5%.

    Example:
        >>> ratio_text(10.0, 4.0, "ms", "faster", "slower").replace("ms", "latency")
        '2.5x faster latency'
        >>> ratio_text(100, 100.2, "params")
        'same params'
    """
    if final <= 0 or dense <= 0:
        return f"{noun}: n/a"
    r = dense / final
    if abs(r - 1) < 0.005:
        return f"same {noun}".strip()
    shown = max(r, 1 / r)
    factor = f"{shown:.0f}x" if shown >= 10 else f"{shown:.1f}x"
    return f"{factor} {fewer if r > 1 else more} {noun}".rstrip()


@dataclass
class ArmHeadline:
    """An arm's dense (first measured) and final model, each figure a mean over its seeds."""

    arm: str
    seeds: int
    dense: dict[str, float | None]
    final: dict[str, float | None]
    same_model: bool  # the chain measured one model only: nothing to compare
    latency_overlaps: bool = False  # dense and final quartile ranges overlap (every seed): no clear change

    def phrases(self) -> list[str]:
        """'3.1x fewer MACs', '8.2x smaller file', '1.9x faster', '-0.7 pt accuracy': what each figure became."""
        d, f = self.dense, self.final
        out = []
        for key, noun, fewer, more in (("macs", "MACs", "fewer", "more"), ("params", "params", "fewer", "more"),
                                       ("bytes", "file", "smaller", "larger")):  # fmt: skip
            if d.get(key) and f.get(key):
                out.append(ratio_text(float(d[key]), float(f[key]), noun, fewer, more))
        if d.get("latency_ms") and f.get("latency_ms"):
            text = ratio_text(float(d["latency_ms"]), float(f["latency_ms"]), "", "faster", "slower")
            text = "same latency" if text == "same" else text
            out.append(f"{text} (within the timing spread)" if self.latency_overlaps else text)
        if d.get("acc") is not None and f.get("acc") is not None:
            out.append(f"{100 * (float(f['acc']) - float(d['acc'])):+.1f} pt accuracy")
        return out

    def figures(self) -> list[str]:
        """An arm that measured one model: its own figures ('91.20% test accuracy', '40,800,000 MACs', ...)."""
        f, out = self.final, [ONE_MODEL]
        if f.get("acc") is not None:
            out.append(f"{100 * float(f['acc']):.2f}% test accuracy")
        for key, noun in (("macs", "MACs"), ("params", "params"), ("bytes", "bytes")):
            if f.get(key) is not None:
                out.append(f"{int(round(float(f[key]))):,} {noun}")
        if f.get("latency_ms") is not None:
            out.append(f"{float(f['latency_ms']):.2f} ms")
        return out


def _mean(values: Sequence[Any]) -> float | None:
    vals = [float(v) for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
    return statistics.fmean(vals) if vals else None


def headline(records: Sequence[dict[str, Any]], archs: Sequence[Architecture] | None = None) -> list[ArmHeadline]:
    """Per arm, in order: the first model-measuring stage (dense) against the chain's final numbers.

    The final figure of each key is the last stage that measured it (as the run's records keep
    it); latency is the pooled median of the architecture (see `architectures`).
    """
    archs = architectures(records) if archs is None else archs
    by_arm: dict[str, list[dict[str, Any]]] = {}
    for rec in records:
        by_arm.setdefault(rec["arm"], []).append(rec)
    out = []
    for arm, recs in by_arm.items():
        dense_rows, final_rows, single, overlaps = [], [], True, True
        for rec in recs:
            timed = [s for s in rec["stages"] if isinstance(s["metrics"].get("latency_ms"), (int, float))]
            if not timed:  # no stage measured a model (a chain of export / bench only)
                continue
            first = timed[0]["metrics"]
            dense = {k: first.get(k) for k in KEYS}
            final = {k: rec.get(k, first.get(k)) for k in KEYS}
            dense["latency_ms"], final["latency_ms"] = chain_latency(rec, archs)
            a, b = chain_architectures(rec, archs)
            overlaps = overlaps and a is not None and b is not None and within_spread(a, b)
            pruned = first.get("report") if timed[0]["kind"] == "prune" else None
            if isinstance(pruned, dict) and "dense_macs" in pruned:  # a chain that began by pruning a given
                # model (prunus prune --out): its dense size is the prune report's; its accuracy was not measured
                dense = dict.fromkeys(KEYS) | {"macs": pruned["dense_macs"], "params": pruned.get("dense_params")}
                single = False
            else:
                single = single and len(timed) == 1
            dense_rows.append(dense)
            final_rows.append(final)
        if dense_rows:
            out.append(ArmHeadline(arm, len(dense_rows), {k: _mean([r[k] for r in dense_rows]) for k in KEYS},
                                   {k: _mean([r[k] for r in final_rows]) for k in KEYS}, single, overlaps))  # fmt: skip
    return out
