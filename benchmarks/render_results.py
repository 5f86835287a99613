"""The README results block and docs/RESULTS.md, rendered from committed benchmark result files.

Every number in the README's results section comes from a JSON (or Markdown) file that a script
in benchmarks/ wrote, so the README cannot drift from what was measured. This is repository
tooling, not part of the package:

    python benchmarks/render_results.py --readme README.md --markdown docs/RESULTS.md   # make results

rewrites the block between the RESULTS markers and the document, and a test regenerates both
byte for byte. Missing files are skipped.

Example:
    >>> import tempfile
    >>> render(tempfile.mkdtemp()).splitlines()[0]
    '## Results'
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _common import read_json, read_text, write_text
from _results_summary import summary

__all__ = ["BEGIN", "END", "main", "render", "replace_block", "update_readme", "write_document"]

ROOT = Path(__file__).resolve().parents[1]

BEGIN, END = "<!-- RESULTS -->", "<!-- /RESULTS -->"
Row = tuple[str, str, str, str]


def _machine(run: dict[str, Any]) -> str:
    # results written before prunus.provenance() put the torch version inside "machine"
    return run["machine"] if "torch" not in run else f"{run['machine']}, torch {run['torch']}"


def _pct(x: float) -> str:
    return f"{100 * x:.2f}%"


class _Results:
    """Read-only view of one results directory: bounded reads of regular files (`prunus._io.safe`)."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise ValueError(f"results directory {self.root} is not a directory")
        self.last: Path | None = None  # the file read last: named when its content is not what we expect

    def load(self, name: str) -> dict[str, Any] | None:
        path = self.root / f"{name}.json"
        return self.read_json(path) if os.path.lexists(path) else None

    def read_json(self, path: Path) -> Any:
        self.last = path
        data = read_json(path, "result file")
        if not isinstance(data, dict):
            raise ValueError(f"result file {path} holds a {type(data).__name__}, not a JSON object")
        return data

    def read_text(self, path: Path) -> str:
        self.last = path
        return read_text(path, "result file")

    def glob(self, pattern: str) -> list[Path]:
        return sorted(self.root.glob(pattern))


def _training(res: _Results) -> list[str]:
    run = res.load("train_resnet20_fmnist")
    if run is None:
        return []
    m = run["metrics"]
    minutes = run.get("train_seconds", m["seconds"]) / 60
    return [
        "### Training",
        "",
        "| model | data | epochs | last-epoch test acc | test acc at best-val epoch | params | MACs | wall time |",
        "|---|---|---|---|---|---|---|---|",
        f"| ResNet-20 | Fashion-MNIST (55k train / 5k val / 10k test) | {m['epochs']} | "
        f"{_pct(run['last_epoch_test_acc'])} | {_pct(run['test_acc_at_best_val_epoch'])} "
        f"(epoch {run['best_val_epoch']}) | {m['params']:,} | {m['macs']:,} | {minutes:.0f} min |",
        "",
        f"`{run['command']}` on {_machine(run)}. {run.get('note', '')}".rstrip(),
        "",
    ]


def _engine_rows(res: _Results) -> list[Row]:
    rows: list[Row] = []
    engine = res.load("engine")
    if engine:
        rows.append(
            ("engine overhead (Trainer / hand-written loop, ResNet-20)", f"{engine['ratio']:.3f}", engine["target"],
             "`benchmarks/bench_engine.py`")
        )  # fmt: skip
    loader = res.load("loader")
    if loader:
        rows.append(
            ("loader throughput, augmented Fashion-MNIST, 2 threads",
             f"{loader['protocol_images_per_s']:,.0f} images/s", f">= {loader['target_images_per_s']:,} images/s",
             "`benchmarks/bench_loader.py`")
        )  # fmt: skip
    evals = res.load("eval_batch")
    if evals:
        rows += _eval_batch_rows(evals)
    return rows


def _eval_batch_rows(evals: dict[str, Any]) -> list[Row]:
    """The default eval batch's worst slow-down over the models measured, against the best worst case."""
    from prunus.data.bundle import DEFAULT_EVAL_BATCH_SIZE  # the current default, against what was measured

    models = evals["models"]
    batches = [b for b in models[0]["over_best"] if all(b in m["over_best"] for m in models)] if models else []
    default = str(DEFAULT_EVAL_BATCH_SIZE)
    if default not in batches:
        return []
    worst = {b: max(m["over_best"][b] for m in models) for b in batches}
    best = min(batches, key=worst.get)
    detail = ", ".join(f"{m['model']} {m['over_best'][default]:.2f}" for m in models)
    return [
        (f"evaluation time, default eval batch {default} / fastest batch per model, 10k images, 2 threads ({detail}; "
         f"batch 1024: worst {worst.get('1024', float('nan')):.2f})",
         f"{worst[default]:.2f}", f"<= {worst[best]:.2f} (the smallest worst case measured, batch {best})",
         "`benchmarks/bench_eval_batch.py`")
    ]  # fmt: skip


