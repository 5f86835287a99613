"""Coverage over timm's CNN families: prunus end to end vs Torch-Pruning, one small model per family.

Families and models (the plan, computed once and kept in the results file until timm changes or
`--replan`):

1. Every architecture of `timm.list_models()` (no pretrained tags; timm's `test_*` models left
   out) gets a family key: its timm module (`timm.list_modules()`: resnet, efficientnet, ...) and
   its name's stem (`family_key`): the name split at "_", size and width tokens dropped (a token
   that is a size word such as small/tiny/atto, or at most 2 characters like b0/s/l0), trailing
   depth/variant digits stripped (resnet18d -> resnet, dla46x -> dla, res2net50 -> res2net; a
   version such as mobilenetv3 is kept). So `resnet` and `ecaresnet` and `seresnext` are distinct
   families of the resnet module; `mixnet`, `mnasnet` and `tf_efficientnet` (TF-ported "same"
   padding) of the efficientnet module; `mobilenetv3_small_050` and `mobilenetv3_large_100` one.
2. Every architecture is built on the meta device (`timm.create_model(name, num_classes=10)`,
   shapes only) for its parameter count. Per family, candidates are tried from the fewest parameters
   up (ties: by name) with a 1x3x64x64 forward on the meta device, also with `img_size=64` (timm's
   argument for models built for a fixed input size); the family's model is the first that runs.
3. The family is a CNN family when, in that model at 64x64, convolutions (`nn.Conv1d/2d/3d` and
   subclasses) do at least half of the multiply-accumulates of its convolutions and linear layers
   together (counted by forward hooks from the shapes: a ViT's only conv is its patch embedding).
   Families without a model that runs at 64x64, or below half, are listed as excluded with the reason.

(Rules 1-3 live in `_timm_families.py`.) Each arm of each model runs in a worker process with 1
thread and a timeout (a hanging model cannot stop the run: its worker is killed and replaced; a
worker imports and warms up once, with one untimed prune of a small conv net by each library, and
then serves model after model); `--jobs` workers at a time; the models in a seeded shuffled order
(a stopped run has measured a sample), the arms in alternating order from one model to the next; on
`prunus.create_model("timm:NAME", num_classes=10, **plan kwargs)`
(= `timm.create_model`, random initialisation, seed 0) at input 1x3x64x64:

- prunus: `prunus.prune(model, x, keep_macs=0.5)` (default criterion and layer filter: timm's stem
  and classifier kept) -> `prune` (also fails when any conv, linear or norm layer is left with 0
  channels) -> `forward` at batch 3 (eval, finite logits of shape (3, 10)) -> `train` (one SGD step
  at batch 4 on a copy, finite loss) -> `save_load` (`prunus.save` / `prunus.load` with no trust flag, outputs
  bit-equal) -> `onnx` (`prunus.deploy.export.export_onnx`: onnxruntime vs torch: every output
  within 1e-4 + 1e-4 x |torch|) ->
  `macs` (MACs kept / dense, by `prunus.count`, within 5% below the requested 0.5: [0.475, 0.5]; or,
  where the model cannot reach 0.5, prunus's `BudgetNotMetWarning` saying so and why, and the share it
  says it keeps equal to the recount: such models are listed as "out of reach").
- Torch-Pruning: `tp.pruner.BasePruner(model, x, importance=GroupMagnitudeImportance(p=1),
  pruning_ratio=1 - sqrt(0.5), ignored_layers=[the same stem and classifier])` + `step()`; the
  ratio is the uniform channel ratio that halves MACs when MACs scale with width squared. The same
  steps, with Torch-Pruning's own save/load (`torch.save(tp.state_dict(m))` -> `tp.load_state_dict`
  on a fresh model; pickle) and no MACs target (its MACs kept is recorded, not judged).

A model passes when every step of the arm passes; the prune time is the `prune` step's wall time
(prunus: the whole public call, tracing and its report's MAC counts included; Torch-Pruning: pruner
construction + step). The prune-time ratio is the median over the models both arms pruned of
prunus / Torch-Pruning.

    PYTHONPATH=$PWD .venv/bin/python benchmarks/coverage_timm.py [--jobs 2] [--force | --stale] [--models a b]

Results go to benchmarks/results/coverage_timm.json after every model, each with the commit it was
measured at: a rerun skips the models already recorded (resume) unless `--force`, or `--stale` (those
recorded at another commit). `--jobs N` runs N models at a time (each 1 thread).
timm imports torchvision; where none loads (these machines), the tests' stand-in (tests/_stand_ins)
is put on the path, as tests/conftest.py does.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import random
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "coverage_timm.json"
MACS_RATIO = 0.5
MACS_TOLERANCE = 0.05  # met when kept is in [ratio * (1 - tolerance), ratio]
TP_RATIO = 1 - math.sqrt(MACS_RATIO)
OTHER_BATCH = 3
TRAIN_BATCH = 4
TIMEOUT_S = 300
STEPS = ("prune", "forward", "train", "save_load", "onnx", "macs")
ARMS = ("prunus", "torch_pruning")

sys.path.insert(0, str(Path(__file__).resolve().parent))  # _common and _timm_families, when imported by a test
from _common import print_table, read_json, write_json  # noqa: E402
from _timm_families import NUM_CLASSES, SHAPE, family_key, make_plan, torchvision_or_stand_in  # noqa: E402
from _timm_families import reason as _reason  # noqa: E402

__all__ = ["family_key", "main", "summarise"]


# ----------------------------------------------------------------------------- one arm, one model
def _zero_width(model: Any) -> str | None:
    """The first conv, linear or norm layer left with 0 channels, if any."""
    from torch import nn

    for name, m in model.named_modules():
        widths = []
        if isinstance(m, nn.modules.conv._ConvNd):
            widths = [m.in_channels, m.out_channels]
        elif isinstance(m, nn.Linear):
            widths = [m.in_features, m.out_features]
        elif isinstance(m, (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)):
            weight = getattr(m, "weight", None)
            widths = [weight.numel()] if weight is not None else []
        if any(w == 0 for w in widths):
            return f"{name} ({type(m).__name__}) has 0 channels"
    return None


def _run_arm(arm: str, name: str, kwargs: dict[str, Any]) -> dict[str, Any]:
    """Every step of `arm` on `name`: {step: {"ok", "reason"?}, "prune_s", "macs_kept", "pass"}."""
    import copy
    import warnings

    import torch

    import prunus
    from prunus.models.info import get_info

    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = prunus.create_model(f"timm:{name}", num_classes=NUM_CLASSES, **kwargs).eval()
    info = get_info(model)
    dense_macs = prunus.count(model, SHAPE).macs
    x = torch.zeros(1, *SHAPE)
    out: dict[str, Any] = {}

    def step(key: str, fn: Any) -> bool:
        if any(not out[k]["ok"] for k in ("prune",) if k in out) and key != "prune":
            out[key] = {"ok": False, "reason": "skipped: prune failed"}
            return False
        try:
            reason = fn()
        except Exception as exc:
            reason = _reason(exc)
        out[key] = {"ok": reason is None} if reason is None else {"ok": False, "reason": reason}
        return reason is None

    def do_prune() -> str | None:
        nonlocal model
        start = time.perf_counter()
        if arm == "prunus":
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                model, _ = prunus.prune(model, x, keep_macs=MACS_RATIO)
            out_of_reach = [str(w.message) for w in caught if "cannot be reached" in str(w.message)]
            if out_of_reach:
                out["budget_out_of_reach"] = out_of_reach[0]
        else:
            import torch_pruning as tp

            ignored = [model.get_submodule(n) for n in info.ignored]
            pruner = tp.pruner.BasePruner(model, x, importance=tp.importance.GroupMagnitudeImportance(p=1),
                                          pruning_ratio=TP_RATIO, ignored_layers=ignored)  # fmt: skip
            pruner.step()
        out["prune_s"] = time.perf_counter() - start
        return _zero_width(model)

    def do_forward() -> str | None:
        with torch.no_grad():
            y = model.eval()(torch.randn(OTHER_BATCH, *SHAPE, generator=torch.Generator().manual_seed(1)))
        finite = bool(torch.isfinite(y).all())
        if tuple(y.shape) != (OTHER_BATCH, NUM_CLASSES) or not finite:
            return f"forward at batch {OTHER_BATCH} gave shape {tuple(y.shape)}, finite: {finite}"
        return None

    def do_train() -> str | None:
        # on a copy: one SGD step from a random init can make a model's eval outputs non-finite (timm's
        # mobilenetv4_hybrid_medium_075 does so dense), which is not what the later steps check
        trained = copy.deepcopy(model).train()
        opt = torch.optim.SGD(trained.parameters(), lr=0.01, momentum=0.9)
        xb = torch.randn(TRAIN_BATCH, *SHAPE, generator=torch.Generator().manual_seed(2))
        yb = torch.arange(TRAIN_BATCH) % NUM_CLASSES
        loss = torch.nn.functional.cross_entropy(trained(xb), yb)
        opt.zero_grad()
        loss.backward()
        opt.step()
        return None if torch.isfinite(loss) else f"loss is {float(loss)}"

    def do_save_load() -> str | None:
        xs = torch.randn(2, *SHAPE, generator=torch.Generator().manual_seed(3))
        with torch.no_grad():
            want = model.eval()(xs)
        with tempfile.TemporaryDirectory() as tmp:
            if arm == "prunus":
                prunus.save(model, Path(tmp) / "m", input_shape=SHAPE)
                loaded = prunus.load(Path(tmp) / "m")
            else:
                import torch_pruning as tp

                torch.save(tp.state_dict(model), Path(tmp) / "m.pth")
                torch.manual_seed(0)
                loaded = prunus.create_model(f"timm:{name}", num_classes=NUM_CLASSES, **kwargs)
                tp.load_state_dict(loaded, state_dict=torch.load(Path(tmp) / "m.pth", weights_only=False))
            with torch.no_grad():
                got = loaded.eval()(xs)
        if not torch.equal(got, want):
            return f"loaded model's outputs differ by {float((got - want).abs().max()):.3g}"
        return None

    def do_onnx() -> str | None:
        from prunus.deploy.export import export_onnx

        with tempfile.TemporaryDirectory() as tmp:
            xs = torch.randn(2, *SHAPE, generator=torch.Generator().manual_seed(4))
            export_onnx(copy.deepcopy(model), Path(tmp) / "m.onnx", xs)  # raises beyond 1e-4 + 1e-4 x |torch|
        return None

    def do_macs() -> str | None:
        kept = prunus.count(model, SHAPE).macs / dense_macs
        out["macs_kept"] = kept
        if arm != "prunus" or MACS_RATIO * (1 - MACS_TOLERANCE) <= kept <= MACS_RATIO + 1e-9:
            return None
        warned = out.get("budget_out_of_reach")
        if warned is None:
            return f"kept {kept:.3f} of the MACs, requested {MACS_RATIO}"
        # out of reach: passes when prunus said so and why, and what it said it keeps is what the recount finds
        said = re.search(r"which keeps ([0-9.]+) of the MACs", warned)
        if said is None or abs(float(said.group(1)) - kept) > 5e-4 or kept <= MACS_RATIO:
            return f"kept {kept:.3f} of the MACs, requested {MACS_RATIO}; the warning said: {warned}"
        return None

    for key, fn in zip(STEPS, (do_prune, do_forward, do_train, do_save_load, do_onnx, do_macs), strict=True):
        step(key, fn)
    out["pass"] = all(out[k]["ok"] for k in STEPS)
    out["dense_macs"] = dense_macs
    return out


def _warm_up() -> None:
    """One untimed prune by each library on a small conv net: first-call costs stay out of the timings."""
    import torch
    import torch_pruning as tp
    from torch import nn

    import prunus

    def net() -> nn.Module:
        return nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 8, 3), nn.ReLU(),
                             nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 2))  # fmt: skip

    x = torch.zeros(1, 3, 16, 16)
    prunus.prune(net(), x, remove_channels=0.5)
    model = net()
    tp.pruner.BasePruner(model, x, importance=tp.importance.GroupMagnitudeImportance(p=1), pruning_ratio=0.5,
                         ignored_layers=[model[7]]).step()  # fmt: skip


RECORD = "@@coverage-record "  # marks the worker's own lines on stdout (models may print there too)
READY_S = 600  # for a worker to import everything and warm up; not charged to any model


def _serve() -> None:
    """Subprocess entry (`--serve`): warm up, say ready, then one arm per stdin line, one record line each."""
    import warnings

    import torch

    warnings.filterwarnings("ignore")
    torchvision_or_stand_in()
    torch.set_num_threads(1)
    _warm_up()
    print(RECORD + "ready", flush=True)
    for line in sys.stdin:
        task = json.loads(line)
        try:
            record = _run_arm(task["arm"], task["model"], task["kwargs"])
        except Exception as exc:  # building or counting the dense model failed: every step fails with it
            record = _failed(f"setup: {_reason(exc)}")
        print(RECORD + json.dumps(record), flush=True)


def _failed(reason: str) -> dict[str, Any]:
    return {k: {"ok": False, "reason": reason} for k in STEPS} | {"pass": False}


class _Worker:
    """A `--serve` subprocess (1 thread), reused from one model to the next (imports and warm-up once);
    killed and replaced after a timeout or a crash, so a hanging model costs its timeout and nothing more."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen[str] | None = None

    def _start(self) -> str | None:
        import queue
        import threading

        env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONPATH=os.pathsep.join(
            [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]))  # fmt: skip
        self.err = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 (closed by close(), with the process)
        self.proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--serve"], env=env,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.err, text=True,
                                     start_new_session=True)  # fmt: skip
        self.lines: queue.Queue[str | None] = queue.Queue()

        def read(proc: subprocess.Popen[str], lines: queue.Queue[str | None]) -> None:
            for line in proc.stdout:  # type: ignore[union-attr]
                if line.startswith(RECORD):
                    lines.put(line[len(RECORD) :].strip())
            lines.put(None)  # end of output: the process died

        threading.Thread(target=read, args=(self.proc, self.lines), daemon=True).start()
        got = self._get(READY_S)
        return None if got == "ready" else self._died(got, READY_S)

    def _get(self, timeout: float) -> str | None | bool:
        import queue

        try:
            return self.lines.get(timeout=timeout)
        except queue.Empty:
            return False

    def _died(self, got: str | None | bool, timeout: float) -> str:
        """Why no record came (and the worker is gone): a timeout, or a crash with its last stderr line."""
        if got is False:
            self.close()
            return f"timeout: no result within {timeout:.0f} s"
        assert self.proc is not None
        code = self.proc.wait()
        self.err.seek(0)
        tail = (self.err.read().strip().splitlines() or ["-"])[-1][:300]
        self.close()
        return f"crashed (exit {code}): {tail}"

    def run(self, arm: str, name: str, kwargs: dict[str, Any], timeout: float) -> dict[str, Any]:
        """One arm on one model; a failed record when it takes over `timeout` seconds or the worker dies."""
        if self.proc is None:
            why = self._start()
            if why is not None:
                return _failed(f"worker did not start: {why}")
        assert self.proc is not None
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(json.dumps({"arm": arm, "model": name, "kwargs": kwargs}) + "\n")
            self.proc.stdin.flush()
        except BrokenPipeError:
            return _failed(self._died(None, timeout))
        got = self._get(timeout)
        if not isinstance(got, str):
            return _failed(self._died(got, timeout))
        return json.loads(got)

    def close(self) -> None:
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
            self.err.close()
            self.proc = None


