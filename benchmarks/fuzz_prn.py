"""Fuzz the .prn reader: N seeded mutated/truncated/re-signed files must give only the format error.

    .venv/bin/python benchmarks/fuzz_prn.py --n 10000 --seed 0

Compresses a small LeNet-300-100 (width 0.1, random weights, random calibration images), then
decompresses N mutations of its file (`prunus.compress.fuzz.mutations`: truncation, bit flips,
header byte overwrites, inserted/deleted runs, hostile header values and altered streams with a
valid checksum). Any exception other than `FormatError` aborts the run with its traceback.
Writes benchmarks/results/compress_fuzz.json.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from _common import write_json

from prunus import provenance
from prunus.compress import CompressConfig, compress
from prunus.compress.fuzz import fuzz_file
from prunus.models import create_model

RESULTS = Path(__file__).parent / "results"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.manual_seed(0)
    work = Path(tempfile.mkdtemp())
    model = create_model("lenet300_100", in_channels=1, width_mult=0.1).eval()
    cfg = CompressConfig(sparsity=0.8, bits="auto", max_kl=0.05, calib_size=64, rescore_size=0, cycles=2)
    compress(model, torch.randn(96, 1, 28, 28), cfg, out=work / "m.prn", baselines=False)
    start = time.perf_counter()
    counts = fuzz_file(work / "m.prn", args.n, args.seed, work)
    record = {
        "name": "compress_fuzz",
        "command": f"python benchmarks/fuzz_prn.py --n {args.n} --seed {args.seed}",
        "files": args.n,
        "file_bytes": (work / "m.prn").stat().st_size,
        **counts,
        "other_exceptions": 0,  # any other exception would have aborted the run before this line
        "seconds": time.perf_counter() - start,
        **provenance(config={k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}),
    }
    write_json(RESULTS / "compress_fuzz.json", record)
    print(record)


if __name__ == "__main__":
    main()