def _pruning_rows(res: _Results) -> list[Row]:
    rows: list[Row] = []
    for path in res.glob("prune_speed*.json"):
        speed = res.read_json(path)
        variant = "stem pruned too" if speed.get("prune_stem") else "stem and fc kept (default)"
        script = f"`benchmarks/bench_prune_speed.py{' --prune-stem' if speed.get('prune_stem') else ''}`"
        macs = speed["macs"]
        rows.append(
            (f"prune time: graph + 50% prune of ResNet-56, prunus / Torch-Pruning ({variant})",
             f"{speed['time_ratio']:.2f}", speed["time_target"], script)
        )  # fmt: skip
        if "latency_efficiency" in speed:
            per_runtime = ", ".join(
                f"{r['runtime']} {r['efficiency']:.2f}" for r in speed["latency"]["speedups"] if r["batch"] == 64
            )
            rt64, eff64 = _deployed(speed["latency"]["speedups"], 64)
            rows.append(
                (f"latency efficiency, ResNet-56 50% channels ({variant}; round_to 1, like Torch-Pruning), MACs cut "
                 f"{macs['dense'] / macs['prunus']:.2f}x, batch 64 (every runtime: {per_runtime})",
                 f"{eff64:.2f} ({rt64})", ">= 0.85 (fastest runtime, batch 64)", script)
            )  # fmt: skip
    overhead = res.load("method_overhead")
    if overhead:
        for arm, ratio in overhead["ratio"].items():
            rows.append(
                (f"method overhead: {arm} epoch time / plain", f"{ratio:.3f}", overhead["target"][arm],
                 "`benchmarks/bench_method_overhead.py`")
            )  # fmt: skip
    react = res.load("reactivation_overhead")
    if react:
        load = f"load {react['load_average'][0]:.0f} on 2 cores"
        for key, hook, label, target in (
            ("we", "we", "WE epoch time / plain", "<= 1.02"),
            ("graft2_per_network_vs_pop2", "graft2", "grafting time per network / plain network, 2 in one process",
             "<= 1.05"),
        ):  # fmt: skip
            # results written before issue 26 timed 1-epoch rounds: their round share is an epoch's
            share = 100 * react.get("hook_share_of_plain_epoch", react["hook_share_of_plain_round"])[hook]
            rows.append(
                (f"reactivation overhead: {label} ({load}; hook work alone: {share:.2f}% of an epoch)",
                 f"{react['ratio'][key]:.3f}", target, "`benchmarks/bench_reactivation_overhead.py`")
            )  # fmt: skip
    dist = res.load("graft_distributed_overhead")
    if dist:
        rounds = ", ".join(f"{x:.3f}" for x in dist["per_round_ratio"])
        rows.append(
            (f"reactivation overhead: grafting time per network under torchrun (2 ranks) / plain network (rounds "
             f"{rounds}; load {dist['load_before'][0]:.0f} on 2 cores)", f"{dist['ratio']:.3f}", dist["target"],
             f"`{dist['command']}`")
        )  # fmt: skip
    csgd = res.load("csgd_overhead")
    if csgd:
        rows.append(
            ("method overhead: csgd epoch time / plain", f"{csgd['ratio']:.3f}", csgd["target"],
             "`benchmarks/bench_csgd_overhead.py`")
        )  # fmt: skip
    return rows


def _deployed(speedups: list[dict], batch: int) -> tuple[str, float] | None:
    """(runtime, efficiency) where the pruned model runs fastest at `batch`; None if not measured."""
    rows = [r for r in speedups if r["batch"] == batch]
    if not rows:
        return None
    row = min(rows, key=lambda r: r["pruned_ms"])
    return row["runtime"], row["efficiency"]


