"""Fashion-MNIST (the default dataset) and MNIST: four IDX files each, plain or gzip-compressed.

Both sets are 28x28 grayscale, 10 classes, 60,000 training and 10,000 test images. Files are
found by `prunus.data.locate` (root, `$PRUNUS_DATA`, the Debian package, the cache) or downloaded
from the authors' mirrors and checked against their published md5s.

Normalisation uses the per-channel statistics of the full official training split (constants
below, computed from the files), so a quick 10k-subset run and a full run normalise identically
and an exported model has one well-defined input convention.

Example:
    >>> from prunus.data import load_dataset
    >>> test = load_dataset("fashion-mnist", "test", download=False)  # doctest: +SKIP
    >>> test.images.shape, test.mean  # doctest: +SKIP
    (torch.Size([10000, 1, 28, 28]), (0.2860406,))
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from prunus.data.catalog import DatasetInfo, register_dataset
from prunus.data.idx import read_idx
from prunus.data.locate import RemoteFile, RemoteSource, locate
from prunus.data.tensors import ImageTensors
from prunus.errors import CorruptFileError

__all__ = ["FASHION_MNIST_SOURCE", "IDX_FILES", "MNIST_SOURCE", "idx_files_present", "load_idx_pair"]

# split -> (images file, labels file), without the optional .gz suffix.
IDX_FILES: dict[str, tuple[str, str]] = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}

# md5 = the authors' published checksums of the .gz files. content_sha256 = sha256 of the
# decompressed IDX bytes, computed from the Debian package's files (which recompress the
# official files, so their gz md5s differ while the content is the same).
FASHION_MNIST_SOURCE = RemoteSource(
    mirrors=(
        "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    ),
    files=(
        RemoteFile(
            "train-images-idx3-ubyte.gz",
            "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
            "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
        ),
        RemoteFile(
            "train-labels-idx1-ubyte.gz",
            "25c81989df183df01b3e8a0aad5dffbe",
            "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
        ),
        RemoteFile(
            "t10k-images-idx3-ubyte.gz",
            "bef4ecab320f06d8554ea6380940ec79",
            "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
        ),
        RemoteFile(
            "t10k-labels-idx1-ubyte.gz",
            "bb300cfdad3c16e7a12a480ee83cd310",
            "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
        ),
    ),
)

MNIST_SOURCE = RemoteSource(
    mirrors=("https://ossci-datasets.s3.amazonaws.com/mnist/", "https://storage.googleapis.com/cvdf-datasets/mnist/"),
    files=(
        RemoteFile("train-images-idx3-ubyte.gz", "f68b3c2dcbeaaa9fbdd348bbdeb94873"),
        RemoteFile("train-labels-idx1-ubyte.gz", "d53e105ee54ea40749a09fcbcd1e9432"),
        RemoteFile("t10k-images-idx3-ubyte.gz", "9fb629c4189551a2d022fa330f9573f3"),
        RemoteFile("t10k-labels-idx1-ubyte.gz", "ec29112dd5afa0611ce80d1b7f02629c"),
    ),
)

FASHION_CLASSES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]
MNIST_CLASSES = [str(d) for d in range(10)]

# Training-split statistics in [0, 1] units (population std), from the official 60k images.
FASHION_MEAN, FASHION_STD = (0.2860406,), (0.3530242,)
MNIST_MEAN, MNIST_STD = (0.1306605,), (0.3081078,)

_FILE_LIST = " ".join(f"{n}.gz" for pair in IDX_FILES.values() for n in pair)


def _resolve(directory: Path, base: str) -> Path | None:
    """`base.gz` or `base` in `directory`, whichever exists (gz first), else None."""
    for candidate in (directory / f"{base}.gz", directory / base):
        if candidate.is_file():
            return candidate
    return None


def idx_files_present(directory: Path) -> Path | None:
    """`directory` if it holds all four IDX files (each plain or .gz), else None."""
    if all(_resolve(directory, base) is not None for pair in IDX_FILES.values() for base in pair):
        return directory
    return None


def load_idx_pair(
    directory: Path, split: str, *, classes: list[str], mean: tuple[float, ...], std: tuple[float, ...], name: str
) -> ImageTensors:
    """Read the image and label IDX files of `split` from `directory` into `ImageTensors`.

    Raises:
        CorruptFileError: a malformed file, images that are not uint8 (N, H, W), counts that differ
            between the two files, or labels outside `[0, len(classes))`.
    """
    img_base, lbl_base = IDX_FILES[split]
    img_path, lbl_path = _resolve(directory, img_base), _resolve(directory, lbl_base)
    if img_path is None or lbl_path is None:
        raise CorruptFileError(f"{directory}: {img_base}(.gz) or {lbl_base}(.gz) disappeared")
    images = read_idx(img_path, ndim=3)
    labels = read_idx(lbl_path, ndim=1)
    if images.dtype != np.uint8 or labels.dtype != np.uint8:
        raise CorruptFileError(f"{img_path} / {lbl_path}: expected uint8 IDX data, got {images.dtype} / {labels.dtype}")
    if len(images) != len(labels):
        raise CorruptFileError(f"{img_path} has {len(images)} images but {lbl_path} has {len(labels)} labels")
    if len(labels) and int(labels.max()) >= len(classes):
        raise CorruptFileError(f"{lbl_path}: label {int(labels.max())} out of range for {len(classes)} classes")
    return ImageTensors(
        images=torch.from_numpy(images).unsqueeze(1),
        labels=torch.from_numpy(labels.astype(np.int64)),
        classes=classes,
        mean=mean,
        std=std,
        name=f"{name}/{split}",
    )


def _hint(name: str, package: str | None) -> str:
    apt = f"install them with 'apt-get install {package}', or " if package else ""
    return (
        f"To get them: {apt}put {_FILE_LIST} into a directory DIR and pass --data-dir DIR "
        f"(or set $PRUNUS_DATA so that $PRUNUS_DATA/{name}/ holds them), or allow the download on a networked machine."
    )


def _info(summary: str, name: str, package: str | None, source: RemoteSource) -> DatasetInfo:
    return DatasetInfo(
        summary=summary,
        input_shape=(1, 28, 28),
        num_classes=10,
        sizes=(60000, 10000),
        crop_padding=2,
        hint=_hint(name, package),
        present=idx_files_present,
        source=source,
    )


@register_dataset(
    "fashion-mnist",
    _info(
        "Zalando Fashion-MNIST, 28x28 grayscale clothing, 10 classes",
        "fashion-mnist",
        "dataset-fashion-mnist",
        FASHION_MNIST_SOURCE,
    ),
)
def fashion_mnist(split: str, root: str | os.PathLike[str] | None = None, download: bool = True) -> ImageTensors:
    """Fashion-MNIST `split` ("train" 60k / "test" 10k) as uint8 `(N, 1, 28, 28)` tensors."""
    hint = _hint("fashion-mnist", "dataset-fashion-mnist")
    directory = locate(
        "fashion-mnist", root=root, download=download, present=idx_files_present, hint=hint, source=FASHION_MNIST_SOURCE
    )
    return load_idx_pair(
        directory, split, classes=FASHION_CLASSES, mean=FASHION_MEAN, std=FASHION_STD, name="fashion-mnist"
    )


@register_dataset(
    "mnist", _info("LeCun MNIST handwritten digits, 28x28 grayscale, 10 classes", "mnist", None, MNIST_SOURCE)
)
def mnist(split: str, root: str | os.PathLike[str] | None = None, download: bool = True) -> ImageTensors:
    """MNIST `split` ("train" 60k / "test" 10k) as uint8 `(N, 1, 28, 28)` tensors."""
    directory = locate(
        "mnist", root=root, download=download, present=idx_files_present, hint=_hint("mnist", None), source=MNIST_SOURCE
    )
    return load_idx_pair(directory, split, classes=MNIST_CLASSES, mean=MNIST_MEAN, std=MNIST_STD, name="mnist")
