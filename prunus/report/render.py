"""A run's report: summary.md (tables) and a self-contained report.html (tables + embedded PNG plots).

The page opens with the headline (each arm's dense -> final model as ratios), then the arms over
seeds, a grid of figures (accuracy against MACs with stage labels, latency once per distinct
architecture with its quartiles and a note when the machine was busy, widths, training curves),
the stage tables with what each method did, and the methods' per-epoch logs as small multiples.
Panels sit in a CSS grid that uses the page's width; images scale down to their panel.

The HTML has no external resource: styles are inline and every figure is a base64 data URI, so
the file can be mailed or archived as is. Every text from the run (title, arm, stage, metric
names) is HTML-escaped. A tiny inline script records on <body> how many images decoded
(`data-images-decoded="6/6"`): invisible to the reader, read back by the headless-browser test.
"""

from __future__ import annotations

import base64
import html
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from prunus.errors import CorruptFileError
from prunus.formats.outputs import check_output
from prunus.formats.run_dir import RunDir
from prunus.report.collect import RunData, collect
from prunus.report.headline import ONE_MODEL, Architecture, architectures, busy_note, chain_latency, headline
from prunus.report.logs import LOG_COLUMNS, method_logs
from prunus.report.tables import (
    ARCH_COLUMNS,
    ARM_COLUMNS,
    HEADLINE_COLUMNS,
    METHOD_COLUMNS,
    STAGE_COLUMNS,
    arch_rows,
    arm_rows,
    headline_rows,
    method_rows,
    stage_rows,
)

__all__ = ["STAGE_COLUMNS", "arm_rows", "markdown", "render_html", "stage_rows", "write_report"]


def _chains_shown(data: RunData) -> list[dict[str, Any]]:
    """Every chain when there are few; else the first seed of each arm."""
    if len(data.records) <= 4:
        return data.records
    first = {}
    for r in data.records:
        first.setdefault(r["arm"], r)
    return list(first.values())


def _sweep(data: RunData) -> bool:
    return len({r["arm"] for r in data.records}) > 1 or len({r["seed"] for r in data.records}) > 1


def _pooled_records(data: RunData, archs: Sequence[Architecture]) -> list[dict[str, Any]]:
    """The records with each chain's latency replaced by its architecture's pooled median."""
    return [{**r, "latency_ms": chain_latency(r, archs)[1]} for r in data.records]


def _headline_lines(data: RunData, archs: Sequence[Architecture]) -> list[tuple[str, str, list[str]]]:
    """(arm, "(2 seeds)", phrases): ratios, or for an arm that measured one model its figures."""
    out = []
    for h in headline(data.records, archs):
        seeds = f"({h.seeds} seed{'s' if h.seeds > 1 else ''})"
        out.append((h.arm, seeds, h.figures() if h.same_model else h.phrases()))
    return out


