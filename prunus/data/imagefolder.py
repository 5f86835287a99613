"""An image folder: `DIR/<class>/*.png` (or `DIR/train/<class>/...` and `DIR/test/<class>/...`), read with PIL.

Class names are the sorted sub-directory names of the training folder; label `k` is `classes[k]`.
Every image is converted to one mode (`channels`: 1 -> grayscale, 3 -> RGB; default: RGB unless
the first image is grayscale) and must have one size, or is resized to `image_size` x
`image_size` when that option is given. Decoding is per file (that is what a folder of PNGs is),
but it happens once: the result lives in memory as uint8 like every other dataset.

Example:
    >>> from prunus.data import load_dataset
    >>> data = load_dataset("imagefolder", root="my_images", image_size=32)  # doctest: +SKIP
    >>> data.classes  # doctest: +SKIP
    ['cat', 'dog']
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from prunus.data.catalog import DatasetInfo, register_dataset
from prunus.data.locate import locate
from prunus.data.tensors import ImageTensors
from prunus.errors import ConfigError, CorruptFileError, DataNotFoundError

__all__ = ["IMAGE_EXTENSIONS", "imagefolder_present", "read_image_folder"]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
_HINT = (
    "Pass --data-dir DIR where DIR/<class>/*.png holds the training images "
    "(or DIR/train/<class>/ and DIR/test/<class>/ for both splits)."
)


def _images_in(directory: Path) -> list[Path]:
    return sorted(p for p in directory.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)


def _class_dirs(directory: Path) -> list[Path]:
    """Sorted sub-directories of `directory` that contain at least one image."""
    if not directory.is_dir():
        return []
    return sorted(d for d in directory.iterdir() if d.is_dir() and _images_in(d))


def imagefolder_present(directory: Path) -> Path | None:
    """`directory` if it is an image folder (flat or with a train/ split), else None."""
    if _class_dirs(directory / "train") or _class_dirs(directory):
        return directory
    return None


def read_image_folder(
    directory: str | os.PathLike[str],
    *,
    classes: list[str] | None = None,
    image_size: int | None = None,
    channels: int | None = None,
    name: str = "imagefolder",
) -> ImageTensors:
    """Decode every image under `directory/<class>/` into uint8 `ImageTensors`.

    Args:
        directory: folder whose sub-directories are the classes.
        classes: class list to label against (default: the sorted sub-directory names); a
            sub-directory not in it is an error, so train and test labels agree.
        image_size: resize every image to this square size (bilinear); None = keep, all must match.
        channels: 1 (grayscale) or 3 (RGB); None = 1 if the first image is grayscale, else 3.
        name: name for messages and `ImageTensors.name`.

    Raises:
        CorruptFileError: an image cannot be decoded (the message names it).
        ConfigError: images of different sizes without `image_size`, or an unknown class folder.
    """
    directory = Path(directory)
    class_dirs = _class_dirs(directory)
    if not class_dirs:
        raise DataNotFoundError(f"{directory} has no class sub-directories with images. {_HINT}")
    classes = list(classes) if classes is not None else [d.name for d in class_dirs]
    arrays, labels = [], []
    mode: str | None = {1: "L", 3: "RGB", None: None}[channels]
    size: tuple[int, int] | None = (image_size, image_size) if image_size else None
    for class_dir in class_dirs:
        if class_dir.name not in classes:
            raise ConfigError(f"{class_dir}: class {class_dir.name!r} is not among the training classes {classes}")
        label = classes.index(class_dir.name)
        for path in _images_in(class_dir):
            try:
                with Image.open(path) as img:
                    if mode is None:  # the first image decides
                        mode = "L" if img.mode in ("1", "L", "I", "I;16", "F") else "RGB"
                    img = img.convert(mode)
                    if image_size:
                        img = img.resize(size, Image.Resampling.BILINEAR)  # type: ignore[arg-type]
                    arr = np.asarray(img, dtype=np.uint8)
            except (UnidentifiedImageError, OSError, ValueError) as exc:
                raise CorruptFileError(f"{path}: cannot decode image ({exc})") from None
            if size is None:
                size = (arr.shape[1], arr.shape[0])
            elif (arr.shape[1], arr.shape[0]) != size:
                raise ConfigError(
                    f"{path} is {arr.shape[1]}x{arr.shape[0]} but earlier images are {size[0]}x{size[1]}; "
                    "set image_size to resize them all"
                )
            arrays.append(arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1))
            labels.append(label)
    images = torch.from_numpy(np.stack(arrays))
    return ImageTensors(images, torch.tensor(labels, dtype=torch.int64), classes, name=name)


@register_dataset(
    "imagefolder",
    DatasetInfo(
        summary="your own images: DIR/<class>/*.png (or DIR/train|test/<class>/), read with PIL",
        input_shape=None,
        num_classes=None,
        sizes=None,
        crop_padding=None,
        hint=_HINT,
        present=imagefolder_present,
        options=("image_size", "channels"),
    ),
)
def imagefolder(
    split: str,
    root: str | os.PathLike[str] | None = None,
    download: bool = True,
    image_size: int | None = None,
    channels: int | None = None,
) -> ImageTensors:
    """The `split` of an image folder; a flat folder (no train/ and test/) only has a train split."""
    if channels not in (None, 1, 3):
        raise ConfigError(f"channels={channels!r} is not valid for imagefolder; choose 1 or 3")
    if image_size is not None and image_size < 1:
        raise ConfigError(f"image_size={image_size!r} must be a positive integer")
    base = locate("imagefolder", root=root, download=False, present=imagefolder_present, hint=_HINT)
    classes = None
    if _class_dirs(base / "train"):
        directory = base / split
        classes = [d.name for d in _class_dirs(base / "train")]  # test labels follow the training classes
        if split == "test" and not _class_dirs(directory):
            raise DataNotFoundError(f"{base} has train/ but no test/<class>/ images. {_HINT}")
    elif split == "train":
        directory = base
    else:
        raise DataNotFoundError(
            f"{base} is a flat image folder with no test split; use DIR/train/ and DIR/test/. {_HINT}"
        )
    return read_image_folder(
        directory, classes=classes, image_size=image_size, channels=channels, name=f"imagefolder/{split}"
    )