def _spawn(arm: str, name: str, kwargs: dict[str, Any], timeout: float) -> dict[str, Any]:
    """One arm on one model in a fresh worker (the worker's start is not charged to `timeout`)."""
    worker = _Worker()
    try:
        return worker.run(arm, name, kwargs, timeout)
    finally:
        worker.close()


# ----------------------------------------------------------------------------- summary and main
def summarise(run: dict[str, Any]) -> dict[str, Any]:
    """Pass counts per arm and step, models prunus passes that Torch-Pruning does not (and back), time ratio."""
    models = [f["model"] for f in run["plan"]["families"] if f["model"] in run["models"]]
    summary: dict[str, Any] = {"models": len(models)}
    for arm in ARMS:
        recs = [run["models"][m][arm] for m in models if arm in run["models"][m]]
        summary[arm] = {
            "pass": sum(r["pass"] for r in recs),
            "ran": len(recs),
            "steps": {k: sum(r[k]["ok"] for r in recs) for k in STEPS},
        }
    both = [m for m in models if all(a in run["models"][m] for a in ARMS)]
    summary["prunus_out_of_reach"] = sorted(m for m in models if run["models"][m].get("prunus", {}).get("pass")
                                            and run["models"][m]["prunus"].get("budget_out_of_reach"))  # fmt: skip
    summary["only_prunus"] = [m for m in both if run["models"][m]["prunus"]["pass"]
                              and not run["models"][m]["torch_pruning"]["pass"]]  # fmt: skip
    summary["only_torch_pruning"] = [m for m in both if run["models"][m]["torch_pruning"]["pass"]
                                     and not run["models"][m]["prunus"]["pass"]]  # fmt: skip
    timed = [m for m in both if all(run["models"][m][a]["prune"]["ok"] and run["models"][m][a].get("prune_s")
                                    for a in ARMS)]  # fmt: skip
    ratios = [run["models"][m]["prunus"]["prune_s"] / run["models"][m]["torch_pruning"]["prune_s"] for m in timed]
    summary["time_ratio_models"] = len(ratios)
    summary["median_time_ratio"] = statistics.median(ratios) if ratios else None
    times = [run["models"][m]["prunus"]["prune_s"] for m in models if run["models"][m]["prunus"].get("prune_s")]
    summary["prunus_prune_s_max"] = max(times) if times else None
    summary["prunus_over_20s"] = sorted(m for m in models if run["models"][m]["prunus"].get("prune_s", 0) > 20)
    return summary


