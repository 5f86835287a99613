"""Report figures as PNG bytes (matplotlib, Agg backend: no display, no network).

Every legend sits outside its axes but inside its figure (saved with a tight bounding box), so
it never hides data and never spills out of its panel. Colour means the arm, marker shape the
stage kind (filled shapes with dark edges, told apart in print), and points carry their stage
names. Text from a run (arm, stage and metric names) is drawn literally, never as mathtext.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

__all__ = [
    "curves_png",
    "latency_png",
    "metric_png",
    "pareto_front",
    "pareto_png",
    "per_layer_png",
    "widths_png",
]

DPI = 96
MARKERS = "osD^vXPh*p<>"  # one per stage kind, in order of first appearance
SMALL = (3.4, 2.3)  # inches: one small-multiple panel


def _figure(width: float = 6.4, height: float = 4.0) -> Any:
    from prunus.errors import require

    matplotlib = require("matplotlib", "report", "the report's figures")  # one line naming the extra
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt, plt.figure(figsize=(width, height), dpi=DPI)


def _png(plt: Any, fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight", pad_inches=0.08)  # the legend outside the axes included
    plt.close(fig)
    return buf.getvalue()


def _t(text: Any) -> str:
    """A run's name as literal text: a `$` would start mathtext (and fail on unbalanced ones)."""
    return str(text).replace("$", r"\$")


def _outside_legend(ax: Any, **kw: Any) -> None:
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        ax.legend(handles, labels, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0, fontsize=7,
                  frameon=False, **kw)  # fmt: skip


