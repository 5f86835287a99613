"""IDX reader/writer and the MNIST / Fashion-MNIST loaders on files written in the real format."""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest
import torch

from prunus.data import load_dataset, read_idx, write_idx
from prunus.errors import CorruptFileError


@pytest.mark.parametrize(
    ("dtype", "shape", "suffix"),
    [(np.uint8, (3, 5, 4), ".gz"), (np.int32, (7,), ""), (np.float32, (2, 3), ".gz"), (np.int16, (4, 2, 2, 1), "")],
)
def test_idx_round_trip(tmp_path, dtype, shape, suffix):
    array = (np.arange(int(np.prod(shape))) * 3 - 5).astype(dtype).reshape(shape)
    path = tmp_path / f"a-idx{suffix}"
    write_idx(path, array)
    back = read_idx(path)
    assert back.dtype == np.dtype(dtype)
    assert back.shape == shape
    np.testing.assert_array_equal(back, array)
    assert back.flags.writeable


def test_idx_header_is_big_endian_real_format(tmp_path):
    path = tmp_path / "labels-idx1-ubyte.gz"
    write_idx(path, np.array([7, 2, 1], dtype=np.uint8))
    raw = gzip.decompress(path.read_bytes())
    # magic 0x00000801, count 3 (big-endian), then the bytes: the layout of train-labels-idx1-ubyte
    assert raw == bytes([0, 0, 8, 1]) + struct.pack(">I", 3) + bytes([7, 2, 1])


def test_idx_bad_magic(tmp_path):
    path = tmp_path / "bad-idx3-ubyte"
    path.write_bytes(b"\x01\x02\x08\x01" + struct.pack(">I", 1) + b"\x00")
    with pytest.raises(CorruptFileError, match=r"bad-idx3-ubyte: not an IDX file \(bad magic 01020801\)"):
        read_idx(path)


def test_idx_wrong_length(tmp_path):
    path = tmp_path / "short-idx1-ubyte"
    path.write_bytes(bytes([0, 0, 8, 1]) + struct.pack(">I", 10) + bytes(7))
    with pytest.raises(
        CorruptFileError, match=r"short-idx1-ubyte: IDX data has 7 bytes but the header \(10,\) needs 10"
    ):
        read_idx(path)


def test_idx_truncated_gzip(tmp_path):
    good = tmp_path / "x-idx3-ubyte.gz"
    write_idx(good, np.zeros((20, 28, 28), dtype=np.uint8))
    bad = tmp_path / "cut-idx3-ubyte.gz"
    bad.write_bytes(good.read_bytes()[:-30])
    with pytest.raises(CorruptFileError, match=r"cut-idx3-ubyte.gz: not a valid gzip file"):
        read_idx(bad)


def test_idx_wrong_ndim_and_unknown_type(tmp_path):
    path = tmp_path / "v-idx1-ubyte"
    write_idx(path, np.zeros(4, dtype=np.uint8))
    with pytest.raises(CorruptFileError, match="expected a 3-dimensional IDX file, found 1"):
        read_idx(path, ndim=3)
    odd = tmp_path / "odd"
    odd.write_bytes(bytes([0, 0, 0x42, 1]) + struct.pack(">I", 0))
    with pytest.raises(CorruptFileError, match="unknown IDX type code 0x42"):
        read_idx(odd)


@pytest.mark.parametrize("name", ["mnist", "fashion-mnist"])
@pytest.mark.parametrize("gz", [True, False])
def test_mnist_loaders_read_written_files(tmp_path, write_mnist, name, gz):
    written = write_mnist(tmp_path / "d", n_train=30, n_test=10, gz=gz)
    train = load_dataset(name, "train", root=tmp_path / "d", download=False)
    test = load_dataset(name, "test", root=tmp_path / "d", download=False)
    assert train.images.shape == (30, 1, 28, 28)
    assert train.images.dtype == torch.uint8
    assert test.images.shape == (10, 1, 28, 28)
    assert torch.equal(train.images[:, 0], torch.from_numpy(written["train"][0]))
    assert train.labels.dtype == torch.int64
    assert train.labels.tolist() == [i % 10 for i in range(30)]
    assert train.num_classes == 10
    assert train.name == f"{name}/train"
    # normalisation constants of the official training split, not of these random files
    assert train.mean == test.mean == ((0.2860406,) if name == "fashion-mnist" else (0.1306605,))
    if name == "fashion-mnist":
        assert train.classes[0] == "T-shirt/top"
        assert train.classes[9] == "Ankle boot"
    else:
        assert train.classes == [str(d) for d in range(10)]


def test_root_subdirectory_named_after_dataset_is_found(tmp_path, write_mnist):
    write_mnist(tmp_path / "mnist")
    assert len(load_dataset("mnist", "test", root=tmp_path, download=False)) == 10


def test_mismatched_counts_and_bad_labels(tmp_path, write_mnist):
    d = tmp_path / "d"
    write_mnist(d)
    write_idx(d / "t10k-labels-idx1-ubyte.gz", np.zeros(9, dtype=np.uint8))
    with pytest.raises(CorruptFileError, match="has 10 images but .*t10k-labels-idx1-ubyte.gz has 9 labels"):
        load_dataset("mnist", "test", root=d, download=False)
    write_idx(d / "t10k-labels-idx1-ubyte.gz", np.full(10, 12, dtype=np.uint8))
    with pytest.raises(CorruptFileError, match="label 12 out of range for 10 classes"):
        load_dataset("mnist", "test", root=d, download=False)


def test_truncated_dataset_file_names_the_file(tmp_path, write_mnist):
    d = tmp_path / "d"
    write_mnist(d)
    path = d / "train-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(CorruptFileError, match=r"train-images-idx3-ubyte\.gz: not a valid gzip file"):
        load_dataset("fashion-mnist", "train", root=d, download=False)
