"""Per-layer latency tables: every conv of a model timed alone on the runtime that will run it.

`build_table` times each conv whose widths pruning can change on a small grid of input x output
widths (full, 3/4, 1/2, 1/4 of each side that can change), at the batch size, thread count and
input resolution it will see; identical layers are timed once, and the whole dense model is timed
too. Tables are cached on disk (`~/.cache/prunus/latency`, or `$PRUNUS_CACHE_DIR`), keyed by the
model's layers, the runtime, the batch, the threads, the library versions and the machine
(`cache_key`). `prunus.pruning.latency` plans latency budgets from them.

Example:
    >>> table = LatencyTable("k", "torch", 64, 1, 10.0, {"conv": {"in": [8, 16], "out": [8, 16],
    ...     "ms": [[1.0, 2.0], [2.0, 4.0]]}})
    >>> table.layer_ms("conv", 12, 16)
    3.0
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import platform
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from prunus._io.atomic import write_json
from prunus.errors import ConfigError
from prunus.pruning.config import LATENCY_RUNTIMES

log = logging.getLogger(__name__)  # progress of a long measurement (INFO); the CLI prints it

__all__ = ["GRID", "LatencyTable", "build_table", "cache_key", "default_cache_dir", "layer_signatures", "machine_id",
           "measure_ms"]  # fmt: skip

GRID = (1.0, 0.75, 0.5, 0.25)  # fractions of a layer's width timed on each side pruning can change
TABLE_VERSION = 1

Measure = Callable[[nn.Module, tuple[int, ...], str, int, "int | None"], float]


@dataclass(frozen=True)
class LatencyTable:
    """Measured latencies of one model's convs on one runtime, batch and thread count.

    Attributes:
        key: `cache_key` of what was measured.
        runtime, batch, threads: How it was measured.
        dense_ms: Median latency of the whole dense model.
        layers: Layer name -> {"in": input widths, "out": output widths, "ms": [[ms per in x out]]};
            a depthwise conv has "in" == "out" and a diagonal grid (only ms[i][i] is used).
    """

    key: str
    runtime: str
    batch: int
    threads: int | None
    dense_ms: float
    layers: dict[str, dict[str, Any]]

    def layer_ms(self, name: str, cin: int, cout: int) -> float:
        """Interpolated latency of layer `name` with `cin` inputs and `cout` outputs (bilinear; clamped)."""
        t = self.layers[name]
        ins, outs, ms = t["in"], t["out"], np.asarray(t["ms"], dtype=float)
        if t.get("depthwise"):
            return _interp(cout, outs, list(np.diagonal(ms)))
        col = [_interp(cout, outs, list(row)) for row in ms]  # one value per input width
        return _interp(cin, ins, col)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict (what the cache file holds, with a version)."""
        return {"version": TABLE_VERSION, **asdict(self)}


def _read_cached(path: Path, key: str) -> LatencyTable | None:
    """The cached table at `path`, or None when it is missing, torn, foreign or of another version.

    The cache is disposable: a file that is not what we wrote (a killed writer from an older
    prunus, a hand edit, a FIFO) is measured again and replaced, never a traceback.
    """
    from prunus._io.safe import MAX_JSON_BYTES, read_json
    from prunus.errors import CorruptFileError

    if not os.path.lexists(path):
        return None
    try:
        data = read_json(path, MAX_JSON_BYTES, "latency table")
        if not isinstance(data, dict) or data.pop("version", None) != TABLE_VERSION or data.get("key") != key:
            return None
        table = LatencyTable(**data)
    except (CorruptFileError, TypeError):
        return None
    if not isinstance(table.layers, dict) or not isinstance(table.dense_ms, (int, float)):
        return None
    return table


def _interp(x: float, xs: Sequence[int], ys: Sequence[float]) -> float:
    """Piecewise linear; below the narrowest width timed, extrapolated along the last segment (>= 0)."""
    if len(xs) > 1 and x < xs[0]:
        slope = (ys[1] - ys[0]) / (xs[1] - xs[0])
        return max(0.0, ys[0] + slope * (x - xs[0]))
    return float(np.interp(x, xs, ys))


