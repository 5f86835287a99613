"""Latency, size and MACs of a model, and the speed-up of a pruned model over its dense parent.

Timings follow the protocol of docs/benchmarks.md: warm-up calls first, then medians (with p90
and IQR as spread) over repeated single forward calls; dense-vs-pruned comparisons run both
models in one process, interleaved call by call, so machine noise hits both alike, and report
ratios rather than absolute times.

Runtimes, every one the deploy path knows:
- "torch": eager, eval mode, `torch.inference_mode`, the model as given;
- "torch-folded": the same after `prunus.deploy.fold.fold_bn` (BatchNorms folded into their convs;
  skipped with a FoldError if torch.fx cannot trace the model);
- "onnxruntime": CPU provider with every graph optimization, fed an in-memory ONNX export with a
  STATIC batch size per measured batch (shapes known in advance let onnxruntime plan memory and
  pick kernels once); needs `pip install prunus[export]`;
- "openvino": OpenVINO's CPU plugin on the model converted in memory (BN folded) with a STATIC batch,
  compiled with the properties of `prunus.deploy.openvino_ir.cpu_config`: f32 inference precision
  enforced (no silent bf16), one stream, latency hint, `threads` inference threads; needs
  `pip install prunus[openvino]`.
Results name the fastest runtime per batch (`fastest`), so a reader sees which deploy path won.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from prunus.errors import ConfigError, first_line

__all__ = [
    "RUNTIMES",
    "available_runtimes",
    "LatencyComparison",
    "fastest",
    "LatencyRow",
    "SpeedupRow",
    "benchmark_model",
    "compare_latency",
    "measure_latency",
]

RUNTIMES: tuple[str, ...] = ("torch", "torch-folded", "onnxruntime", "openvino")
DEFAULT_BATCHES: tuple[int, ...] = (1, 16, 64)
HEADLINE_BATCH = 64  # benchmarks.md: latency efficiency is judged at batch 64

Runner = Callable[[], Any]


@dataclass(frozen=True)
class LatencyRow:
    """Latency of one runtime at one batch size (times in milliseconds per forward call)."""

    runtime: str
    batch: int
    median_ms: float
    p90_ms: float
    iqr_ms: float
    images_per_s: float
    repeats: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict."""
        return asdict(self)


@dataclass(frozen=True)
class SpeedupRow:
    """Dense vs pruned at one runtime and batch; `efficiency` = speedup / MACs ratio."""

    runtime: str
    batch: int
    dense_ms: float
    pruned_ms: float
    speedup: float
    efficiency: float

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict."""
        return asdict(self)


@dataclass(frozen=True)
class LatencyComparison:
    """Result of `compare_latency`: counts of both models, speed-ups and the raw latency rows."""

    dense_macs: int
    pruned_macs: int
    dense_params: int
    pruned_params: int
    rows: tuple[SpeedupRow, ...]
    dense: tuple[LatencyRow, ...]
    pruned: tuple[LatencyRow, ...]

    @property
    def macs_ratio(self) -> float:
        """Dense MACs over pruned MACs: the speed-up a perfect runtime would reach."""
        return self.dense_macs / self.pruned_macs

    @property
    def params_ratio(self) -> float:
        """Dense parameters over pruned parameters."""
        return self.dense_params / self.pruned_params

    def _at(self, batch: int | None) -> list[SpeedupRow]:
        batches = sorted({r.batch for r in self.rows})
        if batch is None:
            batch = HEADLINE_BATCH if HEADLINE_BATCH in batches else batches[-1]
        found = [r for r in self.rows if r.batch == batch]
        if not found:
            raise ConfigError(f"batch {batch} was not measured; measured: {batches}")
        return found

    def latency_efficiency(self, batch: int | None = None) -> float:
        """Best efficiency over runtimes at `batch` (default 64, else the largest batch measured).

        This is the headline figure of docs/benchmarks.md: (dense latency / pruned latency) /
        (dense MACs / pruned MACs) with the runtime that gets closest to the MACs limit.
        """
        return max(r.efficiency for r in self._at(batch))

    def best_runtime(self, batch: int | None = None) -> str:
        """The runtime whose efficiency `latency_efficiency` reports at `batch`."""
        return max(self._at(batch), key=lambda r: r.efficiency).runtime

    def deployed_efficiency(self, batch: int | None = None) -> tuple[str, float]:
        """(runtime, efficiency) on the runtime that runs the PRUNED model fastest at `batch`.

        What a user who deploys the pruned model where it runs fastest gets; unlike
        `latency_efficiency`, a runtime whose dense model is slow cannot inflate it.

        Example:
            >>> cmp = compare_latency(torch.nn.Conv2d(1, 8, 3), torch.nn.Conv2d(1, 4, 3), (1, 8, 8),
            ...                       batch_sizes=(2,), runtimes=("torch",), repeats=3)
            >>> cmp.deployed_efficiency(2)[0]
            'torch'
        """
        row = min(self._at(batch), key=lambda r: r.pruned_ms)
        return row.runtime, row.efficiency

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict with the ratios, the headline efficiency and every row."""
        return {
            "dense_macs": self.dense_macs,
            "pruned_macs": self.pruned_macs,
            "macs_ratio": self.macs_ratio,
            "dense_params": self.dense_params,
            "pruned_params": self.pruned_params,
            "params_ratio": self.params_ratio,
            "latency_efficiency": self.latency_efficiency(),
            "best_runtime": self.best_runtime(),
            "deployed_efficiency": list(self.deployed_efficiency()),
            "fastest_pruned": fastest(self.pruned),
            "speedups": [r.to_dict() for r in self.rows],
            "dense": [r.to_dict() for r in self.dense],
            "pruned": [r.to_dict() for r in self.pruned],
        }


