"""Image folders written with PIL: flat and train/test layouts, resizing, mode conversion, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from prunus.data import load_dataset
from prunus.errors import ConfigError, CorruptFileError, DataNotFoundError


def _write(directory, classes=("cat", "dog"), per_class=3, size=(8, 6), mode="L", seed=0):
    rng = np.random.default_rng(seed)
    arrays = {}
    for c in classes:
        (directory / c).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            shape = (size[1], size[0]) if mode == "L" else (size[1], size[0], 3)
            arr = rng.integers(0, 256, shape, dtype=np.uint8)
            Image.fromarray(arr).save(directory / c / f"{i}.png")
            arrays[(c, i)] = arr
    return arrays


def test_flat_folder_grayscale(tmp_path):
    arrays = _write(tmp_path / "imgs")
    data = load_dataset("imagefolder", "train", root=tmp_path / "imgs")
    assert data.images.shape == (6, 1, 6, 8)  # (N, C, H, W) for 8x6 (W x H) PNGs
    assert data.classes == ["cat", "dog"]
    assert data.labels.tolist() == [0, 0, 0, 1, 1, 1]
    assert torch.equal(data.images[4, 0], torch.from_numpy(arrays[("dog", 1)]))  # PNG is lossless
    with pytest.raises(DataNotFoundError, match="flat image folder with no test split"):
        load_dataset("imagefolder", "test", root=tmp_path / "imgs")


def test_split_layout_rgb_and_test_labels_follow_train_classes(tmp_path):
    _write(tmp_path / "train", classes=("a", "b", "c"), per_class=2, mode="RGB")
    arrays = _write(tmp_path / "test", classes=("b",), per_class=2, mode="RGB", seed=1)
    train = load_dataset("imagefolder", "train", root=tmp_path)
    test = load_dataset("imagefolder", "test", root=tmp_path)
    assert train.images.shape == (6, 3, 6, 8)
    assert train.num_classes == 3
    assert test.labels.tolist() == [1, 1]  # "b" is class 1 of the training classes
    assert test.classes == ["a", "b", "c"]
    assert torch.equal(test.images[0].permute(1, 2, 0), torch.from_numpy(arrays[("b", 0)]))


def test_resize_and_channel_conversion(tmp_path):
    _write(tmp_path / "x", size=(10, 10), mode="RGB", per_class=1)
    _write(tmp_path / "x", classes=("eel",), size=(5, 7), mode="RGB", per_class=1)
    data = load_dataset("imagefolder", "train", root=tmp_path / "x", image_size=16, channels=1)
    assert data.images.shape == (3, 1, 16, 16)
    assert data.classes == ["cat", "dog", "eel"]


def test_mixed_sizes_without_image_size_is_a_config_error(tmp_path):
    _write(tmp_path / "x", size=(10, 10), per_class=1)
    _write(tmp_path / "x", classes=("eel",), size=(5, 7), per_class=1)
    with pytest.raises(ConfigError, match=r"0.png is 5x7 but earlier images are 10x10; set image_size"):
        load_dataset("imagefolder", "train", root=tmp_path / "x")


def test_corrupt_png_names_the_file(tmp_path):
    _write(tmp_path / "x", per_class=1)
    (tmp_path / "x" / "dog" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    with pytest.raises(CorruptFileError, match=r"broken.png: cannot decode image"):
        load_dataset("imagefolder", "train", root=tmp_path / "x")


def test_missing_folder_and_bad_options(tmp_path):
    with pytest.raises(
        DataNotFoundError, match=r"--data-dir .*nothing does not exist.*Pass --data-dir DIR where DIR/<class>/"
    ):
        load_dataset("imagefolder", "train", root=tmp_path / "nothing")
    with pytest.raises(ConfigError, match="channels=2 is not valid for imagefolder; choose 1 or 3"):
        load_dataset("imagefolder", "train", root=tmp_path, channels=2)
