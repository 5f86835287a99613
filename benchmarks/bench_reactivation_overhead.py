"""Reactivation overhead: WE and grafting epoch time over plain training (targets 1.02 and 1.05).

Arms, all ResNet-20 (1 input channel, same initialisation) on one fixed Fashion-MNIST training
subset, same batches, same Trainer; evaluation kept out (no validation loader, a one-batch test
loader):

- `plain`: one network, no method;
- `we`: one network with Weight Evolution (defaults);
- `pop2`: two independent networks in one process (lockstep threads), no method;
- `graft2`: the same two networks with grafting (ring, entropy).

A round is one fresh `fit()` of `--epochs` epochs per arm (trainers rebuilt from the same seed;
at least 2: WE and grafting act after every epoch but the last, at the start of the next one, so
an E-epoch fit holds E - 1 evolutions / grafts and a 1-epoch fit none);
rounds are interleaved across arms, rotating which arm goes first, after one warm-up round. The
figures are median round times over `plain`; for the populations the time per network is the
round time / 2, and grafting's own cost is `graft2 / pop2`. The time spent inside WE's hook, and
one network's graft work outside the lockstep wait (`graft_core_seconds`), are also recorded
(`hook_seconds`): less noisy than wall ratios on a busy machine; `hook_share_of_plain_epoch` is one
evolution's / one graft's work over one plain epoch.

    .venv/bin/python benchmarks/bench_reactivation_overhead.py [--subset 2000] [--rounds 5] [--threads 1]

Writes benchmarks/results/reactivation_overhead.json.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from dataclasses import replace
from pathlib import Path

import torch
from _common import write_json

from prunus import provenance
from prunus.data import DataConfig, build_loaders
from prunus.engine import TrainConfig, Trainer
from prunus.engine.parallel import fit_population
from prunus.methods import create_method
from prunus.methods.graft import blend_unit_, graft_units, layer_information, unit_tensors
from prunus.models import create_model

RESULTS = Path(__file__).parent / "results"
ARMS = ("plain", "we", "pop2", "graft2")
TARGETS = {"we": 1.02, "graft2_per_network_vs_pop2": 1.05}


class Timed:
    """Wraps a method and adds up the seconds its hooks take."""

    def __init__(self, inner):
        self.inner, self.seconds = inner, 0.0
        self.name = inner.name

    def __getattr__(self, attr):
        fn = getattr(self.inner, attr)
        if not callable(fn) or attr not in ("setup", "on_epoch_start", "on_epoch_end", "on_step_end", "after_backward"):
            return fn

        def timed(*a, **kw):
            start = time.perf_counter()
            try:
                return fn(*a, **kw)
            finally:
                self.seconds += time.perf_counter() - start

        return timed


@torch.no_grad()
def graft_core_seconds(trainer) -> float:
    """Seconds of one network's graft work without the lockstep wait (inside the hook, network 0's
    timer would also run while network 1 trains): information of every layer, the copy the
    in-process exchange makes, and the blend."""
    nets = [trainer([]).model, trainer([]).model]
    units = [graft_units(n, torch.zeros(1, 1, 28, 28)) for n in nets]
    start = time.perf_counter()
    info = [[layer_information(u.conv.weight) for u in us] for us in units]
    theirs = [t.clone() for u in units[1] for t in unit_tensors(u)]
    it = iter(theirs)
    for i, u in enumerate(units[0]):
        own = unit_tensors(u)
        blend_unit_(own, [next(it) for _ in own], info[0][i], info[1][i], 0.4, 500.0)
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--subset", type=int, default=2000, help="fixed training subset")
    ap.add_argument(
        "--epochs", type=int, default=2, help="epochs per round (>= 2: the first evolution follows epoch 0)"
    )
    ap.add_argument("--rounds", type=int, default=5, help="timed rounds per arm (after one warm-up)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--width-mult", type=float, default=1.0)
    ap.add_argument("--data", default="fashion-mnist")
    ap.add_argument("--out", default=str(RESULTS / "reactivation_overhead.json"))
    args = ap.parse_args()
    if args.epochs < 2:
        raise SystemExit("--epochs must be at least 2: a 1-epoch fit has no evolution or graft to time")
    torch.set_num_threads(args.threads)
    data = build_loaders(DataConfig(name=args.data, subset=args.subset, val_size=0, batch_size=128))
    one_batch = build_loaders(DataConfig(name=args.data, subset=128, val_size=0, augment=False)).train
    one_batch.shuffle = False
    bundle = replace(data, val=None, test=one_batch)
    cfg = TrainConfig(epochs=args.epochs, lr=0.1, checkpoint=False, threads=args.threads)

    def trainer(methods, parallel=None):
        torch.manual_seed(0)
        model = create_model(
            "resnet20", in_channels=bundle.in_channels, num_classes=bundle.num_classes, width_mult=args.width_mult
        )
        return Trainer(model, bundle, cfg, methods, progress=False, parallel=parallel)

    hooks: dict[str, list[float]] = {"we": [], "graft2": []}

    def run(arm: str) -> float:
        start = time.perf_counter()
        if arm == "plain":
            trainer([]).fit()
        elif arm == "we":
            m = Timed(create_method("we"))
            trainer([m]).fit()
            hooks["we"].append(m.seconds)
        else:

            def make(strategy):
                return trainer([create_method("graft")] if arm == "graft2" else [], strategy)

            fit_population(make, 2)
            if arm == "graft2":
                hooks["graft2"].append(graft_core_seconds(trainer))
        return time.perf_counter() - start

    times: dict[str, list[float]] = {arm: [] for arm in ARMS}
    for r in range(args.rounds + 1):
        order = ARMS[r % len(ARMS) :] + ARMS[: r % len(ARMS)]
        for arm in order:
            seconds = run(arm)
            print(f"round {r} {arm}: {seconds:.2f} s", flush=True)
            if r > 0:  # round 0 is the warm-up
                times[arm].append(seconds)
    med = {arm: statistics.median(t) for arm, t in times.items()}
    ratios = {
        "we": med["we"] / med["plain"],
        "graft2_per_network_vs_plain": med["graft2"] / 2 / med["plain"],
        "graft2_per_network_vs_pop2": med["graft2"] / med["pop2"],
        "pop2_per_network_vs_plain": med["pop2"] / 2 / med["plain"],
    }
    hook_share = {
        "we": statistics.median(hooks["we"]) / med["plain"],
        "graft2": statistics.median(hooks["graft2"]) * (args.epochs - 1) / med["plain"],
    }
    epoch_s = med["plain"] / args.epochs  # one evolution's / one graft's work over one plain epoch
    hook_share_epoch = {
        "we": statistics.median(hooks["we"]) / (args.epochs - 1) / epoch_s,
        "graft2": statistics.median(hooks["graft2"]) / epoch_s,
    }
    result = {
        "figure": "reactivation overhead",
        "definition": (
            f"median time of a {args.epochs}-epoch fit ({args.epochs - 1} evolution(s) / graft(s)) with the method "
            "over plain training; ResNet-20 "
            f"(width {args.width_mult}), {args.data} fixed {args.subset}-image subset, batch 128, "
            f"{args.threads} thread(s), interleaved rounds; populations run in one process"
        ),
        "round_seconds": times,
        "median_round_s": med,
        "ratio": ratios,
        "hook_seconds": hooks,
        "hook_share_of_plain_round": hook_share,
        "hook_share_of_plain_epoch": hook_share_epoch,
        "target": {k: f"<= {v}" for k, v in TARGETS.items()},
        "rounds": args.rounds,
        "load_average": os.getloadavg(),
        **provenance(config=vars(args)),
    }
    write_json(args.out, result)
    for k, v in ratios.items():
        print(f"{k}: {v:.3f}")
    for k, v in hook_share_epoch.items():
        print(f"hook share {k} (one evolution / graft over one plain epoch): {v:.4f}")
    print("load average", os.getloadavg())


if __name__ == "__main__":
    main()