def _md_table(columns: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    return lines + ["| " + " | ".join(r) + " |" for r in rows] + [""]


def markdown(data: RunData) -> str:
    """summary.md: the headline, per-stage tables with method figures, arms over seeds, latency, provenance."""
    archs = architectures(data.records)
    lines = [f"# {data.title}", "", "## Headline: dense -> final (mean over seeds)", ""]
    for arm, seeds, phrases in _headline_lines(data, archs):
        lines.append(f"- **{arm}** {seeds}: {', '.join(phrases)}")
    lines.append("")
    lines += _md_table(HEADLINE_COLUMNS, headline_rows(headline(data.records, archs)))
    for rec in _chains_shown(data):
        lines += [f"## Stages: arm {rec['arm']}, seed {rec['seed']}", ""]
        lines += _md_table(STAGE_COLUMNS, stage_rows(rec))
        methods = method_rows(rec)
        if methods:
            lines += _md_table(METHOD_COLUMNS, methods)
    if _sweep(data):
        lines += ["## Arms over seeds", "", f"Paired by seed; differences are arm minus `{data.baseline}`.", ""]
        lines += _md_table(ARM_COLUMNS, arm_rows(_pooled_records(data, archs), data.baseline))
    if archs:
        lines += ["## Latency per distinct architecture", ""]
        lines += _md_table(ARCH_COLUMNS, arch_rows(archs))
        note = busy_note(archs)
        if note:
            lines += [f"**Note:** {note}", ""]
    if data.widths_note:
        lines += [f"**Note:** {data.widths_note}", ""]
    prov = ", ".join(f"{k} {v}" for k, v in data.provenance.items())
    return "\n".join([*lines, f"Provenance: {prov}.", ""])


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


def stage_points(records: Sequence[dict[str, Any]], cost: str) -> list[dict[str, Any]]:
    """One point per (arm, stage) that measured accuracy and `cost`: means over seeds, accuracy std.

    A stage an arm shares with an earlier arm (same name, same numbers) stays on the arm's path but
    is drawn once (`draw` False).
    """
    import statistics

    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    kinds: dict[tuple[str, str], str] = {}
    for r in records:
        for s in r["stages"]:
            m = s["metrics"]
            if m.get("acc") is not None and m.get(cost) is not None:
                groups.setdefault((r["arm"], s["name"]), []).append(m)
                kinds[r["arm"], s["name"]] = s["kind"]
    points, seen = [], set()
    for (arm, stage), ms in groups.items():
        accs = [100 * m["acc"] for m in ms]
        x = statistics.fmean(float(m[cost]) for m in ms)
        y = statistics.fmean(accs)
        ident = json.dumps([stage, ms], sort_keys=True, default=str)  # a shared stage's records are identical
        yerr = statistics.stdev(accs) if len(accs) > 1 else 0.0
        points.append({"arm": arm, "stage": stage, "kind": kinds[arm, stage], "x": x, "y": y, "yerr": yerr,
                       "draw": ident not in seen})  # fmt: skip
        seen.add(ident)
    return points


def _figures(data: RunData, archs: Sequence[Architecture]) -> list[tuple[str, bytes, str]]:
    """(caption, PNG, note) of each main figure."""
    from prunus.report import plots

    figs: list[tuple[str, bytes, str]] = []
    points = stage_points(data.records, "macs")
    if points:
        seeds = len({r["seed"] for r in data.records})
        figs.append(("Accuracy vs MACs: each stage of each arm" + (f", mean over {seeds} seeds (bars: std)"
                     if seeds > 1 else "") + "; grey: Pareto front", plots.pareto_png(points, "MACs"), ""))  # fmt: skip
    if archs:
        calls = "timed calls" if all(a.per_call for a in archs) else "measurements"
        figs.append((f"Latency per distinct architecture (torch, batch 64): median of the pooled {calls}, bars from "
                     "the 25th to the 75th percentile; identical widths are one point", plots.latency_png(archs),
                     busy_note(archs) or ""))  # fmt: skip
    if data.widths:
        figs.append(("Output channels per conv layer: first model vs final model", plots.widths_png(data.widths), ""))
    curves = [c for c in data.curves if c.rows]
    if curves:
        arms = list(dict.fromkeys(r["arm"] for r in data.records))
        figs.append(("Training curves across stages (colour: arm, line style: seed)", plots.curves_png(curves, arms),
                     ""))  # fmt: skip
    bits = _per_layer_bits(data)
    if bits:
        figs.append(("Per-layer compression against the bound", plots.per_layer_png(bits[0], bits[1], "per layer"),
                     ""))  # fmt: skip
    return figs


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _html_table(columns: Sequence[str], rows: Sequence[Sequence[str]], cls: str = "") -> str:
    head = "".join(f"<th>{_e(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(v)}</td>" for v in r) + "</tr>" for r in rows)
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _img(png: bytes, alt: str) -> str:
    uri = "data:image/png;base64," + base64.b64encode(png).decode("ascii")
    return f'<img alt="{_e(alt)}" src="{uri}">'


