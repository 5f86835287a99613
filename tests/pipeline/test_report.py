"""The run report renders in a real headless Chromium with every image decoded."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from prunus.cli import main

ROOT = Path(__file__).resolve().parents[2]


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    pytest.skip("no headless Chromium on this machine (apt-get install chromium; tools/setup.sh does it as root)")


def test_report_renders_in_headless_chromium_with_every_image_decoded(finished, tmp_path):
    run_dir, _, _ = finished
    assert main(["report", str(run_dir), "--title", "tiny report"]) == 0
    page = run_dir / "report.html"
    text = page.read_text()
    assert "http://" not in text
    assert "https://" not in text
    n_images = text.count("<img ")
    assert n_images >= 4  # Pareto views (MACs, latency), widths, training curves, method metrics
    dom = subprocess.run(
        [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={tmp_path / 'profile'}",
         "--virtual-time-budget=10000", "--dump-dom", page.resolve().as_uri()],
        capture_output=True, text=True, timeout=120,
    ).stdout  # fmt: skip
    check = re.search(r'<p id="image-check">images decoded: (\d+)/(\d+)</p>', dom)
    assert check, dom[-500:]
    assert check.group(1) == check.group(2) == str(n_images)  # every embedded PNG decoded in the browser
    # the per-stage table: one row per chain stage, with accuracy and MACs
    rows = re.findall(r"<tr><td>([\w-]+)</td><td>(\w+)</td><td>([\d.]+%|—)</td><td>([\d,]+|—)</td>", dom)
    assert [r[0] for r in rows] == ["baseline", "csgd", "prune", "finetune", "export", "bench"]
    assert all(r[2].endswith("%") for r in rows[:4])
    assert rows[4][2] == "—"
    assert "<h1>tiny report</h1>" in dom
    summary = (run_dir / "summary.md").read_text()
    assert "| baseline | train |" in summary
    assert "Provenance: prunus" in summary


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
            elif self._in in ("h1", "h2"):
                self.headings.append(data)

    page = Page()
    page.feed(render_html(data))
    assert "b" not in page.tags
    assert "i" not in page.tags
    assert "<b>prune</b>" in page.cells
    assert "prune&cut" in page.cells
    assert "x<y&z" in page.cells
    assert "Stages: arm x<y&z, seed 0" in page.headings
    assert "t & <i>" in page.headings