def layer_signatures(model: nn.Module, example_inputs: torch.Tensor) -> dict[str, dict[str, Any]]:
    """Every Conv2d and ConvTranspose2d that runs in the forward: its hyper-parameters and input resolution,
    in call order (a transposed one's signature says so, with its output_padding)."""
    sigs: dict[str, dict[str, Any]] = {}
    names = {m: n for n, m in model.named_modules()}

    def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], _out: Any) -> None:
        x = inputs[0]
        sigs.setdefault(
            names[module],
            {
                "in": module.in_channels,
                "out": module.out_channels,
                "kernel": list(module.kernel_size),
                "stride": list(module.stride),
                "padding": list(module.padding) if not isinstance(module.padding, str) else module.padding,
                "dilation": list(module.dilation),
                "groups": module.groups,
                "bias": module.bias is not None,
                "hw": [int(x.shape[-2]), int(x.shape[-1])],
                # only on transposed convs: the signatures (and cached tables) of plain ones stay as they were
                **({"transposed": True, "output_padding": list(module.output_padding)} if module.transposed else {}),
            },
        )

    timed = (nn.Conv2d, nn.ConvTranspose2d)
    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, timed)]
    was = model.training
    try:
        with torch.no_grad():
            model.eval()(example_inputs[:1])
    finally:
        model.train(was)
        for h in handles:
            h.remove()
    return sigs


def machine_id() -> dict[str, Any]:
    """What makes latencies of one machine incomparable with another's: CPU model, cores, versions."""
    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    versions = {"torch": torch.__version__}
    from importlib import metadata

    for package in ("onnxruntime", "openvino"):  # a new runtime version times differently: a new table
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[package] = metadata.version(package)
    return {"node": platform.node(), "arch": platform.machine(), "cpu": cpu, "cores": os.cpu_count(), **versions}


def cache_key(
    signatures: Mapping[str, Any],
    runtime: str,
    batch: int,
    threads: int | None,
    machine: Mapping[str, Any],
    variable: Sequence[tuple[str, str]] = (),
) -> str:
    """Hex digest naming one table: the model's convs, runtime, batch, threads, machine, timed sides."""
    blob = {
        "v": TABLE_VERSION,
        "layers": signatures,
        "runtime": runtime,
        "batch": batch,
        "threads": threads,
        "machine": dict(machine),
        "variable": sorted(f"{n}:{side}" for n, side in variable),
    }
    return hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()[:20]


def default_cache_dir() -> Path:
    """$PRUNUS_CACHE_DIR/latency, else ~/.cache/prunus/latency."""
    root = os.environ.get("PRUNUS_CACHE_DIR")
    return Path(root) / "latency" if root else Path.home() / ".cache" / "prunus" / "latency"


def measure_ms(module: nn.Module, input_shape: tuple[int, ...], runtime: str, batch: int, threads: int | None) -> float:
    """Median latency (ms) of one forward of `module` at `batch` on `runtime` (few repeats: tables are many)."""
    from prunus.deploy.bench import measure_latency

    rows = measure_latency(
        module, input_shape, batch_sizes=(batch,), runtimes=(runtime,), warmup=2, repeats=7, threads=threads
    )
    return rows[0].median_ms


def _grid(width: int, variable: bool) -> list[int]:
    return sorted({max(1, round(width * f)) for f in GRID}) if variable else [width]


def _conv(sig: Mapping[str, Any], cin: int, cout: int) -> nn.Module:
    depthwise = sig["groups"] > 1 and sig["groups"] == sig["in"]
    groups = cin if depthwise else sig["groups"]
    if sig.get("transposed"):  # its output resolution follows from the input's, as in the model
        return nn.ConvTranspose2d(cin, cout, sig["kernel"], sig["stride"], sig["padding"], sig["output_padding"],
                                  groups, sig["bias"], sig["dilation"]).eval()  # fmt: skip
    return nn.Conv2d(
        cin, cout, sig["kernel"], sig["stride"], sig["padding"], sig["dilation"], groups, sig["bias"]
    ).eval()