#: the package each optional runtime needs, and the extra that installs it
_PACKAGES = {"onnxruntime": ("onnxruntime", "export"), "openvino": ("openvino", "openvino")}


def available_runtimes() -> tuple[str, ...]:
    """The runtimes of `RUNTIMES` whose package is installed (the default of every measurement).

    Example:
        >>> available_runtimes()[:2]
        ('torch', 'torch-folded')
    """
    return tuple(r for r in RUNTIMES if _installed(r))


def _installed(runtime: str) -> bool:
    import importlib.util
    import sys

    if runtime not in _PACKAGES:
        return True
    name = _PACKAGES[runtime][0]
    if name in sys.modules:  # imported already, or blocked (None), as a test does to play "not installed"
        return sys.modules[name] is not None
    return importlib.util.find_spec(name) is not None


def _check_args(
    input_shape: Sequence[int], batch_sizes: Sequence[int], runtimes: Sequence[str] | None, warmup: int, repeats: int
) -> tuple[tuple[int, ...], tuple[int, ...], tuple[str, ...]]:
    if runtimes is None:
        runtimes = available_runtimes()
    ints = all(isinstance(s, int) and not isinstance(s, bool) for s in input_shape)
    shape = tuple(input_shape) if ints else ()
    if not 1 <= len(shape) <= 6 or min(shape) < 1:
        raise ConfigError(
            "input_shape must be one sample's shape, (C, H, W) (or (C, L), (C, D, H, W)), with positive sizes; "
            f"the benchmarks time models with one input; got {input_shape!r}"
        )
    batches = tuple(int(b) for b in batch_sizes)
    if not batches or min(batches) < 1:
        raise ConfigError(f"batch sizes must be positive integers, got {list(batch_sizes)}")
    bad = [r for r in runtimes if r not in RUNTIMES]
    if bad or not runtimes:
        raise ConfigError(f"unknown runtime(s) {bad or list(runtimes)}; choose from {', '.join(RUNTIMES)}")
    if repeats < 1 or warmup < 0:
        raise ConfigError(f"repeats must be >= 1 and warmup >= 0, got repeats={repeats}, warmup={warmup}")
    missing = [r for r in runtimes if not _installed(r)]
    if missing:  # before any (slow) measurement, one line naming the extra
        from prunus.deploy.export import MissingDependencyError

        package, extra = _PACKAGES[missing[0]]
        raise MissingDependencyError(f"runtime {missing[0]} needs {package}: pip install 'prunus[{extra}]'")
    return shape, batches, tuple(dict.fromkeys(runtimes))


@contextlib.contextmanager
def _torch_threads(threads: int | None) -> Iterator[None]:
    """Set torch's intra-op threads for the measurement, then restore the caller's setting."""
    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(int(threads))
    try:
        yield
    finally:
        torch.set_num_threads(before)