def _load(path: Path) -> dict[str, Any]:
    return read_json(path) if path.exists() else {}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--out", default=str(RESULTS))
    ap.add_argument("--force", action="store_true", help="rerun models already recorded")
    ap.add_argument("--stale", action="store_true", help="rerun models recorded at another commit than this one")
    ap.add_argument("--replan", action="store_true", help="recompute the families even if timm did not change")
    ap.add_argument("--models", nargs="*", help="only these models (of the plan)")
    ap.add_argument("--timeout", type=float, default=TIMEOUT_S, help="seconds per model and arm")
    ap.add_argument("--jobs", type=int, default=1, help="models at a time (and processes for the plan)")
    ap.add_argument("--plan-only", action="store_true", help="print the families and stop")
    args = ap.parse_args(argv)
    if args.serve:
        _serve()
        return 0
    torchvision_or_stand_in()
    import timm
    import torch_pruning as tp

    from prunus import provenance
    from prunus._version import git_commit

    out = Path(args.out)
    run = _load(out)
    if args.replan or run.get("plan", {}).get("timm") != timm.__version__:
        print("planning: building every timm architecture on the meta device ...", flush=True)
        run = {"plan": make_plan(args.jobs), "models": {} if args.replan else run.get("models", {})}
        write_json(out, run)  # the plan alone takes minutes: keep it
    plan = run["plan"]
    print(f"{len(plan['families'])} CNN families, {len(plan['excluded'])} excluded", flush=True)
    if args.plan_only:
        for f in plan["families"]:
            print(f"  {f['family']:40s} {f['model']:36s} {f['params']:>12,} conv {f['conv_share']:.2f}")
        return 0
    # a seeded shuffle: a run stopped part-way has measured a sample of the families, not the first letters
    order = sorted(plan["families"], key=lambda f: random.Random(f["model"]).random())
    todo = [(i, f) for i, f in enumerate(order) if not args.models or f["model"] in args.models]
    commit, dirty = git_commit()  # per model: a resumed run may span commits
    measured_at = f"{commit}{'+modified' if dirty else ''}" if commit else None

    def due(model: str) -> bool:
        record = run["models"].get(model)
        return record is None or args.force or (args.stale and record.get("commit") != measured_at)

    todo = [(i, f) for i, f in todo if due(f["model"])]
    import threading
    from concurrent.futures import ThreadPoolExecutor

    local, workers = threading.local(), []

    def one(item: tuple[int, dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]]:
        i, fam = item
        if not hasattr(local, "worker"):  # one worker process per job thread
            local.worker = _Worker()
            workers.append(local.worker)
        order = ARMS if i % 2 == 0 else ARMS[::-1]  # alternating: neither library always goes first
        return fam, {arm: local.worker.run(arm, fam["model"], fam["kwargs"], args.timeout) for arm in order}

    with ThreadPoolExecutor(max(1, args.jobs)) as pool:  # threads only wait on the worker processes
        for n, (fam, record) in enumerate(pool.map(one, todo), 1):
            run["models"][fam["model"]] = {"family": fam["family"], "commit": measured_at, **record}
            marks = "  ".join(f"{arm} {'pass' if record[arm]['pass'] else 'FAIL'} "
                              f"{record[arm].get('prune_s', float('nan')):.2f}s" for arm in ARMS)  # fmt: skip
            print(f"[{n}/{len(todo)}] {fam['model']}: {marks}", flush=True)
            run.update(_meta(args, timm.__version__, tp.__version__, provenance))
            write_json(out, run)  # after every model: a rerun resumes here
    for worker in workers:
        worker.close()
    run.update(_meta(args, timm.__version__, tp.__version__, provenance))
    run["summary"] = summarise(run)
    write_json(out, run)
    _print(run)
    return 0


