"""What the methods logged per epoch, laid out for small multiples: one panel per metric, own y scale.

A panel is a metric that changes over at least two epochs (one line per arm, or per sub-key of a
dict-valued metric such as MFP's `scores`). Everything else a method logged (constant numbers,
single values, criterion names, per-layer lists) goes into a table of values instead of a plot
of flat lines. Only the first seed of each arm is read; an arm that shares another's stage shows
the same series, which is drawn once with both arm names.

Example:
    >>> from prunus.report.collect import Curve
    >>> c = Curve("we", 0, rows=[{"x": 1, "we_filters": 3, "we_ratio_conv": 0.2},
    ...                          {"x": 2, "we_filters": 1, "we_ratio_conv": 0.2}])
    >>> panels, table = method_logs([c])
    >>> list(panels), table
    (['we_filters'], [['we_ratio_conv', 'we', 'constant: 0.2 (2 epochs)']])
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from prunus.report.collect import STANDARD_KEYS

__all__ = ["MAX_PANELS", "MAX_SERIES", "method_logs"]

MAX_PANELS = 36  # more metrics than this: the rest go to the table
MAX_SERIES = 8  # lines in one small panel; a dict metric with more sub-keys goes to the table
LOG_COLUMNS = ("metric", "arm", "value")

Series = dict[str, list[tuple[float, float]]]


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _g(v: float) -> str:
    return f"{v:.4g}"


def _first_seed(curves: Sequence[Any]) -> list[Any]:
    first: dict[str, Any] = {}
    for c in curves:
        first.setdefault(c.arm, c)
    return list(first.values())


def _gather(curves: Sequence[Any]) -> tuple[dict[str, Series], dict[tuple[str, str], list[Any]]]:
    """Numeric series per metric (label: arm, or arm + sub-key) and the other values per (metric, arm)."""
    numeric: dict[str, Series] = {}
    other: dict[tuple[str, str], list[Any]] = {}
    # sub-keys of a dict metric are prefixed with the arm only where several arms logged that metric
    logged_by: dict[str, set[str]] = {}
    for c in curves:
        for row in c.rows:
            for key in row:
                logged_by.setdefault(key, set()).add(c.arm)
    for c in curves:
        for row in c.rows:
            for key, value in row.items():
                if key in STANDARD_KEYS or key in ("x", "stage"):
                    continue
                if isinstance(value, dict) and value and all(_number(v) for v in value.values()):
                    for sub, v in value.items():
                        label = f"{c.arm}: {sub}" if len(logged_by[key]) > 1 else str(sub)
                        numeric.setdefault(key, {}).setdefault(label, []).append((row["x"], float(v)))
                elif _number(value):
                    numeric.setdefault(key, {}).setdefault(c.arm, []).append((row["x"], float(value)))
                else:
                    other.setdefault((key, c.arm), []).append(value)
    return numeric, other


def _merge_identical(series: Series) -> Series:
    """Lines with the same points (a stage shared by arms) become one line named after all of them."""
    out: Series = {}
    for label, pts in series.items():
        same = next((k for k, v in out.items() if v == pts), None)
        if same is None:
            out[label] = pts
        else:
            out[f"{same}, {label}"] = out.pop(same)  # e.g. "l1|l2, l2|dist-l2": the same counts
    return out


def _describe_other(values: list[Any]) -> str:
    if all(isinstance(v, str) for v in values):
        shown = ", ".join(values[:12]) + (", ..." if len(values) > 12 else "")
        return f"per epoch: {shown}"
    last = values[-1]
    if isinstance(last, list) and last and all(_number(v) for v in last):
        return f"last epoch: {len(last)} values in [{_g(min(last))}, {_g(max(last))}]"
    if isinstance(last, bool):
        return f"per epoch: {', '.join(str(v).lower() for v in values[:12])}"
    return f"last epoch: {str(last)[:60]}"


def method_logs(curves: Sequence[Any]) -> tuple[dict[str, Series], list[list[str]]]:
    """({metric: {label: [(epoch, value)]}} to plot, one panel each; [[metric, arm, value]] for the table)."""
    numeric, other = _gather(_first_seed([c for c in curves if c.rows]))
    panels: dict[str, Series] = {}
    table: list[list[str]] = []
    for key, series in numeric.items():
        series = _merge_identical(series)
        values = [y for pts in series.values() for _, y in pts]
        varies = max(values) != min(values) and any(len(pts) > 1 for pts in series.values())
        if varies and len(series) <= MAX_SERIES and len(panels) < MAX_PANELS:
            panels[key] = series
            continue
        for label, pts in series.items():
            ys = [y for _, y in pts]
            if len(ys) == 1:
                text = f"{_g(ys[0])} (epoch {pts[0][0]:g})"
            elif min(ys) == max(ys):
                text = f"constant: {_g(ys[0])} ({len(ys)} epochs)"
            else:
                text = f"first {_g(ys[0])}, last {_g(ys[-1])}, range [{_g(min(ys))}, {_g(max(ys))}]"
            table.append([key, label, text])
    for (key, arm), values in other.items():
        table.append([key, arm, _describe_other(values)])
    return panels, table
