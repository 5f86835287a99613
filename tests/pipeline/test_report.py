"""The run report renders in a real headless Chromium: every image decoded, no panel overflowing, the
headline's ratios equal to the run's own records, the self-check invisible to the reader."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from prunus.cli import main

ROOT = Path(__file__).resolve().parents[2]
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]  # fmt: skip
# injected into a copy of the page: after layout, which panels (or their images) are wider or taller than
# their box, whether the page scrolls sideways, and whether the image check is visible text
PROBE = """<script>window.addEventListener('load',function(){setTimeout(function(){
var bad=[],p=document.querySelectorAll('.panel');
for(var i=0;i<p.length;i++){var r=p[i].getBoundingClientRect();
 if(p[i].scrollWidth>p[i].clientWidth+1||p[i].scrollHeight>p[i].clientHeight+1)bad.push('panel'+i);
 var im=p[i].querySelectorAll('img');for(var j=0;j<im.length;j++){var q=im[j].getBoundingClientRect();
  if(q.right>r.right+1||q.left<r.left-1||q.width<50)bad.push('img'+i+'.'+j);}}
var b=document.body;b.setAttribute('data-probe-panels',p.length);b.setAttribute('data-probe-overflow',bad.join(','));
b.setAttribute('data-probe-page',document.documentElement.scrollWidth>window.innerWidth?'scrolls':'fits');
b.setAttribute('data-probe-visible',b.innerText.indexOf('images decoded')>=0?'yes':'no');},0);});</script>"""


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    pytest.skip("no headless Chromium on this machine (apt-get install chromium; tools/setup.sh does it as root)")


def _dom(page: Path, profile: Path, width: int) -> str:
    return subprocess.run(
        [_chromium(), *FLAGS, f"--user-data-dir={profile}", f"--window-size={width},2000",
         "--virtual-time-budget=10000", "--dump-dom", page.resolve().as_uri()],
        capture_output=True, text=True, timeout=120,
    ).stdout  # fmt: skip


def _attr(dom: str, name: str) -> str:
    m = re.search(rf'<body[^>]*\s{name}="([^"]*)"', dom)
    assert m, f"no {name} on <body>: {dom[:300]}"
    return m.group(1)


def _expected_headline(run_dir: Path) -> list[str]:
    """The chain's dense -> final ratios, from records.json and the per-call latencies, with numpy."""
    rec = json.loads((run_dir / "records.json").read_text())["records"][0]
    timed = [s["metrics"] for s in rec["stages"] if "latency_ms" in s["metrics"]]
    pooled: dict[str, list[float]] = {}
    for m in timed:
        pooled.setdefault(m["arch_key"], []).extend(m["latency_times_ms"])
    dense, final = timed[0], {k: rec[k] for k in ("acc", "macs", "params", "bytes")}
    a, b = pooled[timed[0]["arch_key"]], pooled[timed[-1]["arch_key"]]
    lat = np.median(a) / np.median(b)
    (a25, a75), (b25, b75) = np.percentile(a, [25, 75]), np.percentile(b, [25, 75])
    spread = " (within the timing spread)" if a25 <= b75 and b25 <= a75 else ""  # quartile ranges overlap

    def ratio(r: float, fewer: str, more: str, noun: str) -> str:
        if abs(r - 1) < 0.005:  # the headline's rule: within 0.5% is the same (timings land there now and then)
            return f"same{noun or ' latency'}"
        shown = max(r, 1 / r)
        factor = f"{shown:.0f}x" if shown >= 10 else f"{shown:.1f}x"
        return f"{factor} {fewer if r > 1 else more}{noun}"

    out = [ratio(dense[k] / final[k], w, m, n) for k, w, m, n in
           (("macs", "fewer", "more", " MACs"), ("params", "fewer", "more", " params"),
            ("bytes", "smaller", "larger", " file"))]  # fmt: skip
    return [
        *out,
        ratio(lat, "faster", "slower", "") + spread,
        f"{100 * (final['acc'] - dense['acc']):+.1f} pt accuracy",
    ]