CSS = """body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:1.2em auto;padding:0 1.5em;
max-width:1800px;color:#222;line-height:1.35}
h1{margin:.2em 0 .4em}h2{margin:1.4em 0 .5em;font-size:1.25em}h3{margin:.1em 0 .5em;font-size:1em}
.headline{background:#f2f6fb;border:1px solid #c8d6e5;border-radius:8px;padding:.7em 1.2em;margin:.8em 0}
.headline ul{margin:.3em 0 .6em;padding-left:1.2em}.headline li{font-size:1.15em;margin:.25em 0}
.ratio{font-weight:600}.note{background:#fff6e0;border:1px solid #e8c872;border-radius:6px;padding:.5em .8em}
.grid{display:grid;grid-template-columns:repeat(auto-fit,minmax(520px,1fr));gap:1em;align-items:start}
.small{grid-template-columns:repeat(auto-fill,minmax(280px,1fr));gap:.6em}
.panel{border:1px solid #ddd;border-radius:8px;padding:.6em .8em;min-width:0;overflow:auto;background:#fff}
figure{margin:0}img{display:block;max-width:100%;height:auto;margin:0 auto}
figcaption{color:#555;font-size:.85em;margin-top:.3em}
table{border-collapse:collapse;font-size:.85em;margin:.3em 0}td,th{border:1px solid #ccc;padding:3px 6px;
text-align:right}th{background:#f6f6f6;font-weight:600}td:first-child,th:first-child{text-align:left}td:first-child{white-space:nowrap}
table.text td,table.text th{text-align:left}table.arch td:nth-child(2){text-align:left}
.fig{font-weight:400}footer{color:#666;font-size:.8em;margin:2em 0 1em}"""
# records how many images decoded on <body data-images-decoded> once the page has loaded (the browser test reads it)
CHECK = """window.addEventListener('load',function(){var i=Array.prototype.slice.call(document.images);
var ok=i.filter(function(x){return x.complete&&x.naturalWidth>0}).length;
document.body.setAttribute('data-images-decoded',ok+'/'+i.length);});"""


def _headline_html(data: RunData, archs: Sequence[Architecture]) -> str:
    items = []
    for arm, seeds, phrases in _headline_lines(data, archs):
        cls = "fig" if phrases and phrases[0] == ONE_MODEL else "ratio"
        body = " · ".join(f'<span class="{cls}">{_e(p)}</span>' for p in phrases)
        items.append(f'<li data-arm="{_e(arm)}"><b>{_e(arm)}</b> {seeds}: {body}</li>')
    if not items:
        return ""
    table = _html_table(HEADLINE_COLUMNS, headline_rows(headline(data.records, archs)))
    note = busy_note(archs)
    return ('<section class="headline" id="headline"><h2>Headline: dense → final model (mean over seeds)</h2>'
            f"<ul>{''.join(items)}</ul>{table}"
            + (f'<p class="note">{_e(note)}</p>' if note else "") + "</section>")  # fmt: skip


def _method_logs_html(data: RunData) -> list[str]:
    from prunus.report import plots

    panels, table = method_logs(data.curves)
    if not panels and not table:
        return []
    parts = ["<h2>What the methods logged per epoch</h2>",
             "<p>One panel per metric, each on its own scale (first seed of each arm); values that do not change "
             "over epochs are in the table.</p>"]  # fmt: skip
    if panels:
        cells = "".join(f'<div class="panel"><figure>{_img(plots.metric_png(k, s), k)}</figure></div>'
                        for k, s in panels.items())  # fmt: skip
        parts.append(f'<div class="grid small" id="method-panels">{cells}</div>')
    if table:
        parts.append(f'<div class="panel">{_html_table(LOG_COLUMNS, table, "text")}</div>')
    return parts


