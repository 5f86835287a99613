"""What the repository itself holds: a clean clone must set itself up (CI runs `make test` on one)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _tracked() -> list[tuple[str, str]]:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    out = subprocess.run(["git", "ls-files", "-s"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    return [(line.split()[0], line.split("\t", 1)[1]) for line in out.splitlines()]


def test_no_symbolic_link_is_tracked():
    """A committed link (a worktree's `.venv -> /elsewhere/.venv`) breaks the set-up of every clone."""
    links = [path for mode, path in _tracked() if mode == "120000"]
    assert links == []


def test_nothing_from_the_environment_or_runs_is_tracked():
    paths = [path for _, path in _tracked()]
    assert [p for p in paths if p.split("/")[0] in {".venv", "runs", "__pycache__", ".pytest_cache"}] == []