def _meta(args: argparse.Namespace, timm_version: str, tp_version: str, provenance: Any) -> dict[str, Any]:
    return {
        "figure": "timm CNN family coverage: prunus vs Torch-Pruning",
        "definition": (
            f"one model per timm CNN family at 1x{'x'.join(map(str, SHAPE))}, 10 classes, random init: prune "
            f"(prunus keep_macs={MACS_RATIO}; Torch-Pruning BasePruner + GroupMagnitudeImportance(p=1) at "
            f"pruning_ratio={TP_RATIO:.4f}) -> forward at batch {OTHER_BATCH} -> one SGD step at batch "
            f"{TRAIN_BATCH} (on a copy) -> save/load equal -> ONNX + onnxruntime equal -> MACs kept (prunus: within "
            f"{MACS_TOLERANCE:.0%} below the request, or out of the model's reach with a warning that says why and "
            "the share it keeps); each arm in a worker process, 1 thread, with a timeout (its "
            "seconds are in each timeout's reason)"
        ),
        "command": "PYTHONPATH=$PWD .venv/bin/python benchmarks/coverage_timm.py",
        "timm": timm_version,
        "torch_pruning": tp_version,
        "load_average": os.getloadavg()[0],
        **provenance(
            config={
                "input_shape": list(SHAPE),
                "macs_ratio": MACS_RATIO,
                "tp_ratio": TP_RATIO,
                "timeout_s": args.timeout,
                "threads": 1,
            }
        ),  # fmt: skip
    }


def _print(run: dict[str, Any]) -> None:
    s = run["summary"]
    rows = [(arm, f"{s[arm]['pass']}/{s['models']}", *(s[arm]["steps"][k] for k in STEPS)) for arm in ARMS]
    print_table(run["definition"], ("arm", "pass", *STEPS), rows)
    print(f"median prune-time ratio prunus / Torch-Pruning: {s['median_time_ratio']} over {s['time_ratio_models']}")


if __name__ == "__main__":
    raise SystemExit(main())
