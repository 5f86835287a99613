"""Where a pruned model's time goes on OpenVINO: per-conv latency, dense vs pruned, from the plugin's own counters.

Why `benchmarks/bench_latency.py` finds the efficiency (speed-up / MACs cut) it finds on OpenVINO,
the fastest CPU runtime here: the model and its cut (`--remove-channels`, `--round-to`,
`--keep-streams`) are compiled as `prunus.deploy.openvino_ir` compiles them (f32, latency hint,
`--threads`), with `PERF_COUNT` on; each node's time is the median over `--repeats` requests. Every
conv's MACs are counted on the model as cut (batch 1, x batch). Aggregated by kind (kxk, 1x1,
depthwise) and listed per conv, with each conv's own time cut / MACs cut.

    .venv/bin/python benchmarks/profile_openvino.py --model resnet56 [--round-to auto] [--keep-streams]

Writes benchmarks/results/ov_profile_<model>[_<tag>].json.
"""

from __future__ import annotations

import argparse
import collections
import copy
import os
from pathlib import Path

import numpy as np
import torch
from _common import write_json
from torch import nn

from prunus import provenance
from prunus.deploy.openvino_ir import cpu_config, ov_model, require_openvino
from prunus.models import create_model
from prunus.pruning import prune

RESULTS = Path(__file__).parent / "results"
SHAPE = (1, 28, 28)


def node_times(model: nn.Module, batch: int, threads: int, repeats: int) -> dict[str, float]:
    """Median ms per executed node, keyed by the module name the node came from."""
    ov = require_openvino()
    compiled = ov.Core().compile_model(
        ov_model(model, torch.randn(batch, *SHAPE), dynamic_batch=False),
        "CPU",
        {**cpu_config(threads), "PERF_COUNT": True},
    )
    request = compiled.create_infer_request()
    x = np.random.default_rng(0).standard_normal((batch, *SHAPE)).astype(np.float32)
    for _ in range(5):
        request.infer([x])
    times: dict[str, list[float]] = collections.defaultdict(list)
    for _ in range(repeats):
        request.infer([x])
        per_module: dict[str, float] = collections.Counter()
        for p in request.profiling_info:
            if p.status.name == "EXECUTED":  # fused nodes report their time on the node that ran
                per_module[p.node_name.split("/")[0].removeprefix("__module.")] += p.real_time.total_seconds() * 1e3
        for name, ms in per_module.items():
            times[name].append(ms)
    return {name: float(np.median(v)) for name, v in times.items()}


def conv_macs(model: nn.Module) -> dict[str, tuple[str, int]]:
    """Conv module name -> (kind, MACs of one sample)."""
    out: dict[str, tuple[str, int]] = {}
    hooks = []
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d):
            kind = (
                "depthwise"
                if m.groups > 1 and m.groups == m.in_channels
                else "1x1"
                if m.kernel_size == (1, 1)
                else "kxk"
            )

            def hook(mod, _inp, y, name=name, kind=kind):
                k = mod.kernel_size[0] * mod.kernel_size[1] * mod.in_channels // mod.groups
                out[name] = (kind, y.numel() * k)

            hooks.append(m.register_forward_hook(hook))
    with torch.no_grad():
        model(torch.zeros(1, *SHAPE))
    for h in hooks:
        h.remove()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="resnet56")
    ap.add_argument("--remove-channels", type=float, default=0.5)
    ap.add_argument("--round-to", default="1", help="an int or auto")
    ap.add_argument("--keep-streams", action="store_true")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=21)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    dense = create_model(args.model, num_classes=10, in_channels=SHAPE[0]).eval()
    round_to = args.round_to if args.round_to == "auto" else int(args.round_to)
    pruned, report = prune(copy.deepcopy(dense), torch.randn(1, *SHAPE), remove_channels=args.remove_channels,
                           round_to=round_to, keep_streams=args.keep_streams)  # fmt: skip
    load = os.getloadavg()
    t_dense = node_times(dense, args.batch, args.threads, args.repeats)
    t_pruned = node_times(pruned, args.batch, args.threads, args.repeats)
    m_dense, m_pruned = conv_macs(dense), conv_macs(pruned)
    shapes = {n: m for n, m in pruned.named_modules() if isinstance(m, nn.Conv2d)}
    dense_shapes = {n: m for n, m in dense.named_modules() if isinstance(m, nn.Conv2d)}
    convs, kinds = [], collections.defaultdict(lambda: [0.0, 0.0, 0, 0])
    for name, (kind, macs) in m_dense.items():
        a, b, mp = t_dense.get(name, 0.0), t_pruned.get(name, 0.0), m_pruned[name][1]
        conv, full = shapes[name], dense_shapes[name]
        convs.append({"conv": name, "kind": kind, "in": [full.in_channels, conv.in_channels],
                      "out": [full.out_channels, conv.out_channels],
                      "dense_ms": a, "pruned_ms": b, "macs_dense": macs, "macs_pruned": mp})  # fmt: skip
        for i, v in enumerate((a, b, macs, mp)):
            kinds[kind][i] += v
    by_kind = {k: {"dense_ms": a, "pruned_ms": b, "time_cut": a / b, "macs_cut": c / d, "efficiency": (a / b) / (c / d)}
               for k, (a, b, c, d) in kinds.items() if b > 0}  # fmt: skip
    total_d, total_p = sum(t_dense.values()), sum(t_pruned.values())
    result = {
        "model": args.model,
        "cut": {"remove_channels": args.remove_channels, "round_to": round_to, "keep_streams": args.keep_streams},
        "round_to_resolved": report.round_to,
        "batch": args.batch,
        "total_ms": {"dense": total_d, "pruned": total_p},
        "macs_cut": report.dense_macs / report.pruned_macs,
        "by_kind": by_kind,
        "convs": convs,
        "load_average_before": load,
        **provenance(config=vars(args)),
    }
    tag = f"_r{args.round_to}" + ("_streams" if args.keep_streams else "")
    path = RESULTS / f"ov_profile_{args.model}{tag}.json"
    write_json(path, result)
    print(f"{args.model} {result['cut']} (round_to {report.round_to}): nodes {total_d:.2f} -> {total_p:.2f} ms, "
          f"time cut {total_d / total_p:.2f}x, MACs cut {result['macs_cut']:.2f}x")  # fmt: skip
    for kind, k in by_kind.items():
        print(f"  {kind:10s} {k['dense_ms']:8.2f} -> {k['pruned_ms']:8.2f} ms  time cut {k['time_cut']:.2f}x  "
              f"MACs cut {k['macs_cut']:.2f}x  efficiency {k['efficiency']:.2f}")  # fmt: skip
    for c in convs[:8]:
        print(f"  {c['conv']:28s} in {c['in']} out {c['out']}  {c['dense_ms']:6.2f} -> {c['pruned_ms']:6.2f} ms  "
              f"MACs cut {c['macs_dense'] / max(c['macs_pruned'], 1):.2f}x")  # fmt: skip
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
