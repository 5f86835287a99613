"""Grafting overhead per network under torch.distributed (one network per rank) vs plain training.

Arms, each two networks trained at once on the same 2-core machine, one CPU thread each, the same
fixed Fashion-MNIST subset, seeds 0 and 1, so both arms load the machine the same way:

- `plain`: two separate `prunus train` processes (no method);
- `graft`: `torchrun --standalone --nproc_per_node=2 -m prunus train --method graft` (one network
  per rank; layers exchanged with collectives at every epoch end).

The figure is the median over networks and epochs (the first epoch dropped as warm-up) of
`train_seconds` (the training steps and the epoch-end hooks, grafting's exchange included;
evaluation excluded), graft over plain. Rounds alternate which arm goes first.

    .venv/bin/python benchmarks/bench_graft_distributed.py [--subset 2000] [--epochs 4] [--rounds 3]

Writes benchmarks/results/graft_distributed_overhead.json.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import write_json

from prunus import provenance
from prunus.formats.run_dir import RunDir

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}  # the same for both arms (torchrun would set it anyway)


def _common(args: argparse.Namespace) -> list[str]:
    # a small test split: evaluation is not timed (train_seconds) but would dominate the wall time
    config = args.workdir / "train.yaml"  # the --config of every run below
    config.write_text(
        "version: 1\nmodel: {name: resnet20}\n"
        f"data: {{name: fashion-mnist, subset: {args.subset}, val_size: {args.val_size}, test_subset: 500}}\n"
    )
    return ["--config", str(config), "--epochs", str(args.epochs), "--threads", "1", "--no-progress"]


def _epoch_seconds(run_dir: Path) -> list[float]:
    """train_seconds of every epoch but the first, of every network's metrics log in run_dir."""
    run = RunDir(run_dir)
    out = []
    for net in run.networks() or [run]:
        out += [r["train_seconds"] for r in net.read_metrics()[1:]]
    return out


def _plain(args: argparse.Namespace, where: Path) -> list[float]:
    procs = [
        subprocess.Popen(
            [str(BIN / "prunus"), "train", *_common(args), "--seed", str(s), "--out", str(where / f"p{s}")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=ENV,
        )  # fmt: skip
        for s in (0, 1)
    ]
    for p in procs:
        _, err = p.communicate()
        if p.returncode:
            raise SystemExit(f"plain run failed: {err.decode()[-2000:]}")
    return _epoch_seconds(where)


def _graft(args: argparse.Namespace, where: Path) -> list[float]:
    cmd = [str(BIN / "torchrun"), "--standalone", "--nproc_per_node=2", "-m", "prunus", "train", *_common(args),
           "--method", "graft", "--seed", "0", "--out", str(where / "g")]  # fmt: skip
    res = subprocess.run(cmd, capture_output=True, text=True, env=ENV)
    if res.returncode:
        raise SystemExit(f"graft run failed: {res.stderr[-2000:]}")
    return _epoch_seconds(where)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--subset", type=int, default=2000)
    ap.add_argument("--val-size", type=int, default=500)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "graft_distributed_overhead.json")
    args = ap.parse_args()
    work = tempfile.TemporaryDirectory()
    args.workdir = Path(work.name)
    load_before = os.getloadavg()
    times: dict[str, list[float]] = {"plain": [], "graft": []}
    rounds = []
    for r in range(args.rounds):
        order = ("plain", "graft") if r % 2 == 0 else ("graft", "plain")
        row = {}
        for arm in order:
            with tempfile.TemporaryDirectory() as tmp:
                start = time.perf_counter()
                secs = (_plain if arm == "plain" else _graft)(args, Path(tmp))
                row[arm] = {"median_train_seconds": statistics.median(secs), "wall": time.perf_counter() - start}
                times[arm] += secs
        rounds.append(row)
        print(f"round {r}: " + ", ".join(f"{a} {v['median_train_seconds']:.2f} s" for a, v in row.items()))
    ratio = statistics.median(times["graft"]) / statistics.median(times["plain"])
    per_round = [x["graft"]["median_train_seconds"] / x["plain"]["median_train_seconds"] for x in rounds]
    result = {
        "name": "graft_distributed_overhead",
        "definition": "median train_seconds per network and epoch (first epoch dropped), grafting under torchrun "
        "(2 ranks, 1 thread each) over two plain prunus train processes (1 thread each), ResNet-20, Fashion-MNIST",
        "ratio": ratio,
        "per_round_ratio": per_round,
        "target": "<= 1.05",
        "rounds": rounds,
        "load_before": load_before,
        "load_after": os.getloadavg(),
        "command": "benchmarks/bench_graft_distributed.py " + " ".join(sys.argv[1:]),
        **provenance(config={k: str(v) for k, v in vars(args).items() if k != "workdir"}),
    }
    write_json(args.out, result)
    print(
        f"grafting per network under torchrun / plain: {ratio:.3f} (rounds: {', '.join(f'{x:.3f}' for x in per_round)})"
    )


if __name__ == "__main__":
    main()
