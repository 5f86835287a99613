"""A tiny pipeline recipe on synthetic data (4-16 channels, 8x8 images): seconds per stage."""

from __future__ import annotations

import copy

import pytest

TINY = {
    "version": 1,
    "name": "tiny",
    "model": {"name": "resnet20", "width_mult": 0.25},
    "data": {"name": "synthetic", "num_samples": 256, "image_size": 8, "channels": 1, "num_classes": 4,
             "val_size": 32, "batch_size": 32},
    "train": {"threads": 1, "device": "cpu"},
    "stages": [
        {"stage": "train", "name": "baseline", "train": {"epochs": 2}},
        {"stage": "csgd", "width": 0.5, "rounds": 2, "train": {"epochs": 1}},
        {"stage": "prune", "keep_macs": 0.7},
        {"stage": "finetune", "methods": [{"name": "sfp", "args": {"rate": 0.25}}], "train": {"epochs": 3}},
        {"stage": "export"},
        {"stage": "bench", "batch_sizes": [2], "runtimes": ["torch"], "repeats": 2, "warmup": 1},
        {"stage": "report"},
    ],
}  # fmt: skip


@pytest.fixture
def tiny_recipe() -> dict:
    """A fresh copy of the tiny recipe (tests edit it)."""
    return copy.deepcopy(TINY)


@pytest.fixture(scope="session")
def finished(tmp_path_factory):
    """The tiny recipe run once, uninterrupted, in-process: (run_dir, RunSummary, echoed lines)."""
    from prunus.pipeline import parse_recipe, run_pipeline

    out = tmp_path_factory.mktemp("pipeline") / "run"
    lines: list[str] = []
    summary = run_pipeline(parse_recipe(copy.deepcopy(TINY)), out, progress=False, echo=lines.append)
    return out, summary, lines
