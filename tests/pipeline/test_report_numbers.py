"""The report's numbers: latency timed with its spread and pooled once per architecture, the busy-machine
note, the headline's ratios, and a page whose run names cannot inject markup."""

from __future__ import annotations

import os
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import torch

from prunus.formats import save
from prunus.models import create_model
from prunus.models.info import update_info
from prunus.pipeline._stage_metrics import LATENCY_REPEATS, arch_key, measure
from prunus.report import plots
from prunus.report.collect import Curve, RunData
from prunus.report.headline import architectures, busy_note, headline
from prunus.report.render import markdown, render_html
from prunus.report.tables import arch_rows


def _net(width: float, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = create_model("resnet20", width_mult=width, in_channels=1, num_classes=4)
    update_info(model, input_shape=(1, 8, 8))
    return model


def test_stage_latency_keeps_every_timed_call_its_quartiles_the_load_and_the_architecture(tmp_path):
    torch.set_num_threads(1)
    model = _net(0.25, 0)
    m = measure(model, save(model, tmp_path / "m"), threads=1, accuracy=0.5)
    times = m["latency_times_ms"]
    assert len(times) == LATENCY_REPEATS
    assert all(t > 0 for t in times)
    assert m["latency_ms"] == float(np.median(times))  # the field older records have: still the median
    q25, q75 = np.percentile(times, [25, 75])
    assert m["latency_iqr_ms"] == pytest.approx(q75 - q25)
    assert m["latency_cpus"] == os.cpu_count()
    assert m["latency_load"] >= 0.0
    assert (m["acc"], m["macs"], m["params"]) == (0.5, m["macs"], sum(p.numel() for p in model.parameters()))
    # the fingerprint: the same widths with other weights share it; another width does not
    assert m["arch_key"] == arch_key(_net(0.25, 1)) != arch_key(_net(0.5, 0))


def _stage(name, key, times, macs, *, acc=None, load=None, cpus=2, **more):
    metrics = {"acc": acc, "macs": macs, "params": macs // 10, "bytes": macs * 4, "latency_ms": float(np.median(times)),
               "latency_times_ms": times, "arch_key": key, "latency_load": load, "latency_cpus": cpus, **more}  # fmt: skip
    return {"name": name, "kind": name, "metrics": metrics, "seconds": 1.0, "dir": name}


def _records():
    """Two seeds of a pruned arm and a baseline arm: the dense architecture is timed four times."""
    recs = []
    for seed, (dense, final) in enumerate([([10.0, 11.0, 30.0], [4.0, 5.0, 6.0]), ([12.0, 13.0, 14.0], [5.0, 5.5])]):
        acc0, acc1 = (0.90, 0.883) if seed == 0 else (0.92, 0.909)
        stages = [_stage("train", "dense", dense, 300, acc=acc0, load=1.0),
                  _stage("prune", "small", final, 100, acc=acc1, load=1.5)]  # fmt: skip
        recs.append({"arm": "pruned", "seed": seed, "stages": stages, "acc": acc1, "macs": 100, "params": 10,
                     "bytes": 400 if seed == 0 else 420, "latency_ms": stages[1]["metrics"]["latency_ms"]})  # fmt: skip
        base = _stage("train", "dense", [20.0 + seed, 21.0], 300, acc=acc0, load=1.0)
        recs.append({"arm": "baseline", "seed": seed, "stages": [base], "acc": acc0, "macs": 300, "params": 30,
                     "bytes": 1200, "latency_ms": base["metrics"]["latency_ms"]})  # fmt: skip
    return recs


def test_identical_architectures_are_one_measurement_with_every_call_pooled():
    archs = architectures(_records())
    assert [a.key for a in archs] == ["dense", "small"]  # six stages, two architectures
    dense_calls = [10.0, 11.0, 30.0, 20.0, 21.0, 12.0, 13.0, 14.0, 21.0, 21.0]
    assert sorted(archs[0].times) == sorted(dense_calls)
    assert archs[0].median == float(np.median(dense_calls))
    assert (archs[0].q25, archs[0].q75) == tuple(float(q) for q in np.percentile(dense_calls, [25, 75]))
    assert (archs[1].median, archs[1].n) == (float(np.median([4.0, 5.0, 6.0, 5.0, 5.5])), 5)
    row = arch_rows(archs)[0]
    q25, q75 = np.percentile(dense_calls, [25, 75])
    assert row[0] == "1"
    assert row[2] == "300"
    assert row[4] == f"{np.median(dense_calls):.2f}"
    assert row[5] == f"{q25:.2f} – {q75:.2f}"
    assert row[6] == "10"
    # a stage record shared by two arms (the runner's same_as copy) is one measurement, not two
    recs = _records()
    recs.append({**recs[0], "arm": "copy"})
    assert [a.n for a in architectures(recs)] == [10, 5]
    # records from before per-call times: the stages' medians, grouped by MACs and params
    old = [{**r, "stages": [{**s, "metrics": {k: v for k, v in s["metrics"].items() if not k.startswith(("arch",
            "latency_t", "latency_l", "latency_c"))}} for s in r["stages"]]} for r in _records()]  # fmt: skip
    archs = architectures(old)
    assert [(a.key, a.n, a.per_call) for a in archs] == [("macs=300,params=30", 4, False), ("macs=100,params=10", 2,
                                                                                           False)]  # fmt: skip
    assert "did not record the machine's load" in busy_note(archs)


def test_latency_figure_draws_the_spread():
    from prunus.report.headline import Architecture

    spread = Architecture("a", 100, 10, times=[3.0, 5.0, 5.0, 6.0, 9.0], stages=["x/seed 0/prune"])
    flat = Architecture("a", 100, 10, times=[5.0, 5.0, 5.0, 5.0, 5.0], stages=["x/seed 0/prune"])
    assert spread.median == flat.median == 5.0
    assert spread.n == flat.n
    assert plots.latency_png([spread]) != plots.latency_png([flat])  # only the quartile bars differ


def test_busy_machine_note_names_the_load_and_how_many_measurements():
    recs = _records()
    assert busy_note(architectures(recs)) is None  # loads 1.0 and 1.5 on 2 CPUs: quiet
    recs[0]["stages"][1]["metrics"]["latency_load"] = 7.3
    note = busy_note(architectures(recs))
    assert "in 1 of 6 measurements (up to 7.3 on 2 CPUs)" in note
    assert arch_rows(architectures(recs))[1][7] == "7.3 / 2 (busy)"


def test_headline_ratios_are_dense_over_final_means_over_seeds():
    recs = _records()
    heads = {h.arm: h for h in headline(recs)}
    # MACs 300 -> 100; params 30 -> 10 (the chain's final numbers); bytes 1200 -> mean(400, 420) = 410;
    # latency: the pooled medians of the two architectures; accuracy: mean of (0.883-0.90, 0.909-0.92)
    lat = float(np.median([10.0, 11.0, 30.0, 20.0, 21.0, 12.0, 13.0, 14.0, 21.0, 21.0])) / 5.0
    assert heads["pruned"].phrases() == ["3.0x fewer MACs", "3.0x fewer params", f"{1200 / 410:.1f}x smaller file",
                                         f"{lat:.1f}x faster", "-1.4 pt accuracy"]  # fmt: skip
    assert heads["pruned"].seeds == 2
    assert not heads["pruned"].same_model
    assert heads["baseline"].same_model
    assert heads["baseline"].figures()[:3] == ["one model measured", "91.00% test accuracy", "300 MACs"]
    # a final latency whose quartiles overlap the dense model's is not claimed as a change
    for r in recs:
        for st in r["stages"]:
            if st["metrics"]["arch_key"] == "small":
                st["metrics"]["latency_times_ms"] = [9.0, 14.0, 15.0]
    (slow,) = [h for h in headline(recs) if h.arm == "pruned"]
    assert slow.phrases()[3] == f"{lat * 5.0 / 14.0:.1f}x faster (within the timing spread)"
    # a chain that began by pruning a given model (prunus prune --out): the dense size is the prune report's
    stage = _stage("prune", "small", [5.0], 100, acc=0.8)
    stage["metrics"]["report"] = {"dense_macs": 450, "dense_params": 20}
    (head,) = headline([{"arm": "main", "seed": 0, "stages": [stage], "acc": 0.8, "macs": 100, "params": 10}])
    assert head.phrases() == ["4.5x fewer MACs", "2.0x fewer params"]


class _Page(HTMLParser):
    """Every start tag and the text inside <h1>, <td>, <li> and <figcaption>."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.text: dict[str, list[str]] = {}
        self.open: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.open.append(tag)

    def handle_endtag(self, tag):
        if self.open and self.open[-1] == tag:
            self.open.pop()

    def handle_data(self, data):
        if self.open and self.open[-1] in ("h1", "td", "code", "b"):
            self.text.setdefault(self.open[-1], []).append(data)


NASTY_ARM = "a<b>&amp;</b>"
NASTY_STAGE = "<script>alert(1)</script>"


def test_run_names_are_escaped_everywhere_on_the_page():
    recs = _records()
    recs[0]["arm"] = recs[1]["arm"] = NASTY_ARM
    recs[0]["stages"][1]["name"] = NASTY_STAGE
    rows = [{"x": 1, "stage": "s", "m<i>$\\bad{$": 1.0, "crit": "<img src=x>"},
            {"x": 2, "stage": "s", "m<i>$\\bad{$": 2.0, "crit": "<img src=x>"}]  # fmt: skip
    data = RunData(Path("runs/<x>"), "T & <em>title</em>", "baseline", recs, [Curve(NASTY_ARM, 0, rows=rows)], {},
                   {"machine": "<b>"})  # fmt: skip
    page = render_html(data)
    parser = _Page()
    parser.feed(page)
    assert "script" in parser.tags
    assert parser.tags.count("script") == 1
    assert not {"em", "i"} & set(parser.tags)
    assert parser.tags.count("img") == page.count('<img alt="')  # only the report's own figures
    assert "<x>" in parser.text["code"]
    assert parser.text["h1"] == ["T & <em>title</em>"]
    assert NASTY_STAGE in parser.text["td"]  # the stage tables show the name as text
    assert NASTY_ARM in parser.text["b"]  # the headline names the arm as text
    assert "<img src=x>" in " ".join(parser.text["td"])  # a logged string, in the table of values
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert 'data-arm="a&lt;b&gt;&amp;amp;&lt;/b&gt;"' in page
    assert NASTY_STAGE in markdown(data)  # summary.md is text: names as they are


def test_records_from_an_older_prunus_still_render():
    """Stage records without per-call times, load or fingerprint: medians pooled by (MACs, params), a note."""
    old = [{**r, "stages": [{**s, "metrics": {k: v for k, v in s["metrics"].items() if k in
            ("acc", "macs", "params", "bytes", "latency_ms")}} for s in r["stages"]]} for r in _records()]  # fmt: skip
    page = render_html(RunData(Path("old"), "old", "baseline", old, [], {}, {}))
    assert page.count("<img ") == 2  # accuracy vs MACs, latency per architecture
    assert "4 stage medians" in page
    assert "2 stage medians" in page
    assert "did not record the machine&#x27;s load" in page
    assert "3.0x fewer MACs" in page


def test_a_stage_record_without_its_numbers_is_one_line_not_a_traceback(tmp_path, capsys):
    from prunus.cli import main

    (tmp_path / "records.json").write_text(
        '{"records": [{"arm": "main", "seed": 0, "stages": [{"name": "x", "dir": "x"}]}]}'
    )
    assert main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "records.json does not describe this run directory (KeyError: 'metrics')" in err
    assert "Traceback" not in err
    assert not (tmp_path / "report.html").exists()
