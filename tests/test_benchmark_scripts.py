"""Every benchmark script imports cleanly: a renamed helper must not leave a script dead until someone reruns it."""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
SCRIPTS = sorted(p for p in BENCHMARKS.glob("*.py") if not p.name.startswith("_"))  # _x.py: shared helpers


def test_scripts_found():
    assert len(SCRIPTS) >= 10, SCRIPTS


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.stem)
def test_script_imports_and_has_a_main(script: Path, monkeypatch: pytest.MonkeyPatch):
    # some scripts import siblings by name, as they do when run as `python benchmarks/x.py`
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    spec = importlib.util.spec_from_file_location(f"_bench_{script.stem}", script)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)
    spec.loader.exec_module(module)  # runs the imports, not main(): __name__ is not "__main__"
    assert callable(getattr(module, "main", None)), f"{script.name} has no main()"
    assert (module.__doc__ or "").strip(), f"{script.name} has no docstring saying how to run it"


def _load(script: str, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    spec = importlib.util.spec_from_file_location(f"_bench_{script}_unit", BENCHMARKS / f"{script}.py")
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)
    spec.loader.exec_module(module)
    return module


def _reactivation_job(job: str, seed: int, acc: float) -> dict:
    net = {
        "last_test_acc": acc,
        "best_val_epoch": 9,
        "best_val_test_acc": acc - 0.001,
        "invalid": {"0.1": 1, "0.01": 0},
    }
    record = {"tag": "t", "arm": job, "seed": seed, "seconds": 1.0, "networks": [net]}
    if job in ("pop2", "graft2-same-lr", "graft2-diff-lr"):
        record["networks"] = [net, dict(net, last_test_acc=acc + 0.01)]
        record["ensemble_test_acc"] = acc + 0.02
    if job.startswith("graft2"):
        record["invalid_before_last_graft"] = {"0.1": 2, "0.01": 1}
    return record


def test_reactivation_table_lists_missing_jobs_and_pairs_only_recorded_seeds(tmp_path, monkeypatch):
    """A protocol run piecewise: the table says which jobs are missing and summarises what exists."""
    module = _load("accuracy_reactivation", monkeypatch)
    args = argparse.Namespace(
        model="mobilenetv2", width_mult=1.0, data="fashion-mnist", subset=10000, val_size=5000, epochs=10, name="r"
    )
    records = [
        _reactivation_job("pop2", 0, 0.85),
        _reactivation_job("pop2", 1, 0.80),
        _reactivation_job("we-paper", 0, 0.86),
        _reactivation_job("graft", 0, 0.5),  # a job of the retired post-graft protocol: not read
    ]
    for record, threads, commit, dirty in zip(records, (1, 2, 1, 1), ("abc", "abc", "def", "abc"), (0, 0, 1, 0)):
        record.update(threads=threads, commit=commit, dirty=bool(dirty), machine="m")
    assert module.current_records(records, "t") == records[:3]
    module.write_table(args, "t", [1], records[:3], tmp_path)
    out = json.loads((tmp_path / "r_mobilenetv2.json").read_text())
    # quick protocol: seeds 0, 1, 2 are expected whatever this worker was asked to run
    assert out["settings"]["seeds"] == [0, 1, 2]
    assert len(out["settings"]["missing"]) == 15 - 3
    assert "graft2-same-lr seed 0" in out["settings"]["missing"]
    assert "pop2 seed 2" in out["settings"]["missing"]
    assert "pop2 seed 0" not in out["settings"]["missing"]
    summary = out["summary"]
    assert summary["baseline"]["last_test_acc"]["n"] == 2  # network 0 of pop2 is the baseline
    assert summary["ensemble2"]["last_test_acc"]["mean"] == pytest.approx((0.87 + 0.82) / 2)
    assert summary["we"]["last_test_acc_diff"]["n"] == 1  # paired on seed 0 only
    assert summary["we"]["last_test_acc_diff"]["mean"] == pytest.approx(0.01)
    text = (tmp_path / "r_mobilenetv2.md").read_text()
    # listed by seed, then job
    assert "**Incomplete: 12 job(s) not run yet (graft2-same-lr seed 0, graft2-diff-lr seed 0, we-code seed 0," in text
    assert "- baseline: seed 0: 1 / 0, seed 1: 1 / 0" in text
    # how the jobs ran: the usual thread count, and the jobs that differ (they pair less tightly)
    assert "Jobs ran at 1 torch thread(s), except pop2 seed 1 (2); machine m; commits abc, def (dirty)." in text

    complete = [_reactivation_job(j, s, 0.85 + 0.01 * i) for s in (0, 1, 2) for i, j in enumerate(module.JOBS)]
    module.write_table(args, "t", [0, 1, 2], complete, tmp_path)
    out = json.loads((tmp_path / "r_mobilenetv2.json").read_text())
    assert out["settings"]["missing"] == []
    summary = out["summary"]
    assert list(summary) == list(module.ARMS)
    # each grafting job gives three different numbers: network 0, the mean of both, their ensemble
    for job, stem in (("graft2-same-lr", "graft2"), ("graft2-diff-lr", "graft2-difflr")):
        acc = 0.85 + 0.01 * list(module.JOBS).index(job)
        assert summary[stem]["last_test_acc"]["mean"] == pytest.approx(acc)
        assert summary[f"{stem}-mean"]["last_test_acc"]["mean"] == pytest.approx(acc + 0.005)
        assert summary[f"{stem}-ensemble"]["last_test_acc"]["mean"] == pytest.approx(acc + 0.02)
    assert summary["we-reference-rules"]["last_test_acc"]["mean"] == pytest.approx(0.85 + 0.04)
    text = (tmp_path / "r_mobilenetv2.md").read_text()
    assert "Incomplete" not in text
    assert "(just before the last graft: 2 / 1, 2 / 1, 2 / 1)" in text

    # a custom protocol expects only the seeds asked for and recorded
    smoke = argparse.Namespace(**{**vars(args), "epochs": 2})
    module.write_table(smoke, "t", [0], [_reactivation_job(j, 0, 0.5) for j in module.JOBS], tmp_path)
    assert json.loads((tmp_path / "r_mobilenetv2.json").read_text())["settings"]["missing"] == []


def test_profile_ort_counts_macs_with_the_padded_shapes_onnxruntime_runs(monkeypatch: pytest.MonkeyPatch):
    """The profile's `macs_as_run` must use the weight shape as run (8 outputs padded to 16 count as 16)."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    spec = importlib.util.spec_from_file_location("_bench_profile_ort_macs", BENCHMARKS / "profile_ort.py")
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)
    spec.loader.exec_module(module)
    rows = [
        {"op": "com.microsoft.nchwc:Conv", "weight": [16, 8, 3, 3], "output": [64, 16, 28, 28], "ms": 1.0},
        {"op": "ai.onnx:Conv", "weight": [32, 1, 3, 3], "output": [2, 32, 7, 7], "ms": 1.0},  # depthwise
        {"op": "ai.onnx:Gemm", "weight": [10, 64], "output": [64, 10], "ms": 1.0},
        {"op": "com.microsoft.nchwc:ReorderOutput", "weight": [], "output": [64, 8, 28, 28], "ms": 1.0},
    ]
    assert module._macs_as_run(rows) == 64 * 28 * 28 * 16 * 8 * 9 + 2 * 7 * 7 * 32 * 9 + 64 * 640
    groups = module._groups(rows + [dict(rows[0], ms=2.0)])
    assert (groups[0]["nodes"], groups[0]["ms"]) == (2, 3.0)
    assert len(groups) == 4
