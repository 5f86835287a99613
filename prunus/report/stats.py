"""Statistics of paired-seed experiments: mean, sample std, paired differences with t intervals.

A sweep runs every arm with the same seeds (same initialisation, same data order), so an arm is
compared with the baseline seed by seed: the mean of the per-seed differences, with a two-sided
95% Student t interval. No scipy: the t quantiles are tabulated.

Example:
    >>> s = summary([0.90, 0.92, 0.91])
    >>> round(s["mean"], 4), round(s["std"], 4), s["n"]
    (0.91, 0.01, 3)
    >>> d = paired_difference({0: 0.91, 1: 0.93}, {0: 0.90, 1: 0.91})
    >>> round(d["mean"], 4), d["n"]
    (0.015, 2)
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["T95", "paired_difference", "summarise_records", "summary", "t95"]

# two-sided 95% t quantiles by degrees of freedom
T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228,
       12: 2.179, 15: 2.131, 20: 2.086, 30: 2.042, 60: 2.000, 120: 1.980}  # fmt: skip


def t95(df: int) -> float:
    """The two-sided 95% t quantile for `df` >= 1 (between tabulated entries the next smaller df:
    slightly conservative).

    Example:
        >>> t95(2), t95(11)
        (4.303, 2.228)
    """
    if df < 1:
        raise ValueError(f"degrees of freedom must be >= 1, got {df}")
    return T95[max(k for k in T95 if k <= df)]


def summary(values: Iterable[float]) -> dict[str, Any]:
    """n, mean and sample std (None where undefined, so the JSON stays standard)."""
    vals = list(values)
    n = len(vals)
    return {
        "n": n,
        "mean": statistics.fmean(vals) if n else None,
        "std": statistics.stdev(vals) if n > 1 else None,
    }


def paired_difference(arm: Mapping[Any, float], base: Mapping[Any, float]) -> dict[str, Any]:
    """Mean of `arm[s] - base[s]` over the seeds both have, with its 95% t interval (low, high)."""
    diffs = [arm[s] - base[s] for s in sorted(arm) if s in base]
    out = summary(diffs)
    if out["std"] is None:
        out.update(low=None, high=None)
    else:
        half = t95(len(diffs) - 1) * out["std"] / math.sqrt(len(diffs))
        out.update(low=out["mean"] - half, high=out["mean"] + half)
    return out


def summarise_records(
    records: Iterable[Mapping[str, Any]],
    metrics: Iterable[str],
    *,
    baseline: str | None = "baseline",
    means: Iterable[str] = ("macs", "params"),
) -> dict[str, dict[str, Any]]:
    """Per arm: the seeds, `summary` of each metric, and its paired difference to `baseline`.

    Args:
        records: One mapping per (arm, seed) with keys "arm", "seed" and the metrics.
        metrics: Keys summarised with mean/std and paired differences (records lacking one skip it).
        baseline: The arm the others are compared with (None: no differences).
        means: Keys only averaged (cost figures that do not vary with the seed).

    Returns:
        {arm: {"seeds": [...], metric: summary, f"{metric}_diff": paired difference, key: mean}},
        arms in the order they first appear.

    Example:
        >>> recs = [{"arm": a, "seed": s, "acc": v} for a, s, v in
        ...         [("baseline", 0, 0.9), ("baseline", 1, 0.8), ("x", 0, 0.85), ("x", 1, 0.8)]]
        >>> round(summarise_records(recs, ["acc"])["x"]["acc_diff"]["mean"], 3)
        -0.025
    """
    metrics, means = list(metrics), list(means)
    by_arm: dict[str, dict[Any, Mapping[str, Any]]] = {}
    for r in records:
        by_arm.setdefault(r["arm"], {})[r["seed"]] = r
    out: dict[str, dict[str, Any]] = {}
    for arm, recs in by_arm.items():
        entry: dict[str, Any] = {"seeds": sorted(recs)}
        for metric in metrics:
            vals = {s: r[metric] for s, r in recs.items() if r.get(metric) is not None}
            if not vals:
                continue
            entry[metric] = summary(vals.values())
            if baseline is not None and arm != baseline and baseline in by_arm:
                base = {s: r[metric] for s, r in by_arm[baseline].items() if r.get(metric) is not None}
                entry[f"{metric}_diff"] = paired_difference(vals, base)
        for key in means:
            vals = [r[key] for r in recs.values() if r.get(key) is not None]
            if vals:
                entry[key] = statistics.fmean(vals)
        out[arm] = entry
    return out
