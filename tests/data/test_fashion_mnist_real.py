"""The real Fashion-MNIST files (Debian package `dataset-fashion-mnist`); skipped where they are absent."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from prunus.data import DataConfig, build_loaders, channel_stats, load_dataset
from prunus.data.locate import file_digest, verify
from prunus.data.mnist import FASHION_MNIST_SOURCE

FASHION = Path("/usr/share/datasets/fashion-mnist")

pytestmark = [
    pytest.mark.data,
    pytest.mark.skipif(
        not (FASHION / "train-images-idx3-ubyte.gz").exists(),
        reason="Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)",
    ),
]


@pytest.fixture(scope="module")
def splits():
    return {s: load_dataset("fashion-mnist", s, root=FASHION, download=False) for s in ("train", "test")}


def test_shapes_labels_and_classes(splits):
    train, test = splits["train"], splits["test"]
    assert train.images.shape == (60000, 1, 28, 28)
    assert test.images.shape == (10000, 1, 28, 28)
    assert train.images.dtype == torch.uint8
    assert train.labels.dtype == torch.int64
    assert int(train.labels.min()) == 0
    assert int(train.labels.max()) == 9
    assert train.labels.bincount().tolist() == [6000] * 10
    assert test.labels.bincount().tolist() == [1000] * 10
    assert test.labels[:5].tolist() == [9, 2, 1, 1, 6]  # first test labels of the official file
    assert train.classes[9] == "Ankle boot"


def test_known_checksums():
    labels = file_digest(FASHION / "t10k-labels-idx1-ubyte.gz", "sha256", decompress=True)
    assert labels == "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34"
    assert verify(FASHION_MNIST_SOURCE, FASHION) == {f.name: True for f in FASHION_MNIST_SOURCE.files}


def test_normalisation_constants_match_the_training_split(splits):
    mean, std = channel_stats(splits["train"].images)
    assert mean[0] == pytest.approx(splits["train"].mean[0], abs=1e-6)
    assert std[0] == pytest.approx(splits["train"].std[0], abs=1e-6)


def test_protocol_split_and_quick_subset():
    full = build_loaders(DataConfig(root=str(FASHION), download=False))
    assert (full.train.num_samples, full.val.num_samples, full.test.num_samples) == (55000, 5000, 10000)
    assert len(full.train) == 430
    assert full.train.augment.crop_padding == 2
    quick = build_loaders(DataConfig(root=str(FASHION), download=False, subset=10000))
    assert quick.train.num_samples == 10000
    assert len(quick.train) == 79
    assert torch.equal(quick.val.data.labels, full.val.data.labels)  # same validation set
    x, y = next(iter(quick.train))
    assert x.shape == (128, 1, 28, 28)
    assert -1.0 < float(x.mean()) < 1.0