def _monotone(ms: np.ndarray) -> np.ndarray:
    """Running maximum along both axes: more channels never measure as faster (timer noise otherwise)."""
    return np.maximum.accumulate(np.maximum.accumulate(ms, axis=0), axis=1)


def build_table(
    model: nn.Module,
    example_inputs: torch.Tensor,
    variable: Sequence[tuple[str, str]],
    *,
    runtime: str,
    batch: int,
    threads: int | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    measure: Measure = measure_ms,
) -> LatencyTable:
    """The latency table of `model`'s convs, loaded from the cache or measured and cached.

    Args:
        model: The dense model.
        example_inputs: A batch it accepts (one sample is used).
        variable: (layer, "in" | "out") sides that pruning may narrow; only they get a grid.
        runtime: "torch", "onnxruntime" or "openvino" (`LATENCY_RUNTIMES`).
        batch: Batch size the model will run at.
        threads: Intra-op threads (None: the runtime's default).
        cache_dir: Where tables live; default `default_cache_dir()`.
        measure: `(module, (C, H, W), runtime, batch, threads) -> ms`; the default times it for real.

    Example:
        >>> table = build_table(model, x, [("layer1.0.conv1", "out")], runtime="torch", batch=64)  # doctest: +SKIP
    """
    if runtime not in LATENCY_RUNTIMES:
        raise ConfigError(
            f"runtime={runtime!r} is not valid for a latency budget; choose one of: {', '.join(LATENCY_RUNTIMES)}"
        )
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise ConfigError(f"latency batch must be an integer >= 1, got {batch!r}")
    sigs = layer_signatures(model, example_inputs)
    var = {(n, s) for n, s in variable if n in sigs}
    key = cache_key(sigs, runtime, batch, threads, machine_id(), sorted(var))
    path = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    path = path / f"{key}.json"
    cached = _read_cached(path, key)
    if cached is not None:
        return cached
    shape = tuple(int(s) for s in example_inputs.shape[1:])
    layers: dict[str, dict[str, Any]] = {}
    timed: dict[str, float] = {}  # identical (signature, widths) are timed once
    # minutes on a big model: say so, and how far it is (`prunus` commands print these INFO lines)
    log.info("latency table: timing %d convs alone on %s, batch %d (cached afterwards in %s)", len(sigs), runtime,
             batch, path.parent)  # fmt: skip
    start, step = time.perf_counter(), max(1, len(sigs) // 10)
    for done, (name, sig) in enumerate(sigs.items(), 1):
        depthwise = sig["groups"] > 1 and sig["groups"] == sig["in"]
        ins = _grid(sig["in"], (name, "in") in var or (depthwise and (name, "out") in var))
        outs = _grid(sig["out"], (name, "out") in var)
        if depthwise:
            ins = outs = sorted(set(ins) | set(outs))
        ms = np.zeros((len(ins), len(outs)))
        for i, cin in enumerate(ins):
            for j, cout in enumerate(outs):
                if depthwise and cin != cout:
                    continue
                k = json.dumps([sig, cin, cout], sort_keys=True)
                if k not in timed:
                    timed[k] = measure(_conv(sig, cin, cout), (cin, *sig["hw"]), runtime, batch, threads)
                ms[i, j] = timed[k]
        if depthwise:
            d = np.maximum.accumulate(np.diagonal(ms))
            ms = np.diag(d) if len(d) > 1 else ms
        else:
            ms = _monotone(ms)
        layers[name] = {"in": ins, "out": outs, "ms": ms.tolist(), "depthwise": depthwise}
        if done % step == 0 or done == len(sigs):
            log.info("latency table: %d/%d convs timed (%.0f s)", done, len(sigs), time.perf_counter() - start)
    dense_ms = measure(model, shape, runtime, batch, threads)
    table = LatencyTable(key, runtime, batch, threads, float(dense_ms), layers)
    write_json(path, table.to_dict())
    return table
