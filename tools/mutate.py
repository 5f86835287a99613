"""Mutation check: put deliberate one-line bugs into a COPY of the package, one at a time, and see
whether the tests catch each one.

Each mutant in the list (YAML, default `tools/mutants.yaml`) names a file, an exact piece of text
that occurs on exactly one line of it, the replacement for that piece, and the pytest selectors
that should catch it (a few tests, to keep a run short):

    - id: trainer-no-set-epoch
      file: prunus/engine/trainer.py
      find: "self.train_loader.set_epoch(self.epoch)"
      replace: "pass"
      tests: [tests/engine/test_trainer.py::test_every_epoch_draws_a_new_order_and_new_crops]
      why: every epoch replays epoch 0's order and crops

The working tree is never modified: the tracked and untracked-but-not-ignored files are copied
into a temporary directory once, each mutant edits the copy (and is undone before the next one),
and pytest runs there with PYTHONPATH pointing at the copy (checked before the first mutant). The
copy is deleted in a `finally`, so Ctrl-C or a crash leave nothing behind.

Every selection first runs on the unmutated copy: a mutant whose tests fail without it is
reported `invalid`. Outcomes: `killed` (pytest failed), `survived` (pytest passed: the bug is
invisible to those tests), `timeout`, `error` (pytest could not run: bad selector, import error),
`stale` (the `find` text is not on exactly one line any more). The score counts `killed` only.

Usage:
    .venv/bin/python tools/mutate.py                      # every mutant in tools/mutants.yaml
    .venv/bin/python tools/mutate.py --only trainer-no-set-epoch eval-argmin
    .venv/bin/python tools/mutate.py --list my.yaml --json out.json

Exit status: 0 when every mutant was killed, 1 otherwise, 2 for a bad list.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_LIST = ROOT / "tools" / "mutants.yaml"


@dataclass(frozen=True)
class Mutant:
    """One single-line bug: replace `find` by `replace` on the one line of `file` that holds it."""

    id: str
    file: str
    find: str
    replace: str
    tests: tuple[str, ...]
    why: str = ""


@dataclass
class Outcome:
    id: str
    status: str  # killed | survived | timeout | error | stale | invalid
    seconds: float = 0.0
    detail: str = ""
    tests: list[str] = field(default_factory=list)


def load_mutants(path: Path) -> list[Mutant]:
    """Parse and validate the mutant list; a malformed entry raises ValueError naming it."""
    raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(raw, list):
        raise ValueError(f"{path}: expected a list of mutants")
    mutants, seen = [], set()
    for i, entry in enumerate(raw):
        if not isinstance(entry, dict):
            raise ValueError(f"{path}: entry {i} is not a mapping")
        missing = [k for k in ("id", "file", "find", "replace", "tests") if k not in entry]
        if missing:
            raise ValueError(f"{path}: entry {i} ({entry.get('id', '?')}) lacks {', '.join(missing)}")
        tests = entry["tests"]
        if isinstance(tests, str) or not tests or not all(isinstance(t, str) for t in tests):
            raise ValueError(f"{path}: mutant {entry['id']!r}: tests must be a non-empty list of pytest selectors")
        if entry["id"] in seen:
            raise ValueError(f"{path}: duplicate mutant id {entry['id']!r}")
        seen.add(entry["id"])
        mutants.append(
            Mutant(
                str(entry["id"]),
                str(entry["file"]),
                str(entry["find"]),
                str(entry["replace"]),
                tuple(tests),
                str(entry.get("why", "")),
            )
        )
    return mutants


def mutate_text(text: str, find: str, replace: str) -> str | None:
    """`text` with `find` replaced on the one line holding it; None unless exactly one line does."""
    lines = text.splitlines(keepends=True)
    hits = [i for i, line in enumerate(lines) if find in line]
    if len(hits) != 1 or "\n" in find:
        return None
    i = hits[0]
    lines[i] = lines[i].replace(find, replace, 1)
    return "".join(lines)


def _project_files(root: Path) -> list[str]:
    out = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=root,
        check=True,
        capture_output=True,
    ).stdout.decode()
    return [f for f in out.split("\0") if f and (root / f).is_file()]


def _copy_project(root: Path, dest: Path) -> None:
    for rel in _project_files(root):
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / rel, target)


def _env(copy: Path) -> dict[str, str]:
    # PYTHONPATH puts the copy ahead of the editable install; subprocesses (torchrun workers) inherit it
    return dict(os.environ, PYTHONPATH=str(copy), PYTHONDONTWRITEBYTECODE="1", OMP_NUM_THREADS="1")


def _run_pytest(copy: Path, tests: tuple[str, ...], timeout: float) -> tuple[int | None, float, str]:
    """(exit code or None on timeout, seconds, last output lines)."""
    cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "--no-header", *tests]
    start = time.perf_counter()
    proc = subprocess.Popen(
        cmd,
        cwd=copy,
        env=_env(copy),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        out, _ = proc.communicate(timeout=timeout)
        rc: int | None = proc.returncode
    except BaseException:  # timeout or Ctrl-C: take down pytest and anything it spawned
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        if not isinstance(sys.exc_info()[1], subprocess.TimeoutExpired):
            raise
        rc = None
    tail = " | ".join(line for line in out.strip().splitlines()[-3:])
    return rc, time.perf_counter() - start, tail


def _check_import(copy: Path) -> None:
    probe = [sys.executable, "-c", "import prunus, sys; sys.stdout.write(prunus.__file__)"]
    where = subprocess.run(probe, cwd=copy, env=_env(copy), capture_output=True, text=True, check=True).stdout
    if not Path(where).resolve().is_relative_to(copy.resolve()):
        raise RuntimeError(f"the copy is not what Python imports (prunus comes from {where})")


def run(mutants: list[Mutant], timeout: float, root: Path = ROOT, log=print) -> list[Outcome]:
    """Apply each mutant to a fresh copy of `root`'s project files and run its tests there."""
    outcomes: list[Outcome] = []
    tmp = Path(tempfile.mkdtemp(prefix="prunus-mutate-"))
    try:
        copy = tmp / "tree"
        _copy_project(root, copy)
        _check_import(copy)
        baseline: dict[tuple[str, ...], tuple[int | None, str]] = {}
        for m in mutants:
            path = copy / m.file
            original = path.read_text(encoding="utf-8") if path.is_file() else None
            mutated = None if original is None else mutate_text(original, m.find, m.replace)
            if mutated is None:
                outcomes.append(Outcome(m.id, "stale", detail=f"{m.find!r} is not on exactly one line of {m.file}"))
                log(f"{m.id:<40} stale")
                continue
            if m.tests not in baseline:
                rc, _, tail = _run_pytest(copy, m.tests, timeout)
                baseline[m.tests] = (rc, tail)
            rc0, tail0 = baseline[m.tests]
            if rc0 != 0:
                outcomes.append(Outcome(m.id, "invalid", detail=f"tests fail unmutated: {tail0}", tests=list(m.tests)))
                log(f"{m.id:<40} invalid ({tail0})")
                continue
            try:
                path.write_text(mutated, encoding="utf-8")
                rc, seconds, tail = _run_pytest(copy, m.tests, timeout)
            finally:
                path.write_text(original, encoding="utf-8")
            status = {None: "timeout", 0: "survived", 1: "killed"}.get(rc, "error")
            outcomes.append(Outcome(m.id, status, round(seconds, 1), tail, list(m.tests)))
            log(f"{m.id:<40} {status:<9} {seconds:6.1f}s  {tail if status != 'killed' else ''}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return outcomes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument(
        "--list", type=Path, default=DEFAULT_LIST, help="YAML list of mutants (default tools/mutants.yaml)"
    )
    parser.add_argument("--only", nargs="+", metavar="ID", help="run only these mutant ids")
    parser.add_argument("--timeout", type=float, default=600, help="seconds per pytest run (default 600)")
    parser.add_argument("--json", type=Path, help="also write the outcomes as JSON here")
    args = parser.parse_args(argv)
    # `kill` too must unwind through the finally blocks: stop pytest's process group, delete the copy
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        mutants = load_mutants(args.list)
    except (OSError, ValueError, yaml.YAMLError) as exc:
        print(f"mutate: error: {exc}", file=sys.stderr)
        return 2
    if args.only:
        unknown = sorted(set(args.only) - {m.id for m in mutants})
        if unknown:
            print(f"mutate: error: unknown mutant ids {unknown}", file=sys.stderr)
            return 2
        mutants = [m for m in mutants if m.id in args.only]
    outcomes = run(mutants, args.timeout)
    killed = sum(o.status == "killed" for o in outcomes)
    print(f"score: {killed}/{len(outcomes)} killed")
    for o in outcomes:
        if o.status != "killed":
            print(f"  NOT KILLED {o.id}: {o.status} {o.detail}")
    if args.json:
        args.json.write_text(json.dumps([asdict(o) for o in outcomes], indent=2) + "\n", encoding="utf-8")
    return 0 if killed == len(outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
