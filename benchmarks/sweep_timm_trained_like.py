"""Every timm family model with trained-like values, pruned: no zero-width layer, a forward that runs, MACs kept.

The coverage benchmark (coverage_timm.py) prunes models at their random initialisation, where zero-initialised
gains and BatchNorm weights (timm's `zero_init_last`, NFNets' skip-init) and all-equal BatchNorm statistics hide
what a trained model shows: which channels score lowest, and what a branch computes. timm's mixnet_s, with its
constant tensors made distinct, was cut to a conv with 0 output channels (fixed in 3bd6aa5). This sweep gives
every constant floating tensor of each model distinct values near its own (t + 0.1 * U(0, 1), seeded: mild, so
the activations keep their scale), prunes it to `--keep-macs` (default 0.5, also run at 0.2), and records per
model: no conv/linear/norm layer with 0 channels, a forward at batch 3 with finite logits of shape (3, 10), the
MACs kept (by `prunus.count`), and the seconds. One process, 1 thread, `--timeout` seconds per model.

    PYTHONPATH=$PWD .venv/bin/python benchmarks/sweep_timm_trained_like.py [--keep-macs 0.5] [--models a b]

Results: benchmarks/results/sweep_timm_trained_like_<keep>.json (the plan of coverage_timm.json: its families).
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import read_json, write_json  # noqa: E402
from _timm_families import NUM_CLASSES, SHAPE, torchvision_or_stand_in  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def trained_like_(model: Any, seed: int = 1) -> int:
    """Give every constant floating parameter and buffer distinct values near its own; how many were changed."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    changed = 0
    with torch.no_grad():
        for t in [*model.parameters(), *model.buffers()]:
            if t.is_floating_point() and t.numel() and bool((t == t.reshape(-1)[0]).all()):
                t.add_(0.1 * torch.rand(t.shape, generator=gen, dtype=t.dtype).to(t.device))
                changed += 1
    return changed


def one(name: str, kwargs: dict[str, Any], keep_macs: float) -> dict[str, Any]:
    """Prune `name` with trained-like values to `keep_macs`: {"ok", "reason"?, "macs_kept", "seconds", "changed"}."""
    import warnings

    import torch
    from coverage_timm import _zero_width

    import prunus

    warnings.filterwarnings("ignore")
    start = time.perf_counter()
    torch.manual_seed(0)
    model = prunus.create_model(f"timm:{name}", num_classes=NUM_CLASSES, **kwargs).eval()
    out: dict[str, Any] = {"changed": trained_like_(model)}
    dense = prunus.count(model, SHAPE).macs
    try:
        prunus.prune(model, torch.zeros(1, *SHAPE), keep_macs=keep_macs)
        reason = _zero_width(model)
        with torch.no_grad():
            y = model(torch.randn(3, *SHAPE, generator=torch.Generator().manual_seed(1)))
        if reason is None and (tuple(y.shape) != (3, NUM_CLASSES) or not bool(torch.isfinite(y).all())):
            reason = f"forward at batch 3 gave shape {tuple(y.shape)}, finite: {bool(torch.isfinite(y).all())}"
        out["macs_kept"] = prunus.count(model, SHAPE).macs / dense
    except Exception as exc:
        reason = f"{type(exc).__name__}: {str(exc).strip()[:200]}"
    out.update(ok=reason is None, seconds=time.perf_counter() - start)
    if reason is not None:
        out["reason"] = reason
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--keep-macs", type=float, default=0.5)
    ap.add_argument("--models", nargs="*", help="only these models (of the coverage plan)")
    ap.add_argument("--timeout", type=int, default=120, help="seconds per model")
    args = ap.parse_args(argv)
    torchvision_or_stand_in()
    import timm
    import torch

    from prunus import provenance

    torch.set_num_threads(1)
    plan = read_json(RESULTS / "coverage_timm.json")["plan"]["families"]
    families = [f for f in plan if not args.models or f["model"] in args.models]

    def over(*_: Any) -> None:
        raise TimeoutError(f"over {args.timeout} s")

    signal.signal(signal.SIGALRM, over)
    models: dict[str, Any] = {}
    for i, f in enumerate(families):
        signal.alarm(args.timeout)
        try:
            rec = one(f["model"], f.get("kwargs", {}), args.keep_macs)
        except TimeoutError as exc:
            rec = {"ok": False, "reason": str(exc)}
        finally:
            signal.alarm(0)
        models[f["model"]] = rec
        kept = f"{rec['macs_kept']:.3f}" if "macs_kept" in rec else "-"
        print(f"[{i + 1}/{len(families)}] {f['model']}: {'ok' if rec['ok'] else rec['reason']} kept {kept}", flush=True)
    failed = sorted(m for m, r in models.items() if not r["ok"])
    run = {
        "figure": f"timm families with trained-like values, pruned to keep_macs={args.keep_macs}",
        "summary": {"models": len(models), "ok": len(models) - len(failed), "failed": failed},
        "models": models,
        "timm": timm.__version__,
        **provenance(config={"keep_macs": args.keep_macs, "timeout_s": args.timeout, "threads": 1}),
    }
    write_json(RESULTS / f"sweep_timm_trained_like_{args.keep_macs:g}.json", run)
    print(f"{run['summary']['ok']}/{len(models)} ok; failed: {', '.join(failed) or 'none'}")
    return 0 if not failed else 1


if __name__ == "__main__":
    raise SystemExit(main())
