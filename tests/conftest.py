"""Shared fixtures: tiny data bundles and the real Fashion-MNIST location."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")


@pytest.fixture(autouse=True)
def _deterministic_threads():
    # Two cores shared by the whole suite: one intra-op thread keeps tests predictable.
    torch.set_num_threads(1)
    return


@pytest.fixture
def fashion_dir() -> Path:
    """The real Fashion-MNIST files; CI installs the Debian package, elsewhere the test skips."""
    if not (FASHION_DIR / "train-images-idx3-ubyte.gz").exists():
        pytest.skip("Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)")
    return FASHION_DIR


@pytest.fixture
def no_download(monkeypatch):
    """Make sure nothing reaches for the network during a test."""
    monkeypatch.setenv("PRUNUS_NO_DOWNLOAD", "1")
    return


def pytest_configure(config):
    os.environ.setdefault("PRUNUS_NO_DOWNLOAD", "1")
