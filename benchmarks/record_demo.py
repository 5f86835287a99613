"""Record a finished `make demo` run (RUN_DIR/records.json) as a committed result for the README.

    .venv/bin/python benchmarks/record_demo.py runs/demo --wall-seconds 512 --load "1.9, 2.0, 2.1" \\
        --command "make demo"

Writes benchmarks/results/demo_quickstart.json: the per-stage numbers of the quickstart chain, the
wall time of the whole command, the machine and its load average, and prunus.report provenance.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from _common import write_json

import prunus
from prunus.formats.run_dir import RunDir

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--wall-seconds", type=float, required=True, help="wall time of the whole command")
    ap.add_argument("--load", required=True, help="uptime's load averages while it ran")
    ap.add_argument("--command", default="make demo")
    ap.add_argument("--note", default="")
    args = ap.parse_args()
    records = RunDir(args.run_dir).read_records()["records"]
    write_json(ROOT / "benchmarks" / "results" / "demo_quickstart.json", {
        "command": args.command, "wall_seconds": args.wall_seconds, "load_average": args.load, "note": args.note,
        "record": records[0], "provenance": prunus.provenance(),
    })  # fmt: skip


if __name__ == "__main__":
    main()
