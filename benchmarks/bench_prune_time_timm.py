"""Prune time over timm's CNN families: prunus vs Torch-Pruning side by side, medians of repeats.

The coverage benchmark (`coverage_timm.py`) times one prune per model and arm inside a long end-to-end
check, in separate worker processes, and takes about an hour for 152 models on 2 cores. This one
times only the prune, on the same plan (one model per family, `coverage_timm.json`'s "plan"), in one
process with 1 thread: per model, the two arms are interleaved (alternating which goes first),
`--repeats` times each, on fresh copies of the same randomly initialised model (seed 0,
`prunus.create_model("timm:NAME", num_classes=10, **plan kwargs)`, input 1x3x64x64):

- prunus: `prunus.prune(model, x, keep_macs=0.5)` (the whole public call, as in the coverage run);
- Torch-Pruning: `tp.pruner.BasePruner(model, x, importance=GroupMagnitudeImportance(p=1),
  pruning_ratio=1 - sqrt(0.5), ignored_layers=[timm's stem and classifier])` + `step()`.

A call over `--cap` seconds is stopped (SIGALRM) and recorded as such; an arm that took more than
`--cap / repeats` seconds is not repeated. The figure is the median over the models both arms
pruned of (median prunus seconds / median Torch-Pruning seconds). Both libraries are warmed up once
on a small conv net first (first-call costs stay out).

    PYTHONPATH=$PWD .venv/bin/python benchmarks/bench_prune_time_timm.py [--repeats 3] [--models a b]

Writes benchmarks/results/prune_time_timm.json. timm needs the tests' torchvision stand-in where
no torchvision loads (as `coverage_timm.py` does).
"""

from __future__ import annotations

import argparse
import copy
import os
import signal
import statistics
import time
import warnings
from pathlib import Path
from typing import Any

from _common import print_table, read_json, write_json
from _timm_families import SHAPE, torchvision_or_stand_in
from coverage_timm import TP_RATIO, _warm_up

RESULTS = Path(__file__).parent / "results"


class _Cap(Exception):
    pass


def _capped(fn: Any, cap: float) -> tuple[float | None, str | None]:
    """(seconds, None), or (None, why) when `fn` raised or ran past `cap` seconds."""

    def stop(*_: Any) -> None:
        raise _Cap

    old = signal.signal(signal.SIGALRM, stop)
    signal.setitimer(signal.ITIMER_REAL, cap)
    start = time.perf_counter()
    try:
        fn()
        return time.perf_counter() - start, None
    except _Cap:
        return None, f"over {cap:g} s"
    except Exception as exc:
        return None, f"{type(exc).__name__}: {str(exc).splitlines()[0][:120] if str(exc) else ''}"
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def time_model(name: str, kwargs: dict[str, Any], repeats: int, cap: float) -> dict[str, Any]:
    """Interleaved prune timings of both arms on fresh copies of one model."""
    import torch
    import torch_pruning as tp

    import prunus
    from prunus.models.info import get_info

    torch.manual_seed(0)
    dense = prunus.create_model(f"timm:{name}", num_classes=10, **kwargs).eval()
    ignored = list(get_info(dense).ignored)
    x = torch.zeros(1, *SHAPE)

    def run_prunus(model: Any) -> None:
        prunus.prune(model, x, keep_macs=0.5)

    def run_tp(model: Any) -> None:
        skip = [model.get_submodule(n) for n in ignored]
        importance = tp.importance.GroupMagnitudeImportance(p=1)
        tp.pruner.BasePruner(model, x, importance=importance, pruning_ratio=TP_RATIO, ignored_layers=skip).step()

    arms = {"prunus": run_prunus, "torch_pruning": run_tp}
    out: dict[str, Any] = {a: {"seconds": [], "error": None} for a in arms}
    for r in range(repeats):
        for arm in ("prunus", "torch_pruning") if r % 2 == 0 else ("torch_pruning", "prunus"):
            rec = out[arm]
            if rec["error"] or (rec["seconds"] and rec["seconds"][0] > cap / repeats):
                continue
            model = copy.deepcopy(dense)  # the copy is made outside the timer
            seconds, why = _capped(lambda arm=arm, model=model: arms[arm](model), cap)
            if why:
                rec["error"] = why
            else:
                rec["seconds"].append(seconds)
    for rec in out.values():
        rec["median_s"] = statistics.median(rec["seconds"]) if rec["seconds"] and not rec["error"] else None
    p, t = out["prunus"]["median_s"], out["torch_pruning"]["median_s"]
    out["ratio"] = p / t if p and t else None
    return out