def pareto_front(points: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    """The (cost, accuracy) points no other point beats on both (lower cost, higher accuracy), by cost.

    Example:
        >>> pareto_front([(1, 0.5), (2, 0.9), (3, 0.8), (0.5, 0.4)])
        [(0.5, 0.4), (1, 0.5), (2, 0.9)]
    """
    front, best = [], float("-inf")
    for cost, acc in sorted(points, key=lambda p: (p[0], -p[1])):
        if acc > best:
            front.append((cost, acc))
            best = acc
    return front


def _annotate(ax: Any, xy: Sequence[tuple[float, float]], labels: Sequence[str]) -> None:
    """Label each point, moving a label around its point until its box clears the labels already placed."""
    ax.autoscale_view()
    to_px = ax.transData.transform
    k = DPI / 72  # points -> pixels
    choices = [(6, 4, "left"), (6, -12, "left"), (-6, 4, "right"), (-6, -12, "right"), (6, 16, "left"),
               (6, -24, "left")]  # fmt: skip
    placed: list[tuple[float, float, float, float]] = []
    for (x, y), label in zip(xy, labels):
        px, py = to_px((x, y))
        width, height = 5.2 * len(label), 10.0  # 7-point text at 96 dpi
        for dx, dy, ha in choices:
            x0 = px + dx * k - (width if ha == "right" else 0)
            box = (x0, py + dy * k, x0 + width, py + dy * k + height)
            if all(box[2] < b[0] or box[0] > b[2] or box[3] < b[1] or box[1] > b[3] for b in placed):
                break
        placed.append(box)
        ax.annotate(_t(label), (x, y), xytext=(dx, dy), textcoords="offset points", fontsize=7, ha=ha, color="#333")


def pareto_png(points: Sequence[dict[str, Any]], xlabel: str) -> bytes:
    """Accuracy against a cost, one point per (arm, stage) over seeds (mean, bars: std), the front in grey.

    Each point: {"arm", "stage", "kind", "x", "y" (accuracy %), "yerr" (std or 0), "draw" (False: the
    same stage already drawn for another arm: only the arm's path passes through it)}. Points of
    one arm are joined in chain order.
    """
    plt, fig = _figure(6.4, 4.0)
    ax = fig.gca()
    arms = list(dict.fromkeys(p["arm"] for p in points))
    kinds = list(dict.fromkeys(p["kind"] for p in points))
    for i, arm in enumerate(arms):
        path = [p for p in points if p["arm"] == arm]
        if len(path) > 1:
            ax.plot([p["x"] for p in path], [p["y"] for p in path], color=f"C{i % 10}", lw=0.8, alpha=0.45)
    drawn = [p for p in points if p.get("draw", True)]
    for p in drawn:
        colour = f"C{arms.index(p['arm']) % 10}"
        if p.get("yerr"):
            ax.errorbar(p["x"], p["y"], yerr=p["yerr"], color=colour, lw=1, capsize=2, zorder=2)
        ax.scatter(p["x"], p["y"], s=64, color=colour, marker=MARKERS[kinds.index(p["kind"]) % len(MARKERS)],
                   edgecolors="#222", linewidths=0.7, zorder=3)  # fmt: skip
    xy = [(p["x"], p["y"]) for p in drawn]
    _annotate(ax, xy, [str(p["stage"]) for p in drawn])
    front = pareto_front(xy)
    if len(front) > 1:
        ax.step([c for c, _ in front], [a for _, a in front], where="post", color="grey", lw=1, ls="--",
                label="Pareto front", zorder=1)  # fmt: skip
    for i, arm in enumerate(arms):
        ax.scatter([], [], s=64, color=f"C{i % 10}", marker="s", label=f"arm {_t(arm)}")
    for i, kind in enumerate(kinds):
        ax.scatter([], [], s=64, color="white", edgecolors="#222", marker=MARKERS[i % len(MARKERS)], label=_t(kind))
    ax.set_xlabel(xlabel)
    ax.set_ylabel("test accuracy (%)")
    ax.grid(alpha=0.3)
    _outside_legend(ax)
    return _png(plt, fig)


def latency_png(archs: Sequence[Any]) -> bytes:
    """Latency against MACs, ONE point per distinct architecture: pooled median, bars = quartiles.

    `archs`: `prunus.report.headline.Architecture` values. Points timed on a busy machine are
    drawn hollow.
    """
    plt, fig = _figure(6.4, 4.0)
    ax = fig.gca()
    xy = [(float(a.macs or 0), a.median) for a in archs]
    for a, (x, y) in zip(archs, xy):
        hollow = a.busy > 0
        ax.errorbar(x, y, yerr=[[y - a.q25], [a.q75 - y]], color="C0", lw=1.2, capsize=4, zorder=2)
        ax.scatter(x, y, s=64, marker="o", color="white" if hollow else "C0", edgecolors="C0" if hollow else "#222",
                   linewidths=1.2, zorder=3)  # fmt: skip
    labels = []
    for a in archs:
        names = a.stage_names
        labels.append(", ".join(names[:3]) + (f" +{len(names) - 3}" if len(names) > 3 else "") + f" (n={a.n})")
    ax.set_ylim(bottom=0)
    _annotate(ax, xy, labels)
    ax.scatter([], [], s=64, marker="o", color="C0", edgecolors="#222", label="median, bars: quartiles")
    if any(a.busy for a in archs):
        ax.scatter([], [], s=64, marker="o", color="white", edgecolors="C0", label="timed on a busy machine")
    ax.set_xlabel("MACs")
    ax.set_ylabel("latency (ms, torch, batch 64)")
    ax.grid(alpha=0.3)
    _outside_legend(ax)
    return _png(plt, fig)


def widths_png(widths: dict[str, dict[str, list[int]]]) -> bytes:
    """Out-channels per conv layer: the first model (outline) against each arm's final model (bars)."""
    plt, fig = _figure(8, 3.6)
    ax = fig.gca()
    arms = list(widths)
    layers = list(next(iter(widths.values())))
    step = 0.8 / max(len(arms), 1)
    for i, arm in enumerate(arms):
        xs = [j + i * step for j in range(len(layers))]
        ax.bar(xs, [widths[arm][name][0] for name in layers], width=step, fill=False, edgecolor="grey")
        ax.bar(xs, [widths[arm][name][1] for name in layers], width=step, color=f"C{i % 10}",
               label=f"{_t(arm)}: final")  # fmt: skip
    from matplotlib.patches import Patch

    handles, labels = ax.get_legend_handles_labels()
    ax.legend([*handles, Patch(fill=False, edgecolor="grey")], [*labels, "first model"], loc="upper left",
              bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0, fontsize=7, frameon=False)  # fmt: skip
    ax.set_xticks(range(len(layers)))
    ax.set_xticklabels([_t(n) for n in layers], rotation=90, fontsize=6)
    ax.set_ylabel("output channels")
    return _png(plt, fig)


def curves_png(curves: Sequence[Any], arms: Sequence[str]) -> bytes:
    """Test accuracy and training loss per epoch across stages (colour: arm, line style: seed)."""
    plt, fig = _figure(8, 3.4)
    acc_ax, loss_ax = fig.subplots(1, 2)
    seeds = list(dict.fromkeys(c.seed for c in curves))
    styles = ["-", "--", ":", "-."]
    for c in curves:
        colour, ls = f"C{list(arms).index(c.arm) % 10}", styles[seeds.index(c.seed) % len(styles)]
        xs = [r["x"] for r in c.rows]
        acc_ax.plot(xs, [100 * r.get("test_acc", float("nan")) for r in c.rows], color=colour, ls=ls,
                    label=f"{_t(c.arm)} s{c.seed}")  # fmt: skip
        loss_ax.plot(xs, [r.get("train_loss", float("nan")) for r in c.rows], color=colour, ls=ls)
    if curves:
        for x, name in curves[0].boundaries:
            for ax in (acc_ax, loss_ax):
                ax.axvline(x + 0.5, color="grey", ls=":", lw=0.8)
            acc_ax.text(x + 0.6, acc_ax.get_ylim()[0], _t(name), fontsize=6, rotation=90, va="bottom")
    acc_ax.set(xlabel="epoch (all stages)", ylabel="test accuracy (%)")
    loss_ax.set(xlabel="epoch (all stages)", ylabel="training loss")
    handles, labels = acc_ax.get_legend_handles_labels()
    if handles:
        loss_ax.legend(handles, labels, loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=7, frameon=False)
    return _png(plt, fig)


def metric_png(title: str, series: dict[str, Sequence[tuple[float, float]]]) -> bytes:
    """One small panel: one logged metric over epochs, on its own y scale (one line per arm or sub-key)."""
    plt, fig = _figure(*SMALL)
    ax = fig.gca()
    for j, (label, pts) in enumerate(series.items()):
        ax.plot([x for x, _ in pts], [y for _, y in pts], marker=".", ms=4, lw=1, color=f"C{j % 10}",
                label=_t(label))  # fmt: skip
    ax.set_title(_t(title), fontsize=8)
    ax.xaxis.get_major_locator().set_params(integer=True)  # epochs
    ax.tick_params(labelsize=6)
    ax.set_xlabel("epoch (all stages)", fontsize=6)
    ax.grid(alpha=0.3)
    if len(series) > 1:  # below the axes, short labels in columns: the panel keeps its width
        handles, labels = ax.get_legend_handles_labels()
        labels = [t if len(t) <= 24 else t[:23] + "…" for t in labels]
        ax.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, -0.28), ncol=2, fontsize=6,
                  frameon=False)  # fmt: skip
    return _png(plt, fig)


def per_layer_png(layers: Sequence[str], values: dict[str, Sequence[float]], ylabel: str) -> bytes:
    """Per-layer bars of several quantities (e.g. bits used against the bound)."""
    plt, fig = _figure(8, 3.6)
    ax = fig.gca()
    step = 0.8 / max(len(values), 1)
    for i, (name, vals) in enumerate(values.items()):
        ax.bar([j + i * step for j in range(len(layers))], vals, width=step, color=f"C{i % 10}", label=_t(name))
    ax.set_xticks(range(len(layers)))
    ax.set_xticklabels([_t(n) for n in layers], rotation=90, fontsize=6)
    ax.set_ylabel(ylabel)
    _outside_legend(ax)
    return _png(plt, fig)
