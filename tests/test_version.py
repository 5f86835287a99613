"""One provenance record for every result: its fields, the git commit, and every benchmark using it."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
import torch

import prunus
from prunus import provenance
from prunus._version import git_commit

ROOT = Path(__file__).resolve().parents[1]


def test_fields_and_values():
    p = provenance(config={"lr": 0.1, "seeds": [0, 1]})
    assert json.loads(json.dumps(p)) == p  # JSON-able as it is
    assert p["prunus"] == prunus.__version__
    assert p["torch"] == torch.__version__
    assert p["threads"] == torch.get_num_threads()
    assert p["config"] == {"lr": 0.1, "seeds": [0, 1]}
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00", p["date"])
    assert p["machine"].endswith(f"{p['cpus']} cores")


def test_commit_is_the_checkout_head():
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    if head.returncode != 0:
        pytest.skip("not a git checkout (e.g. an sdist)")
    commit, dirty = git_commit(ROOT)
    assert commit == head.stdout.strip()
    assert isinstance(dirty, bool)


def test_dirty_means_code_changed_not_results_being_written(tmp_path):
    def git(*args):
        subprocess.run(["git", "-c", "user.email=t@t", "-c", "user.name=t", *args], cwd=tmp_path, check=True)

    (tmp_path / "benchmarks" / "results").mkdir(parents=True)
    code, runs = tmp_path / "module.py", tmp_path / "benchmarks" / "results" / "x_runs.json"
    code.write_text("x = 1\n")
    runs.write_text("{}\n")
    git("init", "-q")
    git("add", "-A")
    git("commit", "-qm", "start")
    assert git_commit(tmp_path)[1] is False
    runs.write_text('{"records": [1]}\n')  # a benchmark appending a record
    assert git_commit(tmp_path)[1] is False
    code.write_text("x = 2\n")
    assert git_commit(tmp_path)[1] is True


def test_outside_git_there_is_no_commit(tmp_path):
    assert git_commit(tmp_path) == (None, None)


SCRIPTS = sorted(
    p for p in (ROOT / "benchmarks").glob("*.py") if "write_json" in p.read_text() and not p.name.startswith("_")
)  # _x.py: helpers the scripts share (their records carry the scripts' provenance)


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_every_benchmark_records_provenance_and_keeps_no_copy(script):
    text = script.read_text()
    assert "provenance(" in text, f"{script.name} writes results without prunus.provenance()"
    for copy in ("platform.machine()", "datetime.now(timezone.utc)", "git rev-parse"):
        assert copy not in text, f"{script.name} keeps its own {copy} instead of provenance()"


def test_benchmarks_found():
    assert len(SCRIPTS) >= 7
