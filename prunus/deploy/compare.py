"""Several models side by side: MACs, parameters, bytes and latency per runtime, as ratios to the first.

The question a user asks of a pruned model is "how much faster is what I ship than what I had?": the
first model is the reference (the user's dense model), run as they ran it, in eager torch; every
model is then taken on the runtime that is fastest for it at each batch size. The end-to-end
speed-up of model k at batch b is

    (model 0 on "torch") latency / (model k on its fastest runtime at b) latency.

Timing follows docs/benchmarks.md, with every (model, runtime) pair of one batch size interleaved
call by call: in repeat i each pair is timed once, in an order rotated by i (and reversed on odd
repeats), so load drifts and order effects hit every pair alike. Because repeat i of the reference
and repeat i of the candidate ran moments apart, the ratio is formed per repeat, and its median is
reported with its spread: the 25th and 75th percentiles of the per-repeat ratios (`q25`, `q75`).
The same per-repeat ratios give the speed-up on each runtime alone (model 0 on r / model k on r).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from prunus.deploy.bench import (
    DEFAULT_BATCHES,
    LatencyRow,
    _check_args,
    _count,
    _files,
    _inference,
    _row,
    _runners,
    _timed,
    _torch_threads,
    _versions,
    check_fits,
    fastest,
)
from prunus.errors import ConfigError

__all__ = ["REFERENCE_RUNTIME", "ModelComparison", "Ratio", "compare_models", "interleaved_times"]

#: how the first model is run for the end-to-end figure: as a user runs the model they trained
REFERENCE_RUNTIME = "torch"


@dataclass(frozen=True)
class Ratio:
    """Median of per-repeat latency ratios (reference / candidate; > 1 = faster) and its spread."""

    median: float
    q25: float
    q75: float

    @classmethod
    def of(cls, reference: Sequence[float], candidate: Sequence[float]) -> Ratio:
        """Per-repeat ratios reference[i] / candidate[i], summarised.

        Example:
            >>> Ratio.of([2.0, 4.0, 6.0], [1.0, 1.0, 2.0])
            Ratio(median=3.0, q25=2.5, q75=3.5)
        """
        r = np.asarray(reference, dtype=float) / np.asarray(candidate, dtype=float)
        q25, med, q75 = (float(v) for v in np.percentile(r, [25, 50, 75]))
        return cls(med, q25, q75)

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


@dataclass(frozen=True)
class ModelComparison:
    """What `compare_models` measured.

    Attributes:
        names: One label per model (the first is the reference).
        macs, params: Per model.
        bytes: Per model: bytes of its files on disk (None when no path was given).
        latency: Per model, one LatencyRow per runtime x batch.
        fastest: Per model, batch -> its fastest runtime.
        end_to_end: Per model, batch -> Ratio of model 0 on `reference_runtime` over this model on
            its fastest runtime (model 0's own entry: what the runtime alone buys).
        per_runtime: Per model, (runtime, batch) -> Ratio of model 0 over this model on that runtime.
        reference_runtime: The runtime model 0 is taken on for the end-to-end figure.
        versions, threads: Library versions, intra-op threads.
    """

    names: tuple[str, ...]
    macs: tuple[int, ...]
    params: tuple[int, ...]
    bytes: tuple[int | None, ...]
    latency: tuple[tuple[LatencyRow, ...], ...]
    fastest: tuple[dict[int, str], ...]
    end_to_end: tuple[dict[int, Ratio], ...]
    per_runtime: tuple[dict[tuple[str, int], Ratio], ...]
    reference_runtime: str
    versions: dict[str, str]
    threads: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-able: one entry per model with its counts, ratios to the first, rows and fastest runtimes."""
        base_macs, base_params, base_bytes = self.macs[0], self.params[0], self.bytes[0]
        models = []
        for k, name in enumerate(self.names):
            models.append(
                {
                    "name": name,
                    "macs": self.macs[k],
                    "params": self.params[k],
                    "bytes": self.bytes[k],
                    "macs_ratio": base_macs / self.macs[k] if self.macs[k] else None,
                    "params_ratio": base_params / self.params[k] if self.params[k] else None,
                    "bytes_ratio": base_bytes / self.bytes[k] if base_bytes and self.bytes[k] else None,
                    "fastest": self.fastest[k],
                    "end_to_end": {
                        b: {"runtime": self.fastest[k][b], **r.to_dict()} for b, r in self.end_to_end[k].items()
                    },
                    "per_runtime": [
                        {"runtime": rt, "batch": b, **r.to_dict()} for (rt, b), r in self.per_runtime[k].items()
                    ],
                    "latency": [r.to_dict() for r in self.latency[k]],
                }
            )
        return {
            "reference": self.names[0],
            "reference_runtime": self.reference_runtime,
            "threads": self.threads,
            "versions": self.versions,
            "models": models,
        }


def interleaved_times(runners: Sequence[Any], warmup: int, repeats: int) -> list[list[float]]:
    """Seconds per call of each runner, repeat i of all runners timed together (rotated order).

    Example:
        >>> times = interleaved_times([lambda: None, lambda: None], warmup=1, repeats=3)
        >>> [len(t) for t in times]
        [3, 3]
    """
    n = len(runners)
    for fn in runners:
        for _ in range(warmup):
            fn()
    times: list[list[float]] = [[] for _ in range(n)]
    for i in range(repeats):
        order = [(j + i) % n for j in range(n)]
        if i % 2:
            order.reverse()
        for j in order:
            times[j].append(_timed(runners[j]))
    return times


def compare_models(
    models: Sequence[nn.Module],
    input_shape: Sequence[int],
    *,
    names: Sequence[str] | None = None,
    paths: Sequence[str | os.PathLike[str] | None] | None = None,
    batch_sizes: Sequence[int] = DEFAULT_BATCHES,
    runtimes: Sequence[str] | None = None,
    warmup: int = 5,
    repeats: int = 30,
    threads: int | None = None,
) -> ModelComparison:
    """Measure several models side by side and form every ratio to the first (see the module docstring).

    Args:
        models: Two or more models with the same input shape; the first is the reference.
        input_shape: One sample's shape: (C, H, W) of an image, (C, L) or (C, D, H, W).
        names: Labels (default "model0", "model1", ...).
        paths: Saved model directories or files, for bytes on disk (None entries: not counted).
        batch_sizes, runtimes, warmup, repeats, threads: As in `prunus.deploy.bench.measure_latency`;
            the runtimes must include "torch" (the reference's runtime for the end-to-end figure).

    Example:
        >>> conv = lambda c: torch.nn.Sequential(torch.nn.Conv2d(1, c, 3), torch.nn.Flatten())
        >>> cmp = compare_models([conv(8), conv(4)], (1, 8, 8), batch_sizes=(2,), runtimes=("torch",), repeats=3)
        >>> cmp.macs, cmp.fastest[1], sorted(cmp.end_to_end[1])
        ((2592, 1296), {2: 'torch'}, [2])
    """
    shape, batches, rts = _check_args(input_shape, batch_sizes, runtimes, warmup, repeats)
    if len(models) < 2:
        raise ConfigError(f"compare_models needs two or more models, got {len(models)}")
    if REFERENCE_RUNTIME not in rts:
        raise ConfigError(
            f"runtimes must include {REFERENCE_RUNTIME!r}: the first model is taken in eager torch for the "
            f"end-to-end speed-up; got {', '.join(rts)}"
        )
    labels = tuple(names) if names is not None else tuple(f"model{k}" for k in range(len(models)))
    where = list(paths) if paths is not None else [None] * len(models)
    if len(labels) != len(models) or len(where) != len(models):
        raise ConfigError(f"{len(models)} models but {len(labels)} names and {len(where)} paths")
    check_fits(models, shape)
    counts = [_count(m, shape) for m in models]
    sizes = tuple(_files(p)[1] if p is not None else None for p in where)
    n = len(models)
    times: dict[tuple[int, str, int], list[float]] = {}
    with _torch_threads(threads), _inference(list(models)):
        runners = [_runners(m, shape, batches, rts, threads) for m in models]
        for b in batches:
            units = [(k, rt) for k in range(n) for rt in rts]
            measured = interleaved_times([runners[k][rt, b] for k, rt in units], warmup, repeats)
            for (k, rt), t in zip(units, measured):
                times[k, rt, b] = t
    latency = tuple(tuple(_row(rt, b, times[k, rt, b]) for rt in rts for b in batches) for k in range(n))
    best = tuple(fastest(rows) for rows in latency)
    ref = {b: times[0, REFERENCE_RUNTIME, b] for b in batches}
    end_to_end = tuple({b: Ratio.of(ref[b], times[k, best[k][b], b]) for b in batches} for k in range(n))
    per_runtime = tuple(
        {(rt, b): Ratio.of(times[0, rt, b], times[k, rt, b]) for rt in rts for b in batches} for k in range(n)
    )
    return ModelComparison(
        names=labels,
        macs=tuple(c[0] for c in counts),
        params=tuple(c[1] for c in counts),
        bytes=sizes,
        latency=latency,
        fastest=best,
        end_to_end=end_to_end,
        per_runtime=per_runtime,
        reference_runtime=REFERENCE_RUNTIME,
        versions=_versions(rts),
        threads=threads if threads else torch.get_num_threads(),
    )
