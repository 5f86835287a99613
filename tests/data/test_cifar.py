"""CIFAR-10/100 readers on small archives written in the authors' python-pickle layout; unsafe pickles refused."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from prunus.data import load_dataset
from prunus.data.cifar import safe_unpickle
from prunus.errors import CorruptFileError


def test_cifar10_reads_batches_in_order(tmp_path, write_cifar):
    files = write_cifar(tmp_path / "cifar-10-batches-py", "cifar10", n=6)
    train = load_dataset("cifar10", "train", root=tmp_path, download=False)  # found in root/cifar-10-batches-py
    test = load_dataset("cifar10", "test", root=tmp_path, download=False)
    assert train.images.shape == (30, 3, 32, 32)
    assert test.images.shape == (6, 3, 32, 32)
    expected_labels = sum((files[f"data_batch_{i}"][b"labels"] for i in range(1, 6)), [])
    assert train.labels.tolist() == expected_labels
    assert test.labels.tolist() == files["test_batch"][b"labels"]
    row = files["data_batch_2"][b"data"][0]  # first image of batch 2 = sample 6
    # row layout: 1024 red, 1024 green, 1024 blue values, each a row-major 32x32 plane
    assert torch.equal(train.images[6, 0], torch.from_numpy(row[:1024].reshape(32, 32)))
    assert torch.equal(train.images[6, 2, 31], torch.from_numpy(row[3072 - 32 :]))
    assert train.classes == [f"c{k}" for k in range(10)]
    assert len(train.mean) == 3
    assert abs(train.mean[0] - 0.4914) < 1e-3


def test_cifar100_fine_labels(tmp_path, write_cifar):
    files = write_cifar(tmp_path / "cifar100" / "cifar-100-python", "cifar100", n=8)
    train = load_dataset("cifar100", "train", root=tmp_path, download=False)  # root/cifar100/cifar-100-python
    assert train.images.shape == (8, 3, 32, 32)
    assert train.labels.tolist() == files["train"][b"fine_labels"]
    assert train.num_classes == 100
    assert train.classes[99] == "fine99"
    np.testing.assert_array_equal(train.images.reshape(8, -1).numpy(), files["train"][b"data"])


def test_cifar_found_through_prunus_data_env(tmp_path, write_cifar, monkeypatch):
    write_cifar(tmp_path / "store" / "cifar10" / "cifar-10-batches-py", "cifar10", n=2)
    monkeypatch.setenv("PRUNUS_DATA", str(tmp_path / "store"))
    assert len(load_dataset("cifar10", "test", download=False)) == 2


class _Evil:
    def __reduce__(self):
        import os

        return (os.system, ("echo pwned",))


def test_safe_unpickle_refuses_arbitrary_globals(tmp_path):
    path = tmp_path / "data_batch_1"
    path.write_bytes(pickle.dumps({b"data": _Evil()}, protocol=2))
    with pytest.raises(
        CorruptFileError,
        match=r"data_batch_1: not a valid CIFAR pickle \(global (posix|os|nt)\.system is not allowed\)",
    ):
        safe_unpickle(path)


def test_safe_unpickle_refuses_object_arrays(tmp_path):
    path = tmp_path / "batch"
    path.write_bytes(pickle.dumps({b"data": np.array([1, "x"], dtype=object)}, protocol=2))
    with pytest.raises(CorruptFileError, match="object dtypes are not allowed"):
        safe_unpickle(path)


def test_safe_unpickle_accepts_numpy_arrays_with_protocols_2_and_4(tmp_path):
    arr = np.arange(12, dtype=np.uint8).reshape(3, 4)
    for proto in (2, 4):
        path = tmp_path / f"p{proto}"
        path.write_bytes(pickle.dumps({b"data": arr, b"labels": [1, 2, 3]}, protocol=proto))
        loaded = safe_unpickle(path)
        assert loaded["labels"] == [1, 2, 3]
        np.testing.assert_array_equal(loaded["data"], arr)


def test_cifar_truncated_or_malformed_batch(tmp_path, write_cifar):
    d = tmp_path / "cifar-10-batches-py"
    write_cifar(d, "cifar10", n=4)
    raw = (d / "test_batch").read_bytes()
    (d / "test_batch").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(CorruptFileError, match=r"test_batch: not a valid CIFAR pickle"):
        load_dataset("cifar10", "test", root=tmp_path, download=False)
    bad = {b"data": np.zeros((4, 100), dtype=np.uint8), b"labels": [0, 1, 2, 3]}
    (d / "test_batch").write_bytes(pickle.dumps(bad, protocol=2))
    with pytest.raises(CorruptFileError, match=r"test_batch: 'data' must be a uint8 \(N, 3072\) array"):
        load_dataset("cifar10", "test", root=tmp_path, download=False)
    bad = {b"data": np.zeros((4, 3072), dtype=np.uint8), b"labels": [0, 1, 2, 10]}
    (d / "test_batch").write_bytes(pickle.dumps(bad, protocol=2))
    with pytest.raises(CorruptFileError, match=r"labels outside \[0, 10\)"):
        load_dataset("cifar10", "test", root=tmp_path, download=False)