def _latency_rows(res: _Results) -> list[Row]:
    """Rows of benchmarks/bench_latency.py: efficiency per round_to, and latency budgets met as measured."""
    rows: list[Row] = []
    for path in res.glob("latency_*.json"):
        run = res.read_json(path)
        model, cmd = run["model"], f"`benchmarks/bench_latency.py --model {run['model']}`"
        load = run.get("efficiency_load_before", [None])[0]
        where = f"1 thread, load avg {load:.0f} on 2 cores" if load is not None else "1 thread"
        for arm in run.get("efficiency", []):
            per_rt = ", ".join(f"{r['runtime']} {r['efficiency']:.2f}" for r in arm["speedups"] if r["batch"] == 64)
            b1 = _deployed(arm["speedups"], 1)
            rt64, eff64 = _deployed(arm["speedups"], 64)
            resolved = arm.get("round_to_resolved", arm["round_to"])
            round_to = f"{arm['round_to']} (= {resolved})" if resolved != arm["round_to"] else str(resolved)
            cut = arm.get("cut", {"remove_channels": 0.5})
            what = (
                "50% channels"
                if cut.get("remove_channels") == 0.5
                else f"keep_macs {cut['keep_macs']:.3f} (the 50% cut's MACs)"
                + (", residual streams kept" * bool(cut.get("keep_streams")))
            )
            first = run["efficiency"][0]["round_to"]
            flags = (
                f" --round-to {first},{arm['round_to']} --streams"
                if cut.get("keep_streams")
                else f" --round-to {arm['round_to']}"
            )
            rows.append(
                (
                    f"latency efficiency, {model} {what}, round_to {round_to}, MACs cut "
                    f"{arm['macs_ratio']:.2f}x, batch 64 (every runtime: {per_rt}; batch 1 on its fastest runtime "
                    f"{'-' if b1 is None else f'{b1[1]:.2f} ({b1[0]})'}; {where})",
                    f"{eff64:.2f} ({rt64})",
                    ">= 0.85 (fastest runtime, batch 64)",
                    f"`benchmarks/bench_latency.py --model {model}{flags}`",
                )
            )
        for b in run.get("budgets", []):
            rows.append(
                (
                    f"latency budget, {model}, {run.get('budget_runtime')} batch 64: requested {b['requested']}, "
                    f"measured by prune {b['measured_by_prune']:.3f}, re-measured {b['remeasured']:.3f} "
                    f"(MACs kept {b['macs_ratio_kept']:.3f})",
                    f"{b['remeasured'] / b['requested']:.2f}",
                    "0.90-1.10 (re-measured / requested)",
                    cmd + f" --skip-efficiency --budgets {b['requested']}",
                )
            )
    return rows


# Benchmark families contributing rows to the performance table, in table order; a new family
# (compression) appends its reader here.
PERFORMANCE_ROWS: list[Callable[[_Results], list[Row]]] = [_engine_rows, _pruning_rows, _latency_rows]


def _performance(res: _Results) -> list[str]:
    rows = [row for reader in PERFORMANCE_ROWS for row in reader(res)]
    if not rows:
        return []
    lines = ["### Performance (ratios measured side by side in one run; medians)", ""]
    lines += ["| figure | measured | target | reproduce |", "|---|---|---|---|"]
    lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]
    return [*lines, ""]


def _accuracy(res: _Results) -> list[str]:
    """Markdown tables that accuracy scripts write next to their JSON (accuracy_*.md), verbatim."""
    lines: list[str] = []
    for md in res.glob("accuracy_*.md"):
        if md.stem.endswith("_runs"):
            continue
        text = res.read_text(md).rstrip()
        if text.startswith("# "):  # a top-level title in its own file is a subsection in the README
            text = "### " + text[2:]
        lines += [text, ""]
        if md.stem.startswith("accuracy_reactivation") and "scored before its evolution" not in text:
            lines += [  # tables from before issue 26's evaluation fix
                "Note: this table predates the fixed evaluation (issue 26). Every network was scored after its "
                "evolution or graft, so with two networks `graft2`, `graft2-mean` and `graft2-ensemble` are the "
                "same averaged network and agree by construction; the `we-reference-rules` and `graft2-difflr` "
                "arms did not exist. The fixed protocol has not been re-run on this model (about 12 hours on the "
                "2-core machine).",
                "",
            ]
        if md.stem == "accuracy_pruning" and "same epoch budget" not in text:  # tables from before issue 13
            lines += [
                "Note: `tp-magnitude` fine-tunes the already trained baseline, so it sees more training epochs "
                "than the SFP/FPGM/MFP arms (which prune while training within the same budget as the baseline).",
                "",
            ]
    return lines


CSGD_FILES = {"accuracy_csgd": "stem and classifier kept", "accuracy_csgd_stem": "stem clustered too"}
CSGD_NOTES = {
    "l1": "group-L1 pruning of the baseline, no fine-tuning",
    "delete": "C-SGD's clusters, all but one member deleted, no fine-tuning",
    "merge-only": "C-SGD's clusters merged without C-SGD training",
    "l1+ft": "l1, then the C-SGD phase's epochs of plain SGD (csgd-merged's fair control)",
    "csgd+ft": "csgd-merged, then more plain SGD",
    "l1+ft-long": "l1, fine-tuned for csgd+ft's total epochs (its fair control)",
}


