"""Bit allocation in Fisher order: what each measured pass buys, galloping vs bisecting after a freeze.

    PYTHONPATH=$PWD .venv/bin/python benchmarks/bench_bit_allocation.py /work/runs/mnv2-q5/model \
        --sparsity 0.0 --images 768 --name bit_allocation_mobilenetv2

`prunus.compress`'s `bit_order="fisher"` (the default from 33 quantized layers) lowers bits along the
order the diagonal Fisher predicts, and spends forward passes over the budget batch to find how far
along that order the measured budget allows; each step that breaks it freezes its layer and the
search goes on. Every pass is a forward over the budget batch (about 20 s on MobileNetV2 and 2048
images on 2 cores), so passes are the cost. This script runs the same allocation twice on one
pruned model, once bisecting over the rest of the order after each freeze (the search before
2026-12-06) and once galloping (1, 2, 4 ... steps past the last good prefix first, the default
now), each with the default pass limit, and records after every pass the payload size of the best
state measured within budget so far (bits x surviving weights, what the coder has to code).

The model is the teacher with per-layer magnitude masks at `--sparsity` (no recovery; default 0, the
dense teacher: one-shot magnitude pruning without recovery takes MobileNetV2 from 81% to 11% at 0.5,
and a model that is already guessing loses nothing more to 2-bit weights, so the allocation would be
trivial). The budget is quantization's own accuracy drop against that fp32 model on `--images`
training images of Fashion-MNIST (`--max-drop` points plus the default confidence margin), as
`quant_drop` sets it.
Writes benchmarks/results/NAME.json.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from _common import write_json

from prunus import provenance
from prunus.compress.bits import _fisher_descent, _Trial, best_quantizer, z_score
from prunus.compress.config import CompressConfig
from prunus.compress.quantize import MAX_BITS, MIN_BITS
from prunus.compress.runner import prunable_layers
from prunus.compress.search import magnitude_masks
from prunus.data import DataConfig, build_loaders, training_slice
from prunus.formats import load

RESULTS = Path(__file__).parent / "results"


class _Recorded(_Trial):
    """A `_Trial` that keeps, for every measured pass, the payload bits and whether it was within budget."""

    def __init__(self, *args, within, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.within, self.passes = within, []

    def measure_se(self, quantizers):
        out = super().measure_se(quantizers)
        payload = sum(q.bits * int(self.masks[n].sum()) for n, q in quantizers.items())
        self.passes.append({"payload_bits": payload, "within": bool(self.within(*out)), "drop_pt": out[1]})
        return out


def _run(model, masks, x, logits, labels, within, passes: int, gallop: bool) -> dict:
    trial = _Recorded(model, masks, x, logits, labels, within=within)
    cache: dict = {}

    def q(name: str, b: int):
        if (name, b) not in cache:
            cache[(name, b)] = best_quantizer(trial.original[name][masks[name]], b, "kmeans")
        return cache[(name, b)]

    start = time.perf_counter()
    result = _fisher_descent(trial, q, within, MIN_BITS, MAX_BITS, passes, None, gallop=gallop)
    seconds = time.perf_counter() - start
    best, curve = None, []
    for p in trial.passes[1:] if len(trial.passes) > 1 else trial.passes:  # [0] is the all-8-bit start
        if p["within"]:
            best = p["payload_bits"] if best is None else min(best, p["payload_bits"])
        curve.append(best)
    bits = [qq.bits for qq in result.values()]
    payload = sum(qq.bits * int(masks[n].sum()) for n, qq in result.items())
    return {"search": "gallop" if gallop else "bisect", "passes": len(trial.passes), "seconds": round(seconds, 1),
            "payload_bits": payload, "mean_bits": sum(bits) / len(bits), "best_after_pass": curve}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", type=Path, help="a trained model directory (the teacher)")
    ap.add_argument("--sparsity", type=float, default=0.0, help="per-layer magnitude sparsity (default 0)")
    ap.add_argument("--images", type=int, default=512, help="budget-batch images (default 512)")
    ap.add_argument("--max-drop", type=float, default=1.0, help="accuracy points quantization may lose (default 1)")
    ap.add_argument("--passes", type=int, default=None, help="pass limit (default: the library's, 2 x layers)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--name", default=None, help="results/NAME.json (default: bit_allocation_<model dir name>)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    teacher = load(args.model).eval()
    layers = prunable_layers(teacher)
    masks = magnitude_masks(teacher, dict.fromkeys(layers, args.sparsity))
    with torch.no_grad():
        for name, mask in masks.items():
            layers[name].weight.mul_(mask)
    data = build_loaders(DataConfig(augment=False), seed=0)
    x, y = training_slice(data, args.images, seed=0)
    with torch.no_grad():
        logits = teacher(x)
    z = z_score(CompressConfig().confidence)

    def within(kl: float, drop: float, se: float) -> bool:
        return drop + z * se <= args.max_drop

    passes = args.passes if args.passes is not None else max(16, 2 * len(masks))
    runs = []
    for gallop in (False, True):
        runs.append(_run(teacher, masks, x, logits, y, within, passes, gallop))
        r = runs[-1]
        print(f"{r['search']}: {r['passes']} passes, {r['seconds']} s, payload {r['payload_bits']:,} bits, "
              f"mean {r['mean_bits']:.2f} bits")  # fmt: skip
    survivors = sum(int(m.sum()) for m in masks.values())
    name = args.name or f"bit_allocation_{args.model.name}"
    flags = " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items()
                     if k not in ("model", "name") and v is not None)  # fmt: skip
    write_json(RESULTS / f"{name}.json", {
        "model": str(args.model), "layers": len(masks), "survivors": survivors, "sparsity": args.sparsity,
        "images": args.images, "max_drop": args.max_drop, "pass_limit": passes, "runs": runs,
        "command": f"benchmarks/bench_bit_allocation.py MODEL {flags}",
        **provenance(config={k: str(v) for k, v in vars(args).items()}),
    })  # fmt: skip


if __name__ == "__main__":
    main()
