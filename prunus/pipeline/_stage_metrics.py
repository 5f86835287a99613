"""The numbers every model-making stage records: accuracy, MACs, params, bytes on disk, latency.

These fill the one table a pipeline ends with, so every stage measures them the same way:
test accuracy on the recipe's test split, MACs/params from `prunus.count`, bytes of the saved
model (model.json + model.safetensors, or a single file such as a .prn), and the median torch
latency of a batch-64 forward call (a quick indication; the bench stage runs the full protocol).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from torch import nn

from prunus.data import DataConfig, build_loaders
from prunus.models.info import get_info

__all__ = ["LATENCY_BATCH", "measure", "model_bytes", "split_accuracy"]

LATENCY_BATCH = 64  # benchmarks.md judges latency at batch 64
LATENCY_REPEATS = 10  # a quick median; the bench stage measures with the full protocol


def split_accuracy(model: nn.Module, data: DataConfig, seed: int = 0) -> float:
    """Accuracy of `model` on the test split `data` describes (prunus.measure.evaluation.evaluate)."""
    from prunus.measure.evaluation import evaluate

    return float(evaluate(model, build_loaders(data, seed=seed).test)["acc"])


def model_bytes(path: str | os.PathLike[str]) -> int:
    """Bytes on disk of a saved model: model.json + model.safetensors of a directory, or one file."""
    from prunus.deploy.bench import _files

    return _files(path)[1]


def measure(
    model: nn.Module, model_path: str | os.PathLike[str], *, threads: int | None = None, accuracy: float | None = None
) -> dict[str, Any]:
    """{"acc", "macs", "params", "bytes", "latency_ms"} of a saved model (acc as given: None = not known)."""
    from prunus.deploy.bench import measure_latency
    from prunus.measure import count

    shape = tuple(get_info(model).input_shape)
    counts = count(model, shape)
    rows = measure_latency(
        model, shape, batch_sizes=(LATENCY_BATCH,), runtimes=("torch",), warmup=2, repeats=LATENCY_REPEATS,
        threads=threads,
    )  # fmt: skip
    return {
        "acc": accuracy,
        "macs": int(counts.macs),
        "params": int(counts.params),
        "bytes": model_bytes(Path(model_path)),
        "latency_ms": rows[0].median_ms,
    }
