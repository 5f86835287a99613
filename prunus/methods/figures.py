"""What a method's per-epoch log comes to: the few figures a stage records and a table shows.

A training stage's metrics.jsonl holds every epoch's numbers; a reader of `prunus run`'s table
wants one line per method: how many filters Weight Evolution re-initialised, the grafting
coefficient and whether invalid filters went away, how far C-SGD's merge moved the logits, which
criteria MFP chose. `method_figures(rows)` reduces the log to flat JSON keys the stage record
keeps; `describe(metrics)` turns a record's metrics (those keys and the C-SGD merge numbers the
run's summary already has) into `(method, text)` lines. Both know every key they use, here only.

Example:
    >>> rows = [{"we_filters": 3, "we_bn_channels": 1}, {"we_filters": 2, "we_bn_channels": 0}]
    >>> method_figures(rows)
    {'we_filters_evolved': 5, 'we_bn_channels_evolved': 1, 'we_epochs': 2}
    >>> describe(method_figures(rows))
    [('we', '5 filters evolved (+1 BN channels) in 2 evolutions')]
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["describe", "method_figures"]

_INVALID = re.compile(r"graft_invalid_([0-9.e-]+)")  # graft logs graft_invalid_<threshold>[_after]


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _values(rows: Sequence[Mapping[str, Any]], key: str) -> list[Any]:
    return [r[key] for r in rows if key in r]


def method_figures(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The figures of WE, grafting, MFP and SFP-like methods in a run's per-epoch log (flat JSON keys).

    - `we_filters_evolved`, `we_bn_channels_evolved`: totals over the epochs (each epoch logs its count);
      `we_epochs`: epochs that evolved.
    - `graft_alpha_mean`: the mean over epochs of each epoch's mean coefficient; per threshold t,
      `graft_invalid_<t>_first` (before the first graft) and `graft_invalid_<t>_last` (after the last).
    - `mfp_choices`: {criterion: epochs it was chosen}; `mfp_criterion_final`: the one in use at the end.
    - `<name>_regrown_total`: channels an SFP-like method (sfp, fpgm, mfp) let grow back, in total.
    """
    out: dict[str, Any] = {}
    we = [v for v in _values(rows, "we_filters") if _number(v)]
    if we:
        out["we_filters_evolved"] = int(sum(we))
        out["we_bn_channels_evolved"] = int(sum(v for v in _values(rows, "we_bn_channels") if _number(v)))
        out["we_epochs"] = len(we)
    alphas = [v for v in _values(rows, "graft_alpha_mean") if _number(v)]
    if alphas:
        out["graft_alpha_mean"] = sum(alphas) / len(alphas)
    thresholds = dict.fromkeys(m.group(1) for r in rows for k in r if (m := _INVALID.fullmatch(k)))
    for t in thresholds:
        before = [v for v in _values(rows, f"graft_invalid_{t}") if _number(v)]
        after = [v for v in _values(rows, f"graft_invalid_{t}_after") if _number(v)]
        if before:
            out[f"graft_invalid_{t}_first"] = int(before[0])
        if after:
            out[f"graft_invalid_{t}_last"] = int(after[-1])
    touched = [v for v in _values(rows, "graft_touched") if _number(v)]
    if touched:
        out["graft_touched_total"] = int(sum(touched))
    choices = [v for v in _values(rows, "mfp_choice") if isinstance(v, str)]
    if choices:
        out["mfp_choices"] = dict(Counter(choices).most_common())
    criteria = [v for v in _values(rows, "mfp_criterion") if isinstance(v, str)]
    if criteria:
        out["mfp_criterion_final"] = criteria[-1]
    for key in dict.fromkeys(k for r in rows for k in r if k.endswith("_regrown")):
        out[f"{key}_total"] = int(sum(v for v in _values(rows, key) if _number(v)))
    return out


def _g(x: float) -> str:
    return f"{x:.3g}"


def describe(metrics: Mapping[str, Any]) -> list[tuple[str, str]]:
    """One `(method, text)` line per method whose figures `metrics` (a stage record's) holds.

    Example:
        >>> describe({"csgd_max_logit_diff": 0.0071, "csgd_trained_acc": 0.9, "csgd_merged_acc": 0.897})
        [('csgd', 'max logit diff 0.0071 at the merge; test acc 90.00% -> 89.70%')]
    """
    m = metrics
    parts: dict[str, list[str]] = {}
    if _number(m.get("we_filters_evolved")):
        bn = m.get("we_bn_channels_evolved")
        extra = f" (+{bn} BN channels)" if _number(bn) and bn else ""
        parts.setdefault("we", []).append(
            f"{m['we_filters_evolved']} filters evolved{extra} in {_epochs(m.get('we_epochs'))}"
        )
    if _number(m.get("graft_alpha_mean")):
        parts.setdefault("graft", []).append(f"alpha {m['graft_alpha_mean']:.3f} (mean)")
    for key in m:
        hit = re.fullmatch(r"graft_invalid_(.+)_first", key)
        last = m.get(f"graft_invalid_{hit.group(1)}_last") if hit else None
        if hit and _number(m[key]) and _number(last):
            parts.setdefault("graft", []).append(f"invalid filters (L1 < {hit.group(1)}) {m[key]} -> {last}")
    if _number(m.get("graft_touched_total")):
        parts.setdefault("graft", []).append(f"{m['graft_touched_total']} filters touched")
    if _number(m.get("csgd_max_logit_diff")):
        text = f"max logit diff {_g(m['csgd_max_logit_diff'])} at the merge"
        if _number(m.get("csgd_trained_acc")) and _number(m.get("csgd_merged_acc")):
            text += f"; test acc {100 * m['csgd_trained_acc']:.2f}% -> {100 * m['csgd_merged_acc']:.2f}%"
        parts.setdefault("csgd", []).append(text)
    choices = m.get("mfp_choices")
    if isinstance(choices, Mapping) and choices:
        text = "chose " + ", ".join(f"{k} x{v}" for k, v in choices.items())
        if isinstance(m.get("mfp_criterion_final"), str):
            text += f", ends on {m['mfp_criterion_final']}"
        parts.setdefault("mfp", []).append(text)
    for key in m:
        if key.endswith("_regrown_total") and _number(m[key]):
            parts.setdefault(key[: -len("_regrown_total")], []).append(f"{m[key]} channels regrown")
    return [(name, "; ".join(texts)) for name, texts in parts.items()]


def _epochs(n: object) -> str:
    """ "1 evolution" / "3 evolutions" (WE runs at the start of every epoch but the first)."""
    return f"{n} evolution{'' if n == 1 else 's'}" if isinstance(n, int) else "? evolutions"
