"""Where onnxruntime spends its time on a dense and a 50%-pruned model, conv by conv.

Why `benchmarks/bench_latency.py` finds ResNet-56's latency efficiency far below its MACs cut:
this profiles both models in onnxruntime (full graph optimization, static batch, 1 thread, its
own per-node profiler) and reads the OPTIMIZED graph back, so each conv is reported with the
weight shape onnxruntime actually runs. On CPUs where onnxruntime picks its blocked NCHWc
layout, channel counts are padded up to the block size (16 floats on AVX-512), so a conv pruned
from 16 to 8 outputs does as much work as before.

Reported per model and arm (dense, pruned at each `--round-to`):
- per conv group (op, weight shape as run, output shape): median milliseconds per forward call;
- `macs`: the MACs of the model as prunus counts them (logical widths);
- `macs_as_run`: the MACs of every Conv/Gemm node with the weight shapes of the optimized graph
  (padded widths) and the output sizes the profiler saw;
- speed-up over dense, efficiency against logical MACs (the benchmarks.md figure) and against
  the MACs as run (how well the kernels themselves scale).

    .venv/bin/python benchmarks/profile_ort.py --model resnet56 --round-to 1,16

Writes benchmarks/results/ort_profile_<model>.json. Run on a quiet machine: the shares are
robust to load, the absolute milliseconds are not.
"""

from __future__ import annotations

import argparse
import collections
import copy
import json
import math
import os
import statistics
import tempfile
from pathlib import Path

import torch
from _common import write_json

from prunus import provenance
from prunus.deploy.export import onnx_bytes
from prunus.measure import count
from prunus.models import create_model
from prunus.pruning import prune

RESULTS = Path(__file__).parent / "results"
SHAPE = (1, 28, 28)


def _profile(model: torch.nn.Module, batch: int, repeats: int, tmp: str, tag: str) -> dict:
    """Per-node kernel times (median over `repeats` calls) and the optimized graph's weight shapes."""
    import onnx
    import onnxruntime as ort

    x = torch.randn(batch, *SHAPE)
    data = onnx_bytes(model, x, dynamic_batch=False)
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3  # the "optimized model is hardware specific" warning is the point here
    so.enable_profiling = True
    so.profile_file_prefix = os.path.join(tmp, f"prof_{tag}")
    so.optimized_model_filepath = os.path.join(tmp, f"opt_{tag}.onnx")
    sess = ort.InferenceSession(data, so, providers=["CPUExecutionProvider"])
    feed = {sess.get_inputs()[0].name: x.numpy()}
    for _ in range(3):  # warm-up calls are profiled too; they are dropped below by call index
        sess.run(None, feed)
    for _ in range(repeats):
        sess.run(None, feed)
    events = json.loads(Path(sess.end_profiling()).read_text())
    graph = onnx.load(so.optimized_model_filepath).graph
    inits = {t.name: list(t.dims) for t in graph.initializer}
    nodes = {n.name: n for n in graph.node}
    calls: dict[str, list[float]] = collections.defaultdict(list)
    out_shape: dict[str, list[int]] = {}
    for e in events:
        if e.get("cat") != "Node" or not e["name"].endswith("_kernel_time"):
            continue
        name = e["name"][: -len("_kernel_time")]
        calls[name].append(e["dur"] / 1e3)
        shapes = e["args"].get("output_type_shape") or [{}]
        out_shape[name] = next(iter(shapes[0].values()), [])
    rows = []
    for name, times in calls.items():
        node = nodes.get(name)
        op = f"{node.domain or 'ai.onnx'}:{node.op_type}" if node is not None else "?"
        w = inits.get(node.input[1], []) if node is not None and len(node.input) > 1 else []
        rows.append({"node": name, "op": op, "weight": w, "output": out_shape[name],
                     "ms": statistics.median(times[3:] or times)})  # fmt: skip
    return {"rows": rows, "total_ms": sum(r["ms"] for r in rows)}


def _macs_as_run(rows: list[dict]) -> int:
    """MACs of the conv and matmul nodes with the weight shapes onnxruntime runs (padded)."""
    total = 0
    for r in rows:
        kind = r["op"].split(":")[-1]
        if kind == "Conv" and len(r["weight"]) == 4 and len(r["output"]) == 4:
            n, _, h, w = r["output"]
            total += n * h * w * math.prod(r["weight"])  # weight = out x in/groups x kh x kw
        elif kind == "Gemm" and len(r["weight"]) == 2 and r["output"]:
            total += r["output"][0] * math.prod(r["weight"])
    return total


def _groups(rows: list[dict]) -> list[dict]:
    by: dict[tuple, dict] = {}
    for r in rows:
        key = (r["op"], tuple(r["weight"]), tuple(r["output"]))
        g = by.setdefault(key, {"op": r["op"], "weight": r["weight"], "output": r["output"], "nodes": 0, "ms": 0.0})
        g["nodes"] += 1
        g["ms"] += r["ms"]
    return sorted(by.values(), key=lambda g: -g["ms"])


def profile_model(name: str, round_tos: list[int], batch: int, repeats: int) -> dict:
    torch.manual_seed(0)
    dense = create_model(name, num_classes=10, in_channels=SHAPE[0]).eval()
    x1 = torch.randn(1, *SHAPE)
    arms = {"dense": dense}
    for r in round_tos:
        arms[f"pruned_round_to_{r}"] = prune(copy.deepcopy(dense), x1, remove_channels=0.5, round_to=r)[0].eval()
    out: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for tag, model in arms.items():
            prof = _profile(model, batch, repeats, tmp, tag)
            out[tag] = {
                "macs": int(count(model, SHAPE).macs) * batch,
                "macs_as_run": _macs_as_run(prof["rows"]),
                "total_ms": prof["total_ms"],
                "groups": _groups(prof["rows"]),
            }
    d = out["dense"]
    for tag, arm in out.items():
        speedup = d["total_ms"] / arm["total_ms"]
        arm["speedup"] = speedup
        arm["efficiency"] = speedup / (d["macs"] / arm["macs"])
        arm["efficiency_as_run"] = speedup / (d["macs_as_run"] / arm["macs_as_run"])
        print(f"{name} {tag:20s} {arm['total_ms']:8.2f} ms  speed-up {speedup:5.2f}  MACs cut "
              f"{d['macs'] / arm['macs']:5.2f} (as run {d['macs_as_run'] / arm['macs_as_run']:5.2f})  "
              f"efficiency {arm['efficiency']:.3f} (as run {arm['efficiency_as_run']:.3f})", flush=True)  # fmt: skip
        for g in arm["groups"][:6]:
            print(f"    {g['ms']:8.2f} ms  {g['nodes']:3d} x {g['op']:28s} weight {g['weight']} -> {g['output']}")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="resnet56")
    ap.add_argument("--round-to", type=lambda s: [int(v) for v in s.split(",") if v], default=[1, 16])
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=11)
    args = ap.parse_args()
    torch.set_num_threads(1)
    load = os.getloadavg()
    arms = profile_model(args.model, args.round_to, args.batch, args.repeats)
    result = {
        "name": f"ort_profile_{args.model}",
        "definition": "onnxruntime per-node profile (ORT_ENABLE_ALL, static batch, 1 thread), dense vs "
        "prune(remove_channels=0.5, round_to=r); medians over calls; weight shapes read from the optimized graph",
        "model": args.model,
        "batch": args.batch,
        "arms": arms,
        "load_average_before": load,
        "load_average_after": os.getloadavg(),
        **provenance(config=vars(args)),
    }
    path = RESULTS / f"ort_profile_{args.model}.json"
    write_json(path, result)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
