"""Report figures as PNG bytes (matplotlib, Agg backend: no display, no network)."""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

__all__ = ["curves_png", "method_metrics_png", "pareto_png", "per_layer_png", "widths_png"]

DPI = 96


def _figure(width: float = 6.4, height: float = 4.0) -> Any:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt, plt.figure(figsize=(width, height), dpi=DPI)


def _png(plt: Any, fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


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


def pareto_png(points: Sequence[dict[str, Any]], cost: str, label: str) -> bytes:
    """Accuracy vs `cost` for every measured stage; colour = arm, marker = stage kind; Pareto front."""
    plt, fig = _figure()
    ax = fig.gca()
    arms = list(dict.fromkeys(p["arm"] for p in points))
    kinds = list(dict.fromkeys(p["kind"] for p in points))
    markers = "osD^v<>pP*hX"
    for p in points:
        ax.scatter(p[cost], 100 * p["acc"], color=f"C{arms.index(p['arm']) % 10}",
                   marker=markers[kinds.index(p["kind"]) % len(markers)], alpha=0.8)  # fmt: skip
    front = pareto_front([(p[cost], 100 * p["acc"]) for p in points])
    if len(front) > 1:
        ax.step([c for c, _ in front], [a for _, a in front], where="post", color="grey", lw=1, label="Pareto front")
    for i, arm in enumerate(arms):
        ax.scatter([], [], color=f"C{i % 10}", label=f"arm {arm}")
    for i, kind in enumerate(kinds):
        ax.scatter([], [], color="black", marker=markers[i % len(markers)], label=kind)
    ax.set_xlabel(label)
    ax.set_ylabel("test accuracy (%)")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    return _png(plt, fig)


def widths_png(widths: dict[str, dict[str, list[int]]]) -> bytes:
    """Out-channels per conv layer: the first model (outline) against each arm's final model (bars)."""
    plt, fig = _figure(8, 4)
    ax = fig.gca()
    arms = list(widths)
    layers = list(next(iter(widths.values())))
    step = 0.8 / max(len(arms), 1)
    for i, arm in enumerate(arms):
        xs = [j + i * step for j in range(len(layers))]
        ax.bar(xs, [widths[arm][name][0] for name in layers], width=step, fill=False, edgecolor="grey")
        ax.bar(xs, [widths[arm][name][1] for name in layers], width=step, color=f"C{i % 10}", label=f"{arm}: final")
    ax.bar([], [], fill=False, edgecolor="grey", label="first model")
    ax.set_xticks(range(len(layers)))
    ax.set_xticklabels(layers, rotation=90, fontsize=6)
    ax.set_ylabel("output channels")
    ax.legend(fontsize=7)
    return _png(plt, fig)


def curves_png(curves: Sequence[Any]) -> bytes:
    """Test accuracy and training loss per epoch across stages; dotted lines mark stage starts."""
    plt, fig = _figure(8, 4.5)
    acc_ax, loss_ax = fig.subplots(1, 2)
    for i, c in enumerate(curves):
        label = f"{c.arm} s{c.seed}"
        xs = [r["x"] for r in c.rows]
        acc_ax.plot(xs, [100 * r.get("test_acc", float("nan")) for r in c.rows], color=f"C{i % 10}", label=label)
        loss_ax.plot(xs, [r.get("train_loss", float("nan")) for r in c.rows], color=f"C{i % 10}", label=label)
    if curves:
        for x, name in curves[0].boundaries:
            for ax in (acc_ax, loss_ax):
                ax.axvline(x + 0.5, color="grey", ls=":", lw=0.8)
            acc_ax.text(x + 0.6, acc_ax.get_ylim()[0], name, fontsize=6, rotation=90, va="bottom")
    acc_ax.set(xlabel="epoch (all stages)", ylabel="test accuracy (%)")
    loss_ax.set(xlabel="epoch (all stages)", ylabel="training loss")
    acc_ax.legend(fontsize=7)
    return _png(plt, fig)


def method_metrics_png(series: dict[str, dict[str, list[tuple[float, float]]]]) -> bytes:
    """One panel per method prefix (sfp, mfp, we, graft, csgd ...): its logged numbers over epochs."""
    plt, fig = _figure(8, 2.6 * ((len(series) + 1) // 2))
    axes = fig.subplots((len(series) + 1) // 2, 2, squeeze=False).ravel()
    for ax, (prefix, lines) in zip(axes, series.items()):
        for j, (key, pts) in enumerate(lines.items()):
            ax.plot([x for x, _ in pts], [y for _, y in pts], marker=".", color=f"C{j % 10}", label=key)
        ax.set_title(prefix, fontsize=9)
        ax.set_xlabel("epoch (all stages)", fontsize=7)
        ax.legend(fontsize=6)
    for ax in axes[len(series) :]:
        ax.axis("off")
    return _png(plt, fig)


def per_layer_png(layers: Sequence[str], values: dict[str, Sequence[float]], ylabel: str) -> bytes:
    """Per-layer bars of several quantities (e.g. bits used against the bound)."""
    plt, fig = _figure(8, 4)
    ax = fig.gca()
    step = 0.8 / max(len(values), 1)
    for i, (name, vals) in enumerate(values.items()):
        ax.bar([j + i * step for j in range(len(layers))], vals, width=step, color=f"C{i % 10}", label=name)
    ax.set_xticks(range(len(layers)))
    ax.set_xticklabels(layers, rotation=90, fontsize=6)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=7)
    return _png(plt, fig)
