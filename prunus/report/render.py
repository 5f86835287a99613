"""A run's report: summary.md (tables) and a self-contained report.html (tables + embedded PNG plots).

The HTML has no external resource: styles are inline and every figure is a base64 data URI, so
the file can be mailed or archived as is. A tiny inline script writes into the page how many
images decoded (`#image-check`), which the headless-browser test reads back.
"""

from __future__ import annotations

import base64
import html
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from prunus.formats.outputs import check_output
from prunus.formats.run_dir import RunDir
from prunus.report.collect import STANDARD_KEYS, RunData, collect
from prunus.report.stats import summarise_records

__all__ = ["arm_rows", "markdown", "render_html", "stage_rows", "write_report"]

STAGE_COLUMNS = ("stage", "kind", "test acc", "MACs", "params", "bytes on disk", "latency (ms, batch 64)", "time (s)")
ARM_COLUMNS = ("arm", "n", "test acc (mean ± std)", "diff vs baseline [95% t]", "MACs", "params", "bytes",
               "latency (ms)")  # fmt: skip


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


def _md_table(columns: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    return lines + ["| " + " | ".join(r) + " |" for r in rows] + [""]


def _chains_shown(data: RunData) -> list[dict[str, Any]]:
    """Every chain when there are few; else the first seed of each arm."""
    if len(data.records) <= 4:
        return data.records
    first = {}
    for r in data.records:
        first.setdefault(r["arm"], r)
    return list(first.values())


def markdown(data: RunData) -> str:
    """summary.md: per-stage tables, the arms-over-seeds table, provenance."""
    lines = [f"# {data.title}", ""]
    for rec in _chains_shown(data):
        lines += [f"## Stages: arm {rec['arm']}, seed {rec['seed']}", ""]
        lines += _md_table(STAGE_COLUMNS, stage_rows(rec))
    if len({r["arm"] for r in data.records}) > 1 or len({r["seed"] for r in data.records}) > 1:
        lines += ["## Arms over seeds", "", f"Paired by seed; differences are arm minus `{data.baseline}`.", ""]
        lines += _md_table(ARM_COLUMNS, arm_rows(data.records, data.baseline))
    prov = ", ".join(f"{k} {v}" for k, v in data.provenance.items())
    return "\n".join([*lines, f"Provenance: {prov}.", ""])


def _method_series(data: RunData) -> dict[str, dict[str, list[tuple[float, float]]]]:
    """Numbers methods logged per epoch (first chain), grouped by prefix: sfp_*, mfp_*, we_*, graft_* ..."""
    if not data.curves:
        return {}
    out: dict[str, dict[str, list[tuple[float, float]]]] = {}
    for row in data.curves[0].rows:
        for key, value in row.items():
            if key in STANDARD_KEYS or key in ("x", "stage"):
                continue
            items = value.items() if isinstance(value, dict) else [("", value)]
            for sub, v in items:
                if isinstance(v, bool) or not isinstance(v, (int, float)):
                    continue
                name = f"{key}.{sub}" if sub else key
                out.setdefault(key.split("_")[0], {}).setdefault(name, []).append((row["x"], float(v)))
    return out


def _per_layer_bits(data: RunData) -> tuple[list[str], dict[str, list[float]]] | None:
    """Bits (or bytes) per layer against the bound, when a compress stage recorded them."""
    for rec in data.records[:1]:
        for s in rec["stages"]:
            layers = s["metrics"].get("layers")
            if isinstance(layers, list) and layers and isinstance(layers[0], dict):
                names = [str(x.get("name", i)) for i, x in enumerate(layers)]
                keys = [
                    k for k in ("bits", "bound", "bytes") if all(isinstance(x.get(k), (int, float)) for x in layers)
                ]
                if keys:
                    return names, {k: [float(x[k]) for x in layers] for k in keys}
    return None


def _figures(data: RunData) -> list[tuple[str, bytes]]:
    from prunus.report import plots

    figs: list[tuple[str, bytes]] = []
    points = [{"arm": r["arm"], "kind": s["kind"], **s["metrics"]} for r in data.records for s in r["stages"]
              if s["metrics"].get("acc") is not None]  # fmt: skip
    if points:
        figs.append(("Accuracy vs MACs, every stage of every chain (Pareto front in grey)",
                     plots.pareto_png([p for p in points if p.get("macs")], "macs", "MACs")))  # fmt: skip
        timed = [p for p in points if p.get("latency_ms")]
        if timed:
            figs.append(
                ("Accuracy vs latency (torch, batch 64)", plots.pareto_png(timed, "latency_ms", "latency (ms)"))
            )
    if data.widths:
        figs.append(("Output channels per conv layer: first model vs final model", plots.widths_png(data.widths)))
    if any(c.rows for c in data.curves):
        figs.append(("Training curves across stages", plots.curves_png([c for c in data.curves if c.rows])))
    series = _method_series(data)
    if series:
        figs.append(("What the methods logged per epoch (first chain)", plots.method_metrics_png(series)))
    bits = _per_layer_bits(data)
    if bits:
        figs.append(("Per-layer compression against the bound", plots.per_layer_png(bits[0], bits[1], "per layer")))
    return figs


def _html_table(columns: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(v)}</td>" for v in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


CSS = """body{font-family:sans-serif;max-width:1000px;margin:2em auto;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}
td:first-child,th:first-child{text-align:left}figure{margin:1.5em 0}img{max-width:100%}
figcaption{color:#555;font-size:90%}"""
# counts decoded images into #image-check once the page has loaded (read by the browser test)
CHECK = """window.addEventListener('load',function(){var i=Array.prototype.slice.call(document.images);
var ok=i.filter(function(x){return x.complete&&x.naturalWidth>0}).length;
document.getElementById('image-check').textContent='images decoded: '+ok+'/'+i.length;});"""


def render_html(data: RunData) -> str:
    """The self-contained report page."""
    parts = [f"<h1>{html.escape(data.title)}</h1>"]
    for rec in _chains_shown(data):
        parts.append(f"<h2>Stages: arm {html.escape(rec['arm'])}, seed {rec['seed']}</h2>")
        parts.append(_html_table(STAGE_COLUMNS, stage_rows(rec)))
    if len({r["arm"] for r in data.records}) > 1 or len({r["seed"] for r in data.records}) > 1:
        parts.append("<h2>Arms over seeds</h2>")
        parts.append(
            f"<p>Paired by seed; differences are arm minus <code>{html.escape(str(data.baseline))}</code>.</p>"
        )
        parts.append(_html_table(ARM_COLUMNS, arm_rows(data.records, data.baseline)))
    for caption, png in _figures(data):
        uri = "data:image/png;base64," + base64.b64encode(png).decode("ascii")
        parts.append(f'<figure><img alt="{html.escape(caption)}" src="{uri}"><figcaption>{html.escape(caption)}'
                     "</figcaption></figure>")  # fmt: skip
    prov = ", ".join(f"{k} {v}" for k, v in data.provenance.items())
    parts.append(f"<p><small>Provenance: {html.escape(prov)}.</small></p>")
    parts.append('<p id="image-check">images not checked</p>')
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(data.title)}</title><style>{CSS}</style></head><body>"
        + "\n".join(parts)
        + f"<script>{CHECK}</script></body></html>\n"
    )


def write_report(run_dir: str | os.PathLike[str], title: str | None = None) -> dict[str, Path]:
    """Write RUN_DIR/report.html and RUN_DIR/summary.md; returns their paths.

    Example:
        >>> write_report("runs/demo")["html"]  # doctest: +SKIP
        PosixPath('runs/demo/report.html')
    """
    data = collect(run_dir, title)
    run = RunDir(run_dir)
    for path in (run.report_md, run.report_html):  # replaced atomically; never a link, FIFO or directory
        check_output(path, "rewrite", flag="report file")
    run.write_text(run.report_md, markdown(data))
    run.write_text(run.report_html, render_html(data))
    return {"html": run.report_html, "markdown": run.report_md}
