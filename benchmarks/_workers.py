"""Several processes working through one benchmark's (arm, seed) jobs, sharing one results file.

A 2-core machine finishes a multi-hour accuracy protocol in about half the time with two
single-thread workers. Each job is claimed with an exclusive claim file holding the worker's PID
(a claim whose process is gone is taken over, and that run resumes from its checkpoint); finished
records are appended to `<name>_runs.json` under a file lock, re-read each time so no worker
overwrites another's. Not a benchmark itself: the accuracy scripts import it.

    for w in 1 2; do .venv/bin/python benchmarks/accuracy_pruning.py --threads 1 & done; wait
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

from _common import write_json

Job = tuple[str, int]  # (arm, seed)


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on `path` (created if missing) while workers update shared files."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def load_records(runs_file: Path) -> list[dict[str, Any]]:
    """The records finished so far (none when the file does not exist yet)."""
    return json.loads(runs_file.read_text())["records"] if runs_file.exists() else []


def claim(path: Path) -> bool:
    """Claim one job for this process; take over a claim whose process has died."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        try:
            os.kill(int(path.read_text() or 0), 0)
            return False  # a live worker has it
        except (ValueError, ProcessLookupError):
            path.unlink(missing_ok=True)  # its worker died: this one resumes the run from its checkpoint
            return claim(path)
        except PermissionError:
            return False  # alive, another user's process
    with os.fdopen(fd, "w") as f:
        f.write(str(os.getpid()))
    return True


def run_jobs(
    jobs: Iterable[Job],
    *,
    tag: str,
    runs_file: Path,
    work_dir: Path,
    run: Callable[[str, int], dict[str, Any]],
) -> list[Job]:
    """Run every unfinished, unclaimed job of `tag` (in the given order); returns the jobs not finished yet.

    `run(arm, seed)` returns the job's record; `tag`, `arm` and `seed` are added to it. An empty
    result means every job of `tag` has a record: the caller may write the summary.
    """
    jobs = list(jobs)
    lock = work_dir / f"{tag}.lock"

    def finished() -> set[Job]:
        return {(r["arm"], r["seed"]) for r in load_records(runs_file) if r["tag"] == tag}

    for arm, seed in jobs:
        token = work_dir / tag / f"{arm}-s{seed}.claim"
        with locked(lock):
            if (arm, seed) in finished() or not claim(token):
                continue
        print(f"[{datetime.now():%H:%M:%S}] {arm} seed {seed} ({tag}) pid {os.getpid()}", flush=True)
        record = {"tag": tag, "arm": arm, "seed": seed, **run(arm, seed)}
        with locked(lock):  # re-read: another worker may have appended since
            write_json(runs_file, {"records": [*load_records(runs_file), record]})
            token.unlink(missing_ok=True)
    with locked(lock):
        done = finished()
    missing = [job for job in jobs if job not in done]
    if missing:  # another worker is still on these: it writes the summary when it finishes
        print(f"[{datetime.now():%H:%M:%S}] still running elsewhere: {missing}", flush=True)
    return missing