def _show(rec: dict[str, Any]) -> str:
    return f"{rec['median_s']:.3f}s" if rec["median_s"] is not None else f"FAIL ({rec['error']})"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--cap", type=float, default=60.0, help="seconds one prune call may take")
    ap.add_argument("--models", nargs="*", help="only these models of the plan")
    ap.add_argument("--out", default=str(RESULTS / "prune_time_timm.json"))
    args = ap.parse_args(argv)
    torchvision_or_stand_in()
    import timm
    import torch
    import torch_pruning as tp

    import prunus
    from prunus import provenance

    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    _warm_up()
    plan = read_json(RESULTS / "coverage_timm.json")["plan"]["families"]
    families = [f for f in plan if not args.models or f["model"] in args.models]
    load_before = os.getloadavg()[0]
    models: dict[str, Any] = {}
    for i, fam in enumerate(families, 1):
        rec = time_model(fam["model"], fam.get("kwargs", {}), args.repeats, args.cap)
        models[fam["model"]] = {"family": fam.get("family"), **rec}
        p, t = rec["prunus"], rec["torch_pruning"]
        ratio = f"{rec['ratio']:.2f}" if rec["ratio"] else "-"
        print(f"[{i}/{len(families)}] {fam['model']}: prunus {_show(p)}  torch_pruning {_show(t)}  ratio {ratio}",
              flush=True)  # fmt: skip
    ratios = sorted(m["ratio"] for m in models.values() if m["ratio"])
    summary = {
        "models": len(models),
        "timed_both": len(ratios),
        "median_ratio": statistics.median(ratios) if ratios else None,
        "share_at_most_1": sum(r <= 1.0 for r in ratios) / len(ratios) if ratios else None,
        "prunus_max_s": max(
            (m["prunus"]["median_s"] for m in models.values() if m["prunus"]["median_s"]), default=None
        ),
    }
    result = {
        "figure": "prune time over timm's CNN families, prunus / Torch-Pruning",
        "definition": "median over the models both libraries pruned of (median prunus.prune(keep_macs=0.5) seconds / "
        "median Torch-Pruning BasePruner + GroupMagnitudeImportance(p=1) at pruning_ratio 1 - sqrt(0.5) seconds), "
        f"{args.repeats} interleaved repeats each on copies of one model, 1 thread, input 1x3x64x64, one process",
        "command": "PYTHONPATH=$PWD .venv/bin/python benchmarks/bench_prune_time_timm.py"
        + (f" --repeats {args.repeats}" if args.repeats != 3 else "")
        + (f" --cap {args.cap:g}" if args.cap != 60.0 else ""),
        "summary": summary,
        "models_timed": models,
        "load_average": [load_before, os.getloadavg()[0]],
        "timm": timm.__version__,
        "torch_pruning": tp.__version__,
        "prunus": prunus.__version__,
        **provenance(vars(args)),
    }
    if not args.models:
        write_json(args.out, result)
    print_table("prune time, prunus / Torch-Pruning", ["models", "both timed", "median ratio", "share <= 1.0"],
                [[summary["models"], summary["timed_both"], f"{summary['median_ratio']:.2f}",
                  f"{summary['share_at_most_1']:.0%}"]] if ratios else [])  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