@contextlib.contextmanager
def _inference(models: Sequence[nn.Module]) -> Iterator[None]:
    modes = [m.training for m in models]
    for m in models:
        m.eval()
    try:
        with torch.inference_mode():
            yield
    finally:
        for m, mode in zip(models, modes):
            m.train(mode)


def _device(model: nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def check_fits(models: Sequence[nn.Module], shape: tuple[int, ...], what: str | None = None) -> None:
    """ConfigError unless one all-zero sample of `shape` runs through every model (before minutes of timing).

    Any rank is a valid shape ((C, L), (C, H, W), ...), so only the model can say a shape is wrong for it.
    `what` names the shape in the message (a CLI flag and its value; default "input_shape (C, H, W)").
    """
    label = what or f"input_shape {shape}"
    with _inference(models), torch.no_grad():
        for k, model in enumerate(models):
            try:
                model(torch.zeros(1, *shape, device=_device(model)))
            except (RuntimeError, ValueError, TypeError, AssertionError) as exc:  # timm asserts its input size
                first = first_line(exc)[:160]
                which = f"model {k}" if len(models) > 1 else "the model"
                raise ConfigError(f"{label} does not fit {which}: {first}") from None


def _runners(
    model: nn.Module, shape: tuple[int, ...], batches: tuple[int, ...], runtimes: tuple[str, ...], threads: int | None
) -> dict[tuple[str, int], Runner]:
    """One zero-argument callable per (runtime, batch) that runs a single forward pass.

    Inputs are created up front so that only the forward call is timed. Must be called (and the
    runners used) inside `_inference`.
    """
    gen = torch.Generator().manual_seed(0)
    inputs = {b: torch.randn((b, *shape), generator=gen) for b in batches}
    out: dict[tuple[str, int], Runner] = {}
    device = _device(model)
    # CUDA calls return before the kernels finish; synchronise so the time is the forward's.
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for rt in runtimes:
        if rt in ("torch", "torch-folded"):
            net = model
            if rt == "torch-folded":
                from prunus.deploy.fold import fold_bn

                with torch.inference_mode(False):  # fx tracing and the fold need normal tensors
                    net = fold_bn(model)[0]
            for b in batches:
                x = inputs[b].to(device)
                out[rt, b] = lambda x=x, net=net: (net(x), sync())
        elif rt == "onnxruntime":
            from prunus.deploy.export import onnx_bytes, ort_session

            for b in batches:
                with torch.inference_mode(False):  # the exporter traces; tracing needs normal tensors
                    data = onnx_bytes(model, torch.randn((b, *shape)).to(device), dynamic_batch=False)
                sess = ort_session(data, threads=threads)
                feed = {sess.get_inputs()[0].name: inputs[b].numpy()}
                out[rt, b] = lambda feed=feed, sess=sess: sess.run(None, feed)
        elif rt == "openvino":
            from prunus.deploy.openvino_ir import ov_compile, ov_model

            for b in batches:
                with torch.inference_mode(False):  # the converter traces; tracing needs normal tensors
                    ir = ov_model(model, torch.randn((b, *shape)).to(device), dynamic_batch=False)
                request = ov_compile(ir, threads).create_infer_request()
                arr = inputs[b].numpy()
                out[rt, b] = lambda arr=arr, request=request: request.infer([arr], share_inputs=True)
    return out


def fastest(rows: Sequence[LatencyRow]) -> dict[int, str]:
    """Batch -> the runtime with the lowest median latency among `rows`.

    Example:
        >>> rows = [LatencyRow("torch", 1, 2.0, 2, 0, 500, 3), LatencyRow("onnxruntime", 1, 1.0, 1, 0, 1e3, 3)]
        >>> fastest(rows)
        {1: 'onnxruntime'}
    """
    best: dict[int, LatencyRow] = {}
    for r in rows:
        if r.batch not in best or r.median_ms < best[r.batch].median_ms:
            best[r.batch] = r
    return {b: r.runtime for b, r in sorted(best.items())}


def _timed(fn: Runner) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def _row(runtime: str, batch: int, seconds: Sequence[float]) -> LatencyRow:
    ms = np.asarray(seconds) * 1e3
    q25, med, q75, p90 = (float(v) for v in np.percentile(ms, [25, 50, 75, 90]))
    return LatencyRow(runtime, batch, med, p90, q75 - q25, batch / (med / 1e3), len(ms))


def measure_latency(
    model: nn.Module,
    input_shape: Sequence[int],
    *,
    batch_sizes: Sequence[int] = DEFAULT_BATCHES,
    runtimes: Sequence[str] | None = None,
    warmup: int = 5,
    repeats: int = 30,
    threads: int | None = None,
) -> list[LatencyRow]:
    """Median latency of one forward call per runtime and batch size.

    Args:
        model: The model; measured in eval mode and returned to its previous mode.
        input_shape: One sample's shape: (C, H, W) of an image, (C, L) or (C, D, H, W).
        batch_sizes: Batch sizes to measure.
        runtimes: Any of `RUNTIMES`: "torch", "torch-folded", "onnxruntime", "openvino"; default
            `available_runtimes()` (those whose package is installed).
        warmup: Untimed calls before the timed ones (allocator, caches, lazy init).
        repeats: Timed calls; the median and spread are taken over them.
        threads: Intra-op threads for every runtime; None keeps the defaults.

    Returns:
        One LatencyRow per runtime x batch, runtime-major, in the order given.

    Example:
        >>> net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.Flatten())
        >>> rows = measure_latency(net, (1, 8, 8), batch_sizes=(1, 4), runtimes=("torch",), repeats=3)
        >>> [(r.runtime, r.batch) for r in rows]
        [('torch', 1), ('torch', 4)]
    """
    shape, batches, rts = _check_args(input_shape, batch_sizes, runtimes, warmup, repeats)
    check_fits([model], shape)
    rows = []
    with _torch_threads(threads), _inference([model]):
        for (rt, b), fn in _runners(model, shape, batches, rts, threads).items():
            for _ in range(warmup):
                fn()
            rows.append(_row(rt, b, [_timed(fn) for _ in range(repeats)]))
    return rows


def _count(model: nn.Module, shape: tuple[int, ...]) -> tuple[int, int]:
    from prunus.measure import count  # imported here: counting pulls in the structure engine

    c = count(model, shape)
    return int(c.macs), int(c.params)


def _files(model_dir: str | os.PathLike[str]) -> tuple[dict[str, int], int]:
    """Every file's size, and the bytes of the saved model itself.

    In a prunus model directory only model.json + model.safetensors count: exports written next
    to them (model.onnx, model.pt) are other artefacts, not the model's size.
    """
    from prunus.formats.run_dir import resolve_model_dir

    # a run directory counts as the model it made, not its checkpoints, logs and exports
    root = resolve_model_dir(model_dir)
    if root.is_file():
        return {root.name: root.stat().st_size}, root.stat().st_size
    if not root.is_dir():
        raise ConfigError(f"model path {str(root)!r} does not exist")
    files = {p.relative_to(root).as_posix(): p.stat().st_size for p in sorted(root.rglob("*")) if p.is_file()}
    from prunus.formats import MODEL_JSON, MODEL_WEIGHTS

    own = [n for n in (MODEL_JSON, MODEL_WEIGHTS) if n in files]
    return files, sum(files[n] for n in own) if own else sum(files.values())


def benchmark_model(
    model: nn.Module,
    input_shape: Sequence[int],
    *,
    model_dir: str | os.PathLike[str] | None = None,
    batch_sizes: Sequence[int] = DEFAULT_BATCHES,
    runtimes: Sequence[str] | None = None,
    warmup: int = 5,
    repeats: int = 30,
    threads: int | None = None,
) -> dict[str, Any]:
    """MACs, parameters, bytes on disk and latency of one model, as a JSON-able dict.

    Args:
        model: The model to measure.
        input_shape: One sample's shape: (C, H, W) of an image, (C, L) or (C, D, H, W).
        model_dir: A saved model directory (model.json + model.safetensors count as its bytes;
            every file is listed) or a single model file.
        batch_sizes, runtimes, warmup, repeats, threads: As in `measure_latency`.

    Returns:
        {"input_shape", "macs", "params", "bytes" (None without model_dir), "files",
        "threads", "versions", "latency": [LatencyRow dicts], "fastest": {batch: runtime}}.

    Example:
        >>> net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.Flatten())
        >>> res = benchmark_model(net, (1, 8, 8), batch_sizes=(2,), runtimes=("torch",), repeats=2)
        >>> res["macs"], len(res["latency"])
        (1296, 1)
    """
    shape, batches, rts = _check_args(input_shape, batch_sizes, runtimes, warmup, repeats)
    check_fits([model], shape)
    files, size = _files(model_dir) if model_dir is not None else ({}, None)
    macs, params = _count(model, shape)
    rows = measure_latency(
        model, shape, batch_sizes=batches, runtimes=rts, warmup=warmup, repeats=repeats, threads=threads
    )
    return {
        "input_shape": list(shape),
        "macs": macs,
        "params": params,
        "bytes": size,
        "files": files,
        "threads": threads if threads else torch.get_num_threads(),
        "versions": _versions(rts),
        "latency": [r.to_dict() for r in rows],
        "fastest": fastest(rows),
    }


def _versions(runtimes: Sequence[str]) -> dict[str, str]:
    versions = {"torch": torch.__version__}
    if "onnxruntime" in runtimes:
        import onnxruntime

        versions["onnxruntime"] = onnxruntime.__version__
    if "openvino" in runtimes:
        from prunus.deploy.openvino_ir import require_openvino

        versions["openvino"] = require_openvino().__version__
    return versions


def compare_latency(
    dense: nn.Module,
    pruned: nn.Module,
    input_shape: Sequence[int],
    *,
    batch_sizes: Sequence[int] = DEFAULT_BATCHES,
    runtimes: Sequence[str] | None = None,
    warmup: int = 5,
    repeats: int = 30,
    threads: int | None = None,
) -> LatencyComparison:
    """Speed-up of `pruned` over `dense`, measured side by side, and its latency efficiency.

    For every runtime and batch both models are warmed up, then timed alternately call by call
    (dense-pruned, pruned-dense, ...) so drifts in machine load affect both equally and the order
    bias cancels. speedup = dense median / pruned median; efficiency = speedup / MACs ratio.

    Args:
        dense: The reference model.
        pruned: The pruned (or any other) model with the same input shape.
        input_shape: One sample's shape: (C, H, W) of an image, (C, L) or (C, D, H, W).
        batch_sizes, runtimes, warmup, repeats, threads: As in `measure_latency`.

    Returns:
        LatencyComparison; `.latency_efficiency()` is the figure of docs/benchmarks.md.

    Example:
        >>> conv = lambda c: torch.nn.Sequential(torch.nn.Conv2d(1, c, 3), torch.nn.Flatten())
        >>> cmp = compare_latency(conv(8), conv(4), (1, 8, 8), batch_sizes=(2,), runtimes=("torch",), repeats=2)
        >>> cmp.macs_ratio
        2.0
    """
    shape, batches, rts = _check_args(input_shape, batch_sizes, runtimes, warmup, repeats)
    check_fits([dense, pruned], shape)
    dense_macs, dense_params = _count(dense, shape)
    pruned_macs, pruned_params = _count(pruned, shape)
    if pruned_macs <= 0:
        raise ConfigError("the pruned model has no MACs; cannot form a MACs ratio")
    times: dict[tuple[str, int], tuple[list[float], list[float]]] = {}
    with _torch_threads(threads), _inference([dense, pruned]):
        run_d = _runners(dense, shape, batches, rts, threads)
        run_p = _runners(pruned, shape, batches, rts, threads)
        for key in run_d:
            fd, fp = run_d[key], run_p[key]
            for _ in range(warmup):
                fd()
                fp()
            td: list[float] = []
            tp: list[float] = []
            for i in range(repeats):
                if i % 2 == 0:
                    td.append(_timed(fd))
                    tp.append(_timed(fp))
                else:
                    tp.append(_timed(fp))
                    td.append(_timed(fd))
            times[key] = (td, tp)
    macs_ratio = dense_macs / pruned_macs
    dense_rows, pruned_rows, rows = [], [], []
    for (rt, b), (td, tp) in times.items():
        rd, rp = _row(rt, b, td), _row(rt, b, tp)
        dense_rows.append(rd)
        pruned_rows.append(rp)
        speedup = rd.median_ms / rp.median_ms
        rows.append(SpeedupRow(rt, b, rd.median_ms, rp.median_ms, speedup, speedup / macs_ratio))
    return LatencyComparison(
        dense_macs, pruned_macs, dense_params, pruned_params, tuple(rows), tuple(dense_rows), tuple(pruned_rows)
    )
