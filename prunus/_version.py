"""The package version, and where a result came from (`prunus.provenance()`).

pyproject reads `__version__` from here (a plain literal, so no import is needed to read it).

A number without the code version, the machine and the settings that produced it cannot be
checked or repeated (airbench saves results with the code that produced them). Every script in
benchmarks/ merges the `provenance()` record into the JSON it writes, so all results carry the
same fields.

Example:
    >>> p = provenance(config={"epochs": 2})
    >>> sorted(p)
    ['commit', 'config', 'cpus', 'date', 'dirty', 'machine', 'prunus', 'python', 'threads', 'torch']
    >>> p["config"], p["threads"] == torch.get_num_threads()
    ({'epochs': 2}, True)
"""

from __future__ import annotations

import os
import platform
import subprocess
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

__all__ = ["__version__", "git_commit", "provenance"]

__version__ = "0.1.0"

_REPO = Path(__file__).resolve().parents[1]


def git_commit(repo: str | os.PathLike[str] = _REPO) -> tuple[str | None, bool | None]:
    """(short commit hash, whether tracked files other than benchmarks/results/ differ from it) of `repo`;
    (None, None) outside git."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=repo, capture_output=True, text=True, timeout=10
        )
        if head.returncode != 0:
            return None, None
        status = subprocess.run(
            # results being written are not code: a benchmark appending to its runs file is not "dirty"
            ["git", "status", "--porcelain", "--untracked-files=no", "--", ".", ":(exclude)benchmarks/results"],
            cwd=repo,
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.SubprocessError):  # no git binary, or a hung repository
        return None, None
    dirty = bool(status.stdout.strip()) if status.returncode == 0 else None
    return head.stdout.strip() or None, dirty


def provenance(config: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The facts that make a measurement checkable, as JSON-able values.

    Args:
        config: The resolved settings of the run (e.g. `vars(args)` plus defaults); kept as given.

    Returns:
        `{"prunus", "commit", "dirty", "torch", "python", "machine", "cpus", "threads", "date",
        "config"}`: the prunus version and git commit (None outside a checkout; `dirty` when
        tracked files were modified), library versions, "<arch>, <n> cores", torch's intra-op
        thread count, the UTC date, and `config`.
    """
    commit, dirty = git_commit()
    return {
        "prunus": __version__,
        "commit": commit,
        "dirty": dirty,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "cpus": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "config": dict(config or {}),
    }
