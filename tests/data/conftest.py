"""Fixtures for the data tests: hermetic search paths and writers of small files in the real formats."""

from __future__ import annotations

import pickle
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from prunus.data import locate
from prunus.data.idx import write_idx
from prunus.data.mnist import IDX_FILES


@pytest.fixture(autouse=True)
def hermetic(tmp_path, monkeypatch) -> Path:
    """No system dataset dirs, no $PRUNUS_DATA, a private cache, no downloads: each test sees only its files."""
    system = tmp_path / "system"
    system.mkdir()
    monkeypatch.setattr(locate, "SYSTEM_DATA_DIRS", (system,))
    monkeypatch.delenv("PRUNUS_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("PRUNUS_NO_DOWNLOAD", "1")
    return system


@pytest.fixture
def write_mnist() -> Callable[..., dict[str, tuple[np.ndarray, np.ndarray]]]:
    """Write the four (Fashion-)MNIST IDX files (gz) with random content; returns split -> (images, labels)."""

    def write(directory: Path, n_train: int = 30, n_test: int = 10, seed: int = 0, gz: bool = True):
        rng = np.random.default_rng(seed)
        directory.mkdir(parents=True, exist_ok=True)
        out = {}
        for split, n in (("train", n_train), ("test", n_test)):
            images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
            labels = (np.arange(n) % 10).astype(np.uint8)
            img_name, lbl_name = IDX_FILES[split]
            suffix = ".gz" if gz else ""
            write_idx(directory / f"{img_name}{suffix}", images)
            write_idx(directory / f"{lbl_name}{suffix}", labels)
            out[split] = (images, labels)
        return out

    return write


def _cifar_batch(rng: np.random.Generator, n: int, num_classes: int, label_key: str) -> dict[bytes, object]:
    # Same structure as the authors' files once loaded with encoding="bytes": bytes keys, uint8 (N, 3072), int list.
    return {
        b"batch_label": b"testing batch",
        label_key.encode(): [int(v) for v in rng.integers(0, num_classes, n)],
        b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
        b"filenames": [f"img_{i}.png".encode() for i in range(n)],
    }


@pytest.fixture
def write_cifar() -> Callable[..., dict[str, dict]]:
    """Write a small CIFAR-10 or CIFAR-100 python directory (protocol-2 pickles); returns file -> dict."""

    def write(directory: Path, kind: str = "cifar10", n: int = 6, seed: int = 0) -> dict[str, dict]:
        rng = np.random.default_rng(seed)
        directory.mkdir(parents=True, exist_ok=True)
        if kind == "cifar10":
            files = {f"data_batch_{i}": _cifar_batch(rng, n, 10, "labels") for i in range(1, 6)}
            files["test_batch"] = _cifar_batch(rng, n, 10, "labels")
            files["batches.meta"] = {b"label_names": [f"c{k}".encode() for k in range(10)], b"num_vis": 3072}
        else:
            files = {s: _cifar_batch(rng, n, 100, "fine_labels") for s in ("train", "test")}
            files["meta"] = {
                b"fine_label_names": [f"fine{k}".encode() for k in range(100)],
                b"coarse_label_names": [f"coarse{k}".encode() for k in range(20)],
            }
        for name, obj in files.items():
            (directory / name).write_bytes(pickle.dumps(obj, protocol=2))
        return files

    return write
