"""Every benchmark script imports cleanly: a renamed helper must not leave a script dead until someone reruns it."""

from __future__ import annotations

import importlib.util
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