def _csgd(res: _Results) -> list[str]:
    """C-SGD runs (benchmarks/accuracy_csgd.py), one table per variant, arms as the script recorded them."""
    lines: list[str] = []
    for name, variant in CSGD_FILES.items():
        run = res.load(name)
        if run is None:
            continue
        lines += [
            f"### C-SGD: trained vs merged, and controls at the same widths ({variant})",
            "",
            f"{run['definition']}. Max |logit diff| trained vs merged: **{run['max_logit_diff']:.2e}** "
            "(target < 1e-3).",
            "",
            "| arm | epochs after baseline | test acc | vs baseline (pt) | MACs | params | MACs cut | what it is |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for arm_name, arm in run["arms"].items():
            epochs = arm.get("epochs_after_baseline", "")
            lines.append(
                f"| {arm_name} | {epochs} | {_pct(arm['test_acc'])} | {arm['delta_vs_baseline_pt']:+.2f} | "
                f"{arm['macs']:,} | {arm['params']:,} | {100 * arm['macs_reduction']:.1f}% | "
                f"{CSGD_NOTES.get(arm_name, '')} |"
            )
        lines.append("")
    return lines


# compress_lenet.py --name of each
# compress_resnet20_pairs: DE vs magnitude over seeds, against a retrained teacher (its own file: the
# points of compress_resnet20 were measured against the teacher before it)
COMPRESS_FILES = ("compress_lenet300_100", "compress_lenet5", "compress_resnet20", "compress_resnet20_defaults",
                  "compress_mobilenetv2", "compress_resnet20_pairs")  # fmt: skip
# (model, budget in points) -> (ratio, its words, wall-seconds limit or None): benchmarks.md and the issues
COMPRESS_TARGETS = {
    ("lenet300_100", 1.0): (64, "64x", None),
    ("lenet300_100", 3.0): (100, "100x", None),
    ("resnet20", 1.0): (25, "25x", 600),
}


def _joined(values: Any) -> str:
    return "/".join(str(v) for v in values.values()) if isinstance(values, dict) else str(values)


def _bits(bits: dict[str, int]) -> str:
    """Per-layer bits: each layer's for a few layers, else how many layers got each width.

    Example:
        >>> _bits({"a": 6, "b": 5}), _bits({f"l{i}": 5 + (i % 2) for i in range(6)})
        ('6/5', '6 bits x3, 5 bits x3')
    """
    if len(bits) <= 4:
        return _joined(bits)
    counts: dict[int, int] = {}
    for b in bits.values():
        counts[b] = counts.get(b, 0) + 1
    return ", ".join(f"{b} bits x{n}" for b, n in sorted(counts.items(), reverse=True))


def _compression(res: _Results) -> list[str]:
    """DE compression points (benchmarks/compress_lenet.py): ratio, drop, bits and the order-0 bound."""
    runs = [(name, run) for name in COMPRESS_FILES if (run := res.load(name)) is not None]
    if not runs:
        return []
    lines = [
        "### DE compression: sparsify, quantize, entropy-code into .prn",
        "",
        "| model (teacher test acc) | sparsity (targets) | bits (auto) | test acc drop (budget) | ratio vs fp32 | "
        "stream / order-0 bound | file / bound | file / (bound + fp16 tensors) | target | wall (s) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    notes = []
    for name, run in runs:
        for p in run["points"]:
            budget = float(p["max_drop_budget_pt"])
            want = COMPRESS_TARGETS.get((run["model"], budget))
            met = ""
            if want is not None:
                ratio, words, limit = want
                ok = p["ratio"] >= ratio and p["test_drop_pt"] <= budget + 1e-9
                ok = ok and (limit is None or p["compress_wall_seconds"] <= limit)
                within = "" if limit is None else f" in <= {limit // 60:g} min"
                met = f">= {words} at <= {budget:g} pt{within}: " + ("met" if ok else "**not met**")
            lines.append(
                f"| {run['model']} ({_pct(run['teacher_test_acc'])}) | {100 * p['sparsity']:.1f}% "
                f"({_joined(p['sparsity_target'])}) | {_bits(p['bits'])} | {-p['test_drop_pt']:+.2f} pt "
                f"(<= {budget:g}) | {p['ratio']:.1f}x ({p['file_bytes']:,} B) | {p['stream_over_bound']:.4f} | "
                f"{p['file_over_bound']:.3f} | {p['file_over_floor']:.3f} | {met or '(none)'} | "
                f"{p['compress_wall_seconds']:.0f} |"
            )
            parts = ", ".join(f"{k} {v:,}" for k, v in p["file_parts"].items() if v)
            phases = ", ".join(f"{k} {v:.0f} s" for k, v in p["seconds"].items())
            command = p["run"]["command"]
            notes.append(f"- {run['model']} at {p['ratio']:.1f}x: bytes {parts}; time {phases}; `{command}`")
            arm = p.get("magnitude_arm")
            if arm:  # the same command with population=1: what the search adds over magnitude in the same schedule
                notes.append(
                    f"- {run['model']} at {p['ratio']:.1f}x, the same run with magnitude sets instead of the DE search "
                    f"(population=1; same schedule, recovery, fine-tune and bit budget): test acc drop "
                    f"{-arm['test_drop_pt']:+.2f} pt vs DE's {-p['test_drop_pt']:+.2f} pt, {arm['ratio']:.1f}x vs "
                    f"{p['ratio']:.1f}x, {arm['compress_wall_seconds']:.0f} s"
                )
        dvm = run.get("de_vs_magnitude_no_retraining")
        if dvm:
            accs = " / ".join(f"{100 * r['de_test_acc']:.2f}" for r in dvm["runs"])
            mags = " / ".join(f"{100 * r['magnitude_test_acc']:.2f}" for r in dvm["runs"])
            seeds = ", ".join(str(r["seed"]) for r in dvm["runs"])
            notes.append(
                f"- {run['model']} (teacher {_pct(run['teacher_test_acc'])}), DE vs one-shot magnitude pruning "
                f"without retraining or quantization at "
                f"{_joined(dvm['sparsity'])} (seeds {seeds}): {accs}% vs {mags}% test accuracy, DE "
                f"{dvm['de_minus_magnitude_pt_mean']:+.1f} +- {dvm['de_minus_magnitude_pt_std']:.1f} pt"
            )
    for name, run in runs:
        paired = run.get("de_vs_magnitude_with_recovery")
        if paired:  # DE and magnitude in the same schedule, once per compress seed
            rows = paired["runs"]
            de = " / ".join(f"{-r['de']['test_drop_pt']:+.2f}" for r in rows)
            mag = " / ".join(f"{-r['magnitude']['test_drop_pt']:+.2f}" for r in rows)
            ratios = " / ".join(f"{r['de']['ratio']:.1f}x vs {r['magnitude']['ratio']:.1f}x" for r in rows)
            notes.append(
                f"- {run['model']} (teacher {_pct(run['teacher_test_acc'])}), DE vs magnitude in the same schedule "
                f"(recovery, fine-tunes, bit budget) at "
                f"{_joined(paired['sparsity'])}, <= {paired['max_drop_budget_pt']:g} pt, compress seeds "
                f"{', '.join(str(r['seed']) for r in rows)}: test acc drop {de} pt (DE) vs {mag} pt (magnitude); "
                f"paired, DE {paired['de_minus_magnitude_pt_mean']:+.2f} +- {paired['de_minus_magnitude_pt_std']:.2f} "
                f"pt; ratios {ratios} (`{paired['run']['command']}` at {paired['run']['commit']})"
            )
    for path in res.glob("bit_allocation_*.json"):  # benchmarks/bench_bit_allocation.py
        alloc = res.read_json(path)
        by = {r["search"]: r for r in alloc["runs"]}
        gallop, bisect = by["gallop"], by["bisect"]

        def passes_to(run: dict, goal: int) -> str:
            # best_after_pass[i]: the best within budget after pass i + 2 (pass 1 measures every layer at max bits)
            at = next((i + 2 for i, v in enumerate(run["best_after_pass"]) if v is not None and v <= goal), None)
            return f"{at} passes" if at is not None else "not within its passes"

        notes.append(
            f"- bit allocation in Fisher order on {path.stem.removeprefix('bit_allocation_')} at sparsity "
            f"{alloc['sparsity']:g} ({alloc['layers']} layers, "
            f"{alloc['survivors']:,} weights, {alloc['images']} images, <= {alloc['max_drop']:g} pt, pass limit "
            f"{alloc['pass_limit']}): galloping after each freeze {gallop['passes']} passes, "
            f"{gallop['payload_bits'] / 8:,.0f} payload bytes (mean {gallop['mean_bits']:.2f} bits); bisecting "
            f"{bisect['passes']} passes, {bisect['payload_bits'] / 8:,.0f} B (mean {bisect['mean_bits']:.2f} bits); "
            f"bisection's final size reached by galloping after {passes_to(gallop, bisect['payload_bits'])} "
            f"(`{alloc['command']}` at {alloc['commit']})"
        )
    fuzz = res.load("compress_fuzz")
    if fuzz is not None:
        notes.append(
            f"- fuzz: {fuzz['files']:,} mutated, truncated and re-signed .prn files -> {fuzz['format_error']:,} "
            f"FormatError, {fuzz['loaded']:,} clean loads, {fuzz['other_exceptions']} other exceptions "
            f"(`{fuzz['command']}`, {fuzz['seconds']:.0f} s)"
        )
    return [*lines, "", "Where the bytes and the time go, and the command of each point:", "", *notes, ""]


def _regrowth(res: _Results) -> list[str]:
    """Soft vs hard SFP and MFP's switches, per epoch (benchmarks/regrowth_and_switches.py)."""
    run = res.load("regrowth_and_switches")
    if run is None:
        return []
    lines = [
        "### Soft pruning regrowth and MFP's switches, per epoch",
        "",
        f"`{run['command']}` (one seed, a mechanism check, not an accuracy protocol). `turnover`: channels "
        "masked at the previous selection that are live now (they came back); `regrown`: channels masked at the "
        "previous selection whose filter norm is >= 0.1 x their group's median (alive, not decayed); "
        "`masked norm`: median masked-filter norm / group median (soft: the final mask zeroes them).",
        "",
        "| arm | epoch | val acc | masked | turnover | regrown | masked norm | MFP choice (kept?) | "
        "candidate masks differ by |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for arm, data in run["arms"].items():
        for e in data["epochs"]:
            choice = f"{e['choice']} ({'kept' if e['kept'] else 'switched'})" if "choice" in e else ""
            diff = e.get("mask_diff")
            spread = f"{min(diff.values())}-{max(diff.values())} channels" if diff else ""
            norm = f"{e['masked_norm']:.3f}" if "masked_norm" in e else ""
            lines.append(
                f"| {arm} | {e['epoch']} | {_pct(e['val_acc'])} | {e['channels_masked']} | {e['turnover']} | "
                f"{e['regrown']} | {norm} | {choice} | {spread} |"
            )
    finals = ", ".join(f"{arm} {_pct(d['final']['final_test_acc'])}" for arm, d in run["arms"].items())
    return [*lines, "", f"Final test accuracy (one seed): {finals}.", ""]


def _demo(res: _Results) -> list[str]:
    run = res.load("demo_quickstart")
    if run is None:
        return []
    from prunus.report.render import STAGE_COLUMNS, stage_rows

    table = ["| " + " | ".join(STAGE_COLUMNS) + " |", "|" + "---|" * len(STAGE_COLUMNS)]
    table += ["| " + " | ".join(row) + " |" for row in stage_rows(run["record"])]
    prov = run["provenance"]
    return [
        "### The demo: recipes/quickstart.yaml",
        "",
        *table,
        "",
        f"`{run['command']}`: {run['wall_seconds'] / 60:.1f} min wall on {prov['machine']} (load average "
        f"{run['load_average']}), prunus {prov['prunus']} (commit {prov['commit']}). {run.get('note', '')}".rstrip(),
        "",
    ]


COVERAGE_STEPS = ("prune", "forward", "train", "save_load", "onnx", "macs")
COVERAGE_ARMS = {"prunus": "prunus", "torch_pruning": "Torch-Pruning"}


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _failures(record: dict[str, Any]) -> str:
    """The failed steps of one arm grouped by reason ("skipped" steps after a failed prune left out)."""
    by_reason: dict[str, list[str]] = {}
    for k in COVERAGE_STEPS:
        reason = record[k].get("reason", "")
        if not record[k]["ok"] and not reason.startswith("skipped"):
            by_reason.setdefault(reason, []).append(k)
    if not by_reason:
        return "pass"
    parts = []
    for reason, steps in by_reason.items():
        where = "every step" if len(steps) == len(COVERAGE_STEPS) else ", ".join(steps)
        parts.append(f"{where}: {_cell(reason[:200])}")
    return "<br>".join(parts)


def _measured_at(records: Any, last: str | None) -> str:
    """Which commits the models were measured at (a resumed run can span several): "commit abc (all 152)"."""
    counts: dict[str, int] = {}
    for r in records:
        key = r.get("commit") or f"unrecorded, up to {last}"
        counts[key] = counts.get(key, 0) + 1
    if len(counts) == 1:
        key, n = next(iter(counts.items()))
        return f"commit {key} (all {n} models)"
    return "models measured at commits " + ", ".join(
        f"{k} ({n})" for k, n in sorted(counts.items(), key=lambda kv: -kv[1])
    )


def _coverage(res: _Results) -> list[str]:
    """One model per timm CNN family through prunus and Torch-Pruning (benchmarks/coverage_timm.py)."""
    run = res.load("coverage_timm")
    if run is None:
        return []
    families = run["plan"]["families"]
    done = [f for f in families if f["model"] in run["models"]]
    recs = {f["model"]: run["models"][f["model"]] for f in done}
    n = len(done)
    passes = {arm: sum(r[arm]["pass"] for r in recs.values()) for arm in COVERAGE_ARMS}
    timed = [r for r in recs.values() if all(r[a]["prune"]["ok"] and r[a].get("prune_s") for a in COVERAGE_ARMS)]
    ratios = sorted(r["prunus"]["prune_s"] / r["torch_pruning"]["prune_s"] for r in timed)
    median = (ratios[(len(ratios) - 1) // 2] + ratios[len(ratios) // 2]) / 2 if ratios else None
    only_p = sorted(m for m, r in recs.items() if r["prunus"]["pass"] and not r["torch_pruning"]["pass"])
    only_t = sorted(m for m, r in recs.items() if r["torch_pruning"]["pass"] and not r["prunus"]["pass"])
    slow = sorted((m for m, r in recs.items() if r["prunus"].get("prune_s", 0) > 20))
    out_of_reach = sorted(m for m, r in recs.items() if r["prunus"]["pass"] and r["prunus"].get("budget_out_of_reach"))
    core = {arm: sum(all(r[arm][k]["ok"] for k in ("prune", "forward", "train")) for r in recs.values())
            for arm in COVERAGE_ARMS}  # fmt: skip
    prov = run
    lines = [
        "### Coverage: one model per timm CNN family, prunus vs Torch-Pruning",
        "",
        f"{run['definition']}. Families: timm module + name stem (benchmarks/coverage_timm.py says how), each by its "
        "smallest architecture that runs at 64x64, kept when that model does at least half of its conv + linear MACs "
        f"in convolutions ({len(families)} of {len(families) + len(run['plan']['excluded'])} families; "
        f"{n} measured; timm {run['timm']}, Torch-Pruning "
        f"{run['torch_pruning']}). `{run['command']}` on {prov['machine']} (load average {prov['load_average']:.1f}), "
        f"prunus {prov['prunus']}; {_measured_at(recs.values(), prov['commit'])}.",
        "",
        f"**prunus passes {passes['prunus']} of {n} ({100 * passes['prunus'] / max(n, 1):.0f}%), Torch-Pruning "
        f"{passes['torch_pruning']} of {n} ({100 * passes['torch_pruning'] / max(n, 1):.0f}%)** (target >= 97% "
        f"for prunus)"
        + (
            f", {len(out_of_reach)} of them with keep_macs={run['config']['macs_ratio']} out of the model's reach "
            "(warned, with the share no group can cut and why; MACs kept: "
            + ", ".join(f"{m} {recs[m]['prunus']['macs_kept']:.3f}" for m in out_of_reach)
            + ")"
            if out_of_reach
            else ""
        )
        + f". Passed by prunus only: {len(only_p)}; by Torch-Pruning only: {len(only_t)}"
        + (f" ({', '.join(only_t)})" if only_t else "")
        + ". Median single-shot prune-time ratio prunus / Torch-Pruning (one call per arm inside the end-to-end "
        "check, at the commits above; the repeated side-by-side measurement below is the figure): "
        + (f"{median:.2f} over the {len(ratios)} models both pruned" if median else "-")
        + f"; prunus prunes over 20 s: {', '.join(slow) if slow else 'none'}. On prune + forward + train alone "
        f"(the criterion of the first survey): prunus {core['prunus']}, Torch-Pruning {core['torch_pruning']}.",
        "",
        "| arm | pass | " + " | ".join(COVERAGE_STEPS) + " |",
        "|---|---|" + "---|" * len(COVERAGE_STEPS),
    ]
    for arm, label in COVERAGE_ARMS.items():
        steps = " | ".join(str(sum(r[arm][k]["ok"] for r in recs.values())) for k in COVERAGE_STEPS)
        lines.append(f"| {label} | {passes[arm]}/{n} | {steps} |")
    lines += ["", "| family | model | prunus | prune s | Torch-Pruning | prune s |", "|---|---|---|---|---|---|"]
    for f in done:
        r = recs[f["model"]]
        if r["prunus"]["pass"] and r["torch_pruning"]["pass"]:
            continue
        secs = [f"{r[a]['prune_s']:.2f}" if r[a].get("prune_s") else "-" for a in COVERAGE_ARMS]
        lines.append(f"| {f['family']} | {f['model']} | {_failures(r['prunus'])} | {secs[0]} | "
                     f"{_failures(r['torch_pruning'])} | {secs[1]} |")  # fmt: skip
    both = [
        f"{f['model']}"
        for f in done
        if recs[f["model"]]["prunus"]["pass"] and recs[f["model"]]["torch_pruning"]["pass"]
    ]
    lines += _prune_time(res)
    not_cnn = [f"{e['family']} ({100 * e['conv_share']:.0f}%)" for e in run["plan"]["excluded"] if "conv_share" in e]
    no_model = [f"{e['family']} ({_cell(e['reason'])})" for e in run["plan"]["excluded"] if "conv_share" not in e]
    lines += [
        "",
        f"Passed by both ({len(both)}): {', '.join(both) or 'none'}.",
        "",
        f"Not CNN families (share of conv + linear MACs in convolutions), {len(not_cnn)}: "
        f"{', '.join(not_cnn) or 'none'}.",
        "",
        f"Families without an architecture that runs at 64x64, {len(no_model)}: {'; '.join(no_model) or 'none'}.",
        "",
    ]
    return lines


def _prune_time(res: _Results) -> list[str]:
    """Prune time alone over the same families, both libraries side by side (benchmarks/bench_prune_time_timm.py)."""
    run = res.load("prune_time_timm")
    if run is None:
        return []
    s = run["summary"]
    timed = sorted(((m, r) for m, r in run["models_timed"].items() if r["ratio"]), key=lambda kv: kv[1]["ratio"])
    slowest = ", ".join(f"{m} {r['ratio']:.2f}" for m, r in timed[-5:][::-1])
    fastest = ", ".join(f"{m} {r['ratio']:.2f}" for m, r in timed[:3])
    return [
        "",
        f"Prune time alone ({run['definition']}; `{run['command']}` at {run['commit']} on {run['machine']}, load "
        f"average {run['load_average'][0]:.1f} -> {run['load_average'][1]:.1f}): **median ratio prunus / Torch-Pruning "
        f"{s['median_ratio']:.2f}** over the {s['timed_both']} models both pruned (target <= 1.0), "
        f"{100 * s['share_at_most_1']:.0f}% of them at most 1.0; the slowest prunus prune took "
        f"{s['prunus_max_s']:.2f} s. Highest ratios: {slowest}; lowest: {fastest}.",
    ]


def render(results_dir: str | os.PathLike[str]) -> str:
    """The "## Results" Markdown section for every result file in `results_dir`."""
    res = _Results(results_dir)
    body = []
    for section in (_demo, _training, _performance, _accuracy, _csgd, _regrowth, _compression, _coverage):
        try:
            body += section(res)
        except (KeyError, IndexError, TypeError, AttributeError) as exc:
            # a result file from another version, or edited by hand: name it, never a traceback
            raise ValueError(
                f"result file {res.last} lacks or mistypes a field the results tables need "
                f"({type(exc).__name__}: {exc})"
            ) from None
    header = (
        "## Results\n\nProduced by `python benchmarks/render_results.py` (`make results`) from `benchmarks/results/`; "
        "machine: 2 CPU cores.\n"
    )
    return "\n".join([header, *body]).rstrip() + "\n"


def replace_block(text: str, block: str) -> str:
    """`text` with the part between the RESULTS markers replaced by `block`."""
    if BEGIN not in text:
        raise ValueError(f"no {BEGIN} marker to replace")
    head, _, rest = text.partition(BEGIN)
    _, _, tail = rest.partition(END) if END in rest else ("", "", rest)
    return f"{head}{BEGIN}\n{block}{END}{tail}"


def update_readme(readme: str | os.PathLike[str], results_dir: str | os.PathLike[str]) -> bool:
    """Rewrite the results block of `readme`; returns whether the file changed."""
    path = Path(readme)
    old = read_text(path, "README")
    if BEGIN not in old:
        raise ValueError(f"README {path} has no {BEGIN} marker to replace; add the marker pair where the tables go")
    # the README holds the headline figures; docs/RESULTS.md every table

    new = replace_block(old, summary(results_dir))
    if new != old:
        write_text(path, new)
    return new != old


def write_document(path: str | os.PathLike[str], results_dir: str | os.PathLike[str]) -> None:
    """docs/RESULTS.md: every results table (the README holds only their headline figures)."""
    body = render(results_dir).replace("## Results\n", "", 1).lstrip("\n")
    write_text(
        path,
        "# Results\n\nGenerated by `python benchmarks/render_results.py --markdown docs/RESULTS.md`; "
        "do not edit by hand.\n\n" + body,
    )


def main(argv: list[str] | None = None) -> int:
    """Render the results: print them, or rewrite the README block and/or the results document."""
    import argparse

    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--results", default=str(ROOT / "benchmarks" / "results"), help="benchmark result files")
    ap.add_argument("--readme", help="rewrite the block between this file's RESULTS markers")
    ap.add_argument("--markdown", help="write the tables to this file as a document of their own")
    args = ap.parse_args(argv)
    if args.readme:
        changed = update_readme(args.readme, args.results)
        print(f"{args.readme}: results block {'updated' if changed else 'already up to date'}")
    if args.markdown:
        write_document(args.markdown, args.results)
        print(f"{args.markdown}: written")
    if not (args.readme or args.markdown):
        print(render(args.results), end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