def test_report_renders_in_headless_chromium_decoded_within_its_panels_with_its_headline(finished, tmp_path):
    run_dir, _, _ = finished
    assert main(["report", str(run_dir), "--title", "tiny report"]) == 0
    page = run_dir / "report.html"
    text = page.read_text()
    assert "http://" not in text
    assert "https://" not in text
    n_images = text.count("<img ")
    assert n_images >= 6  # MACs, latency, widths, curves + one panel per varying SFP / C-SGD metric
    probe = tmp_path / "probe.html"
    probe.write_text(text.replace("</body>", PROBE + "</body>"))
    for width in (1400, 1000):
        dom = _dom(probe, tmp_path / f"profile{width}", width)
        assert _attr(dom, "data-images-decoded") == f"{n_images}/{n_images}"  # every embedded PNG decoded
        assert int(_attr(dom, "data-probe-panels")) >= n_images
        assert _attr(dom, "data-probe-overflow") == ""  # no panel scrolls; every image fits its panel
        assert _attr(dom, "data-probe-page") == "fits"
        assert _attr(dom, "data-probe-visible") == "no"  # the self-check is not shown to the reader
    # the headline: dense -> final ratios of the chain, as numpy computes them from the records
    item = re.search(r'<li data-arm="main">(.*?)</li>', dom).group(1)
    assert re.findall(r'<span class="ratio">([^<]*)</span>', item) == _expected_headline(run_dir)
    assert "Headline: dense → final model" in dom
    # the per-stage table: one row per chain stage, with accuracy and MACs
    rows = re.findall(r"<tr><td>([\w-]+)</td><td>(\w+)</td><td>([\d.]+%|—)</td><td>([\d,]+|—)</td>", dom)
    assert [r[0] for r in rows] == ["baseline", "csgd", "prune", "finetune", "export", "bench"]
    assert all(r[2].endswith("%") for r in rows[:4])
    assert rows[4][2] == "—"
    assert "<h1>tiny report</h1>" in dom
    summary = (run_dir / "summary.md").read_text()
    assert "| baseline | train |" in summary
    assert "Provenance: prunus" in summary
    assert "- **main** (1 seed): " + ", ".join(_expected_headline(run_dir)) in summary


def test_report_of_a_directory_without_records_fails_cleanly(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    assert "has no records.json" in capsys.readouterr().err


def test_html_cells_and_headings_are_escaped(tmp_path):
    """A `<` or `&` in a stage or arm name (a records.json from elsewhere) is text on the page, not markup."""
    from html.parser import HTMLParser

    from prunus.report.collect import RunData
    from prunus.report.render import render_html

    stages = [{"name": "<b>prune</b>", "kind": "prune&cut", "metrics": {"acc": 0.5, "macs": 10}, "seconds": 1.0}]
    records = [
        {"arm": arm, "seed": 0, "stages": stages, "acc": acc, "macs": 10}
        for arm, acc in (("base", 0.5), ("x<y&z", 0.25))
    ]  # fmt: skip
    data = RunData(tmp_path, "t & <i>", "base", records, [], {}, {"prunus": "0"})

    class Page(HTMLParser):
        def __init__(self):
            super().__init__()
            self.tags, self.cells, self.headings, self._in = [], [], [], None

        def handle_starttag(self, tag, attrs):
            self.tags.append(tag)
            self._in = tag

        def handle_endtag(self, tag):
            self._in = None

        def handle_data(self, data):
            if self._in == "td":
                self.cells.append(data)
            elif self._in in ("h1", "h2", "h3"):
                self.headings.append(data)

    page = Page()
    page.feed(render_html(data))
    assert "b" not in page.tags
    assert "i" not in page.tags
    assert "<b>prune</b>" in page.cells
    assert "prune&cut" in page.cells
    assert "x<y&z" in page.cells
    assert "arm x<y&z, seed 0" in page.headings  # each chain is a panel headed by its arm and seed
    assert "t & <i>" in page.headings
