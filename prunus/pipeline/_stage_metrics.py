"""The numbers every model-making stage records: accuracy, MACs, params, bytes on disk, latency.

These fill the one table a pipeline ends with, so every stage measures them the same way:
test accuracy on the recipe's test split, MACs/params from `prunus.count`, bytes of the saved
model (model.json + model.safetensors, or a single file such as a .prn), and the torch latency of
a batch-64 forward call: `LATENCY_REPEATS` timed calls after `LATENCY_WARMUP` untimed ones, the
median as `latency_ms` (the field every record has had) and, alongside it, every call's time
(`latency_times_ms`), their interquartile range (`latency_iqr_ms`), the machine's 1-minute load
average while timing (`latency_load`, the larger of before and after) against its CPU count
(`latency_cpus`), and `arch_key`, a fingerprint of the layer shapes: stages whose models have the
same widths share it, so the report pools their timings into one measurement per architecture.
The bench stage still measures with the full protocol (runtimes, batch sizes).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

from torch import nn

from prunus.data import DataConfig, build_loaders
from prunus.models.info import get_info

__all__ = ["LATENCY_BATCH", "LATENCY_REPEATS", "arch_key", "load_average", "measure", "model_bytes", "split_accuracy"]

LATENCY_BATCH = 64  # benchmarks.md judges latency at batch 64
LATENCY_REPEATS = 30  # as the bench stage's default: enough for a median and quartiles that mean something
LATENCY_WARMUP = 3


def split_accuracy(model: nn.Module, data: DataConfig, seed: int = 0) -> float:
    """Accuracy of `model` on the test split `data` describes (prunus.measure.evaluation.evaluate)."""
    from prunus.measure.evaluation import evaluate

    return float(evaluate(model, build_loaders(data, seed=seed).test)["acc"])


def model_bytes(path: str | os.PathLike[str]) -> int:
    """Bytes on disk of a saved model: model.json + model.safetensors of a directory, or one file."""
    from prunus.deploy.bench import _files

    return _files(path)[1]


def arch_key(model: nn.Module) -> str:
    """A short fingerprint of the model's structure: every parameter and buffer name with its shape.

    Two models with the same layers and widths share it whatever their weights; a different
    width anywhere changes it.

    Example:
        >>> import torch
        >>> a, b = torch.nn.Conv2d(1, 4, 3), torch.nn.Conv2d(1, 4, 3)
        >>> arch_key(a) == arch_key(b), arch_key(a) == arch_key(torch.nn.Conv2d(1, 5, 3))
        (True, False)
    """
    shapes = [f"{name}:{tuple(t.shape)}" for name, t in (*model.named_parameters(), *model.named_buffers())]
    return hashlib.sha256("\n".join(shapes).encode()).hexdigest()[:12]


def load_average() -> float | None:
    """The machine's 1-minute load average (None where the OS has none)."""
    try:
        return float(os.getloadavg()[0])
    except (AttributeError, OSError):
        return None


def _latency(model: nn.Module, shape: tuple[int, ...], threads: int | None) -> list[float]:
    """Milliseconds of `LATENCY_REPEATS` batch-64 torch forward calls, each timed by `measure_latency`.

    One call of `measure_latency` per repeat (`repeats=1`): the one timing loop prunus has, and
    every call's own time kept (a `LatencyRow` keeps only its summary) so the spread can be shown
    and identical architectures pooled.
    """
    from prunus.deploy.bench import measure_latency

    def timed(warmup: int) -> float:
        rows = measure_latency(model, shape, batch_sizes=(LATENCY_BATCH,), runtimes=("torch",), warmup=warmup,
                               repeats=1, threads=threads)  # fmt: skip
        return rows[0].median_ms

    timed(LATENCY_WARMUP)  # untimed: allocator, caches, lazy initialisation
    return [timed(0) for _ in range(LATENCY_REPEATS)]


def _quartiles(values: list[float]) -> tuple[float, float, float]:
    import numpy as np

    q25, med, q75 = (float(v) for v in np.percentile(values, [25, 50, 75]))
    return q25, med, q75


def measure(
    model: nn.Module, model_path: str | os.PathLike[str], *, threads: int | None = None, accuracy: float | None = None
) -> dict[str, Any]:
    """{"acc", "macs", "params", "bytes", "latency_ms", "latency_iqr_ms", "latency_times_ms", "latency_load",
    "latency_cpus", "arch_key"} of a saved model (acc as given: None = not known)."""
    from prunus.measure import count

    shape = tuple(get_info(model).input_shape)
    counts = count(model, shape)
    load_before = load_average()
    times = [round(t, 4) for t in _latency(model, shape, threads)]  # rounded first: the median is theirs
    loads = [x for x in (load_before, load_average()) if x is not None]
    q25, median, q75 = _quartiles(times)
    return {
        "acc": accuracy,
        "macs": int(counts.macs),
        "params": int(counts.params),
        "bytes": model_bytes(Path(model_path)),
        "latency_ms": median,
        "latency_iqr_ms": q75 - q25,
        "latency_times_ms": times,
        "latency_load": max(loads) if loads else None,
        "latency_cpus": os.cpu_count(),
        "arch_key": arch_key(model),
    }
