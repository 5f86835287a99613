"""DE compression on real Fashion-MNIST: ratio vs the fp32 file, test-accuracy drop, coder gap, wall time.

    .venv/bin/python benchmarks/compress_lenet.py runs/l300-s0/checkpoint.pt --model lenet300_100 \
        --point 0.92:1.0 --point 0.96:3.0 --seeds 0,1,2 --name compress_lenet300_100

The teacher is a trained model directory or a training checkpoint (`checkpoint.pt`, weights
only are read). Each `--point SPARSITY:MAX_DROP` runs `prunus.compress` (DE search + greedy bits
under MAX_DROP accuracy points on the 4096-image calibration slice of the TRAINING split + ANS
coding), writes a .prn, decodes it and evaluates the decoded model on the full test set.
`--seeds` then compares DE with one-shot magnitude pruning at the same per-layer sparsity, both
without retraining or quantization, over the given search/calibration seeds (one teacher).
Writes benchmarks/results/NAME.json; timings are wall seconds on this (shared) machine, with the
load average recorded before and after. `--update` keeps what this run does not produce from the
existing NAME.json (the other points, keyed by sparsity and budget, or the DE-vs-magnitude
comparison), each with the command, date, commit and load it was measured under, so the parts can
run as separate commands on a busy machine. `--calib-images` (default 4096) training images are
drawn: the search scores the first `calib_size`, the budget uses the first `rescore_size`, the
optional distillation and codebook fine-tunes use all of them. `--like-cli` draws the images
as `prunus compress` does instead (the budget and its verdict on the validation split), and
`--magnitude-arm` runs every point a second time with `population=1`: magnitude pruning in the
same schedule with the same recovery, fine-tunes and bit budget, so the table shows what the
search itself adds. `--paired-seeds 0,1,2` runs that pair (DE, and magnitude with `population=1`)
once per compress seed at `--paired-point SPARSITY:MAX_DROP`, with recovery and fine-tunes as the
settings give them, and records each pair and the mean paired difference in test-accuracy drop
(`de_vs_magnitude_with_recovery`): one pair is within the run-to-run spread, several are not.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import tempfile
import time
from pathlib import Path

import torch
from _common import write_json

from prunus import provenance
from prunus.compress import CompressConfig, compress, decompress
from prunus.compress.runner import prunable_layers
from prunus.compress.search import magnitude_masks, search
from prunus.data import DataConfig, build_loaders, training_slice
from prunus.formats import load
from prunus.measure.evaluation import evaluate
from prunus.models import create_model
from prunus.models.info import update_info

RESULTS = Path(__file__).parent / "results"


def _teacher(path: Path, model_name: str) -> torch.nn.Module:
    if path.is_dir():
        return load(path).eval()
    from prunus.engine.checkpoint import load_checkpoint

    model = create_model(model_name, in_channels=1, num_classes=10)
    model.load_state_dict(load_checkpoint(path)["model"])
    update_info(model, input_shape=(1, 28, 28))
    return model.eval()


def _sparsity(spec: str) -> float | dict[str, float]:
    """ "0.92" or "fc1=0.93,fc2=0.9,fc3=0.7" (layer names without .weight)."""
    if "=" not in spec:
        return float(spec)
    return {k.strip(): float(v) for k, v in (item.split("=") for item in spec.split(","))}


def _point(teacher, bundle, calib, sparsity, max_drop: float, overrides: dict, out_dir: Path,
           like_cli: bool = False, progress: bool = False) -> dict:  # fmt: skip
    cfg = CompressConfig(**{"sparsity": sparsity, "bits": "auto", "max_drop": max_drop, **overrides,
                            "progress": progress})  # fmt: skip
    path = out_dir / f"point-d{max_drop}-p{cfg.population}.prn"
    start = time.perf_counter()
    if like_cli:  # the images `prunus compress` draws: budget and verdict on the validation split
        from prunus.pipeline._compress_stage import CompressStage, compress_model

        report, _ = compress_model(CompressStage(compress=cfg, data=DataConfig()), teacher, path, seed=0,
                                   progress=progress)  # fmt: skip
    else:
        report = compress(teacher, calib, cfg, out=path)
    wall = time.perf_counter() - start
    decoded = decompress(path)
    x = calib[0][:256]
    assert torch.equal(decoded(x), report.model(x)), "decoded model differs from the compressed one"
    teacher_acc = evaluate(teacher, bundle.test)["acc"]
    acc = evaluate(decoded, bundle.test)["acc"]
    js = report.to_json()
    return {
        "sparsity_target": sparsity,
        "max_drop_budget_pt": max_drop,
        "teacher_test_acc": teacher_acc,
        "test_acc": acc,
        "test_drop_pt": 100 * (teacher_acc - acc),
        "file_bytes": path.stat().st_size,
        "fp32_bytes": report.fp32_bytes,
        "ratio": report.fp32_bytes / path.stat().st_size,
        "stream_bytes": js["stream_bytes"],
        "bound_bytes": js["bound_bytes"],
        "stream_over_bound": js["stream_over_bound"],
        "file_over_bound": js["file_over_bound"],
        "verbatim_bytes": js["verbatim_bytes"],
        "file_over_floor": js["file_over_floor"],
        "file_parts": js["file_parts"],
        "overhead_bytes": js["overhead_bytes"],
        "sparsity": report.sparsity,
        "bits": {r.name: r.bits for r in report.layers},
        "layers": js["layers"],
        "calib_acc": {"teacher": report.teacher_acc, "compressed": report.acc},
        "seconds": report.seconds,
        "compress_wall_seconds": wall,
        "baselines": report.baselines,
        "config": report.config,  # resolved: the preset's values, and the rung's fine-tune
    }


def _de_vs_magnitude(teacher, bundle, sparsity, seeds: list[int], overrides: dict) -> dict:
    rows = []
    for seed in seeds:
        x, _ = training_slice(bundle, 4096, seed=seed)
        with torch.no_grad():
            t_big = teacher(x)
        student = copy.deepcopy(teacher)
        config = CompressConfig(sparsity=sparsity, bits=8, seed=seed, **overrides).resolved(teacher)
        n = config.calib_size
        with torch.no_grad():
            t_small = teacher(x[:n])
        start = time.perf_counter()
        res = search(student, x[:n], t_small, sparsity, config.search_settings(), x_big=x, teacher_big=t_big)
        seconds = time.perf_counter() - start
        mag = copy.deepcopy(teacher)
        targets = {n: 1 - float(m.float().mean()) for n, m in res.masks.items()}
        layers = prunable_layers(mag)
        with torch.no_grad():
            for n, m in magnitude_masks(mag, targets).items():
                layers[n].weight.mul_(m)
        rows.append({"seed": seed, "de_test_acc": evaluate(student, bundle.test)["acc"],
                     "magnitude_test_acc": evaluate(mag, bundle.test)["acc"], "search_seconds": seconds})  # fmt: skip
        print(json.dumps(rows[-1]), flush=True)
    diffs = torch.tensor([100 * (r["de_test_acc"] - r["magnitude_test_acc"]) for r in rows])
    return {"sparsity": sparsity, "runs": rows, "de_minus_magnitude_pt_mean": float(diffs.mean()),
            "de_minus_magnitude_pt_std": float(diffs.std()) if len(rows) > 1 else 0.0}  # fmt: skip


def _paired_seeds(teacher, bundle, calib, spec: str, seeds: list[int], overrides: dict, out_dir: Path,
                  like_cli: bool, progress: bool) -> dict:  # fmt: skip
    """DE and magnitude (population=1) in the same schedule, once per compress seed: paired test-acc drops."""
    text, drop = spec.rsplit(":", 1)
    keys = ("test_drop_pt", "test_acc", "ratio", "file_bytes", "compress_wall_seconds")
    rows = []
    for seed in seeds:
        row = {"seed": seed}
        for arm, extra in (("de", {}), ("magnitude", {"population": 1})):
            point = _point(teacher, bundle, calib, _sparsity(text), float(drop), {**overrides, **extra, "seed": seed},
                           out_dir, like_cli, progress)  # fmt: skip
            row[arm] = {k: point[k] for k in keys}
        rows.append(row)
        print(json.dumps(row), flush=True)
    diffs = torch.tensor([r["magnitude"]["test_drop_pt"] - r["de"]["test_drop_pt"] for r in rows])
    return {"sparsity": _sparsity(text), "max_drop_budget_pt": float(drop), "runs": rows,
            "de_minus_magnitude_pt_mean": float(diffs.mean()),
            "de_minus_magnitude_pt_std": float(diffs.std()) if len(rows) > 1 else 0.0}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("teacher", type=Path, help="model directory or checkpoint.pt")
    ap.add_argument("--model", default="lenet300_100", help="registry name (for a checkpoint)")
    ap.add_argument(
        "--point", action="append", default=[], help="SPARSITY:MAX_DROP, SPARSITY = 0.9 or fc1=0.93,fc2=0.9"
    )
    ap.add_argument("--seeds", default="", help="comma-separated seeds for DE vs magnitude (no retraining)")
    ap.add_argument("--seeds-sparsity", default="0.96", help="as in --point")
    ap.add_argument("--paired-seeds", default="", help="comma-separated compress seeds: DE and magnitude (same "
                    "schedule, recovery, fine-tunes) at --paired-point, paired by seed")  # fmt: skip
    ap.add_argument("--paired-point", default="0.9:1.0", help="SPARSITY:MAX_DROP of --paired-seeds")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="CompressConfig overrides")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--name", required=True)
    ap.add_argument("--note", default="")
    ap.add_argument("--calib-images", type=int, default=4096, help="training images drawn for calibration")
    ap.add_argument("--update", action="store_true", help="keep the section not run from the existing NAME.json")
    ap.add_argument("--like-cli", action="store_true",
                    help="draw the images as `prunus compress` does (training images for the search and fine-tunes, "
                         "the budget and its verdict on the validation split) instead of --calib-images")  # fmt: skip
    ap.add_argument("--magnitude-arm", action="store_true",
                    help="also run every point with population=1: magnitude pruning in the same schedule, with the "
                         "same recovery, fine-tune and bit budget (what DE's search adds)")  # fmt: skip
    ap.add_argument("--progress", action="store_true",
                    help="print the compression's progress lines (phases, DE cycles, recovery and fine-tune times) "
                         "to stdout: a MobileNetV2 point runs for the better part of an hour")  # fmt: skip
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from _common import parse_set

    overrides = parse_set(args.set)  # CompressConfig validates the keys and values
    # read before the long work: a commit made while this runs must not be credited with its results
    run_provenance = provenance(config={k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()})
    code_commit = run_provenance["commit"]
    teacher = _teacher(args.teacher, args.model)
    bundle = build_loaders(DataConfig(augment=False))
    calib = training_slice(bundle, args.calib_images, seed=0)
    load_before = os.getloadavg()
    out_dir = Path(tempfile.mkdtemp())
    command = "python benchmarks/compress_lenet.py " + " ".join(os.sys.argv[1:])
    points = []
    for text in args.point:
        spec, drop = text.rsplit(":", 1)
        sparsity = _sparsity(spec)
        before = os.getloadavg()
        points.append(_point(teacher, bundle, calib, sparsity, float(drop), overrides, out_dir, args.like_cli,
                             args.progress))  # fmt: skip
        if args.magnitude_arm:
            arm = _point(teacher, bundle, calib, sparsity, float(drop), {**overrides, "population": 1}, out_dir,
                         args.like_cli, args.progress)  # fmt: skip
            points[-1]["magnitude_arm"] = {k: arm[k] for k in ("test_drop_pt", "test_acc", "ratio", "file_bytes",
                                                               "bits", "compress_wall_seconds")}  # fmt: skip
        points[-1]["run"] = {"command": command, "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                             "commit": code_commit, "calib_images": args.calib_images, "note": args.note,
                             "load_average_before": before, "load_average_after": os.getloadavg()}  # fmt: skip
        keys = (
            "sparsity",
            "bits",
            "test_drop_pt",
            "ratio",
            "file_over_bound",
            "file_over_floor",
            "compress_wall_seconds",
        )
        print(json.dumps({k: points[-1][k] for k in keys}), flush=True)
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    comparison = _de_vs_magnitude(teacher, bundle, _sparsity(args.seeds_sparsity), seeds, overrides) if seeds else None
    paired_seeds = [int(s) for s in args.paired_seeds.split(",") if s.strip()]
    paired = None
    if paired_seeds:
        paired = _paired_seeds(teacher, bundle, calib, args.paired_point, paired_seeds, overrides, out_dir,
                               args.like_cli, args.progress)  # fmt: skip
        paired["run"] = {"command": command, "commit": code_commit, "note": args.note,
                         "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                         "load_average_before": load_before, "load_average_after": os.getloadavg()}  # fmt: skip
    section = {
        "command": command,
        "commit": code_commit,
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
        "note": args.note,
    }
    record = {
        "name": args.name,
        "teacher": str(args.teacher),
        "teacher_test_acc": evaluate(teacher, bundle.test)["acc"],
        "model": args.model,
        "points": points,
        "de_vs_magnitude_no_retraining": comparison,
        "de_vs_magnitude_run": section if comparison else None,
        "de_vs_magnitude_with_recovery": paired,
        "threads": args.threads,
        **run_provenance,
    }
    old_path = RESULTS / f"{args.name}.json"
    if args.update and old_path.exists():
        old = json.loads(old_path.read_text())
        same = old.get("teacher") == record["teacher"]

        def key(p: dict) -> str:
            return json.dumps([p["sparsity_target"], p["max_drop_budget_pt"]], sort_keys=True)

        if same:
            new_keys = {key(p) for p in points}
            kept = [p for p in old.get("points", []) if key(p) not in new_keys]
            record["points"] = sorted(kept + points, key=lambda p: p["max_drop_budget_pt"])
        if comparison is None and same:
            record.update(de_vs_magnitude_no_retraining=old.get("de_vs_magnitude_no_retraining"),
                          de_vs_magnitude_run=old.get("de_vs_magnitude_run"))  # fmt: skip
        if paired is None and same:
            record["de_vs_magnitude_with_recovery"] = old.get("de_vs_magnitude_with_recovery")
    write_json(RESULTS / f"{args.name}.json", record)


if __name__ == "__main__":
    main()