def render_html(data: RunData) -> str:
    """The self-contained report page."""
    archs = architectures(data.records)
    seeds = sorted({r["seed"] for r in data.records})
    arms = list(dict.fromkeys(r["arm"] for r in data.records))
    parts = [f"<h1>{_e(data.title)}</h1>",
             f"<p>{len(arms)} arm{'s' if len(arms) != 1 else ''} ({_e(', '.join(arms))}) × seeds "
             f"{_e(', '.join(map(str, seeds)))}; run directory <code>{_e(data.run_dir.name)}</code>.</p>"]  # fmt: skip
    parts.append(_headline_html(data, archs))
    if _sweep(data):
        parts.append("<h2>Arms over seeds</h2>")
        parts.append(
            f'<div class="panel"><p>Paired by seed; differences are arm minus <code>{_e(data.baseline)}</code>; '
            "latency: the pooled median of the final architecture.</p>"
            + _html_table(ARM_COLUMNS, arm_rows(_pooled_records(data, archs), data.baseline))
            + "</div>"
        )
    figs = _figures(data, archs)
    if figs:
        parts.append("<h2>Figures</h2>")
        cells = []
        for caption, png, note in figs:
            extra = f'<p class="note">{_e(note)}</p>' if note else ""
            cells.append(f'<div class="panel"><figure>{_img(png, caption)}<figcaption>{_e(caption)}</figcaption>'
                         f"</figure>{extra}</div>")  # fmt: skip
        if archs:
            cells.append(f'<div class="panel"><h3>Latency per distinct architecture</h3>'
                         f"{_html_table(ARCH_COLUMNS, arch_rows(archs), 'arch')}</div>")  # fmt: skip
        parts.append(f'<div class="grid" id="figures">{"".join(cells)}</div>')
    if data.widths_note:
        parts.append(f'<p class="note">{_e(data.widths_note)}</p>')
    parts.append("<h2>Stages</h2>")
    cells = []
    for rec in _chains_shown(data):
        methods = method_rows(rec)
        cells.append(f"<div class=\"panel\"><h3>arm {_e(rec['arm'])}, seed {_e(rec['seed'])}</h3>"
                     + _html_table(STAGE_COLUMNS, stage_rows(rec))
                     + (_html_table(METHOD_COLUMNS, methods, "text") if methods else "") + "</div>")  # fmt: skip
    parts.append(f'<div class="grid" id="stages">{"".join(cells)}</div>')
    parts += _method_logs_html(data)
    prov = ", ".join(f"{k} {v}" for k, v in data.provenance.items())
    parts.append(f"<footer>Provenance: {_e(prov)}.</footer>")
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_e(data.title)}</title><style>{CSS}</style></head><body>"
        + "\n".join(p for p in parts if p)
        + f"<script>{CHECK}</script></body></html>\n"
    )


def write_report(
    run_dir: str | os.PathLike[str], title: str | None = None, *, trust_factory: bool = False
) -> dict[str, Path]:
    """Write RUN_DIR/report.html and RUN_DIR/summary.md; returns their paths.

    `trust_factory`: load models a user factory builds (for the layer-width figure; CLI
    `--trust-factory`); without it their widths are left out with a note, never their code run.

    Example:
        >>> write_report("runs/demo")["html"]  # doctest: +SKIP
        PosixPath('runs/demo/report.html')
    """
    data = collect(run_dir, title, trust_factory=trust_factory)
    run = RunDir(run_dir)
    for path in (run.report_md, run.report_html):  # replaced atomically; never a link, FIFO or directory
        check_output(path, "rewrite", flag="report file")
    try:
        text, page = markdown(data), render_html(data)
    except (KeyError, IndexError, TypeError, ValueError, AttributeError) as exc:
        # a stage record in records.json edited or from elsewhere (collect read what it needed): one line
        raise CorruptFileError(
            f"{run.records} does not describe this run directory ({type(exc).__name__}: {exc}); rerun prunus run "
            "to rebuild it"
        ) from None
    run.write_text(run.report_md, text)
    run.write_text(run.report_html, page)
    return {"html": run.report_html, "markdown": run.report_md}
