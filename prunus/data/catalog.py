"""The dataset registry: `load_dataset(name, split)` and `list_datasets(pattern)`.

Each dataset module registers a loader `fn(split, root=None, download=True, **options) ->
ImageTensors` together with a `DatasetInfo` that describes it (shape, classes, default crop
padding, how to get its files). The registry is filled when `prunus.data` is imported.

Example:
    >>> from prunus.data import load_dataset, list_datasets
    >>> "fashion-mnist" in list_datasets()
    True
    >>> load_dataset("synthetic", "test", num_samples=40, image_size=8).images.shape
    torch.Size([10, 1, 8, 8])
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from prunus.config import check_choice
from prunus.data.locate import RemoteSource, search
from prunus.data.tensors import ImageTensors
from prunus.errors import ConfigError
from prunus.registry import Registry

__all__ = [
    "DATASETS",
    "DEFAULT_DATASET",
    "SPLITS",
    "DatasetInfo",
    "dataset_info",
    "find_dataset",
    "list_datasets",
    "load_dataset",
    "register_dataset",
]

DEFAULT_DATASET = "fashion-mnist"
SPLITS = ("train", "test")

DATASETS: Registry[ImageTensors] = Registry("dataset")


@dataclass(frozen=True)
class DatasetInfo:
    """What a dataset is and where its files come from.

    Attributes:
        summary: one line for `prunus datasets`.
        input_shape: `(C, H, W)`, or None when it depends on options or files (imagefolder, synthetic).
        num_classes: number of classes, or None when it depends on options or files.
        sizes: `(train, test)` image counts, or None when not fixed.
        crop_padding: default zero padding for the random crop; None = by image size (2 up to 28 px, else 4).
        hint: one sentence: how the user gets the files (ends a `DataNotFoundError`).
        present: `dir -> dir holding the files, or None`; None for generated data (no files).
        source: download mirrors and checksums, or None when it cannot be downloaded.
        options: extra keyword options the loader accepts (e.g. ``("image_size",)``).
    """

    summary: str
    input_shape: tuple[int, int, int] | None
    num_classes: int | None
    sizes: tuple[int, int] | None
    crop_padding: int | None
    hint: str
    present: Callable[[Path], Path | None] | None = None
    source: RemoteSource | None = None
    options: tuple[str, ...] = ()


def register_dataset(
    name: str, info: DatasetInfo
) -> Callable[[Callable[..., ImageTensors]], Callable[..., ImageTensors]]:
    """Decorator registering a loader `fn(split, root=None, download=True, **options)` under `name`.

    Example:
        >>> @register_dataset("tiny-doc-example", DatasetInfo("doc", None, None, None, 0, hint=""))
        ... def _tiny(split, root=None, download=True):
        ...     raise NotImplementedError
        >>> "tiny-doc-example" in list_datasets()
        True
        >>> _ = DATASETS._entries.pop("tiny-doc-example")  # keep the registry clean
    """
    return DATASETS.register(name, info=info)


def dataset_info(name: str) -> DatasetInfo:
    """The `DatasetInfo` of `name`; `ConfigError` listing the choices for an unknown name."""
    return DATASETS.get(name).meta["info"]


def list_datasets(pattern: str = "*") -> list[str]:
    """Sorted names of the registered datasets matching a shell-style `pattern`.

    Example:
        >>> list_datasets("cifar*")
        ['cifar10', 'cifar100']
    """
    return DATASETS.list(pattern)


def find_dataset(name: str, root: str | os.PathLike[str] | None = None) -> Path | None:
    """The directory that holds `name`'s files (searched as `load_dataset` does), or None.

    Never downloads. Generated datasets (no files) return None too; check `dataset_info(name).present`.
    """
    info = dataset_info(name)
    if info.present is None:
        return None
    return search(name, root, info.present)


def load_dataset(
    name: str = DEFAULT_DATASET,
    split: str = "train",
    root: str | os.PathLike[str] | None = None,
    download: bool = True,
    **options: object,
) -> ImageTensors:
    """Load one split of a registered dataset into memory as uint8 tensors.

    Args:
        name: a name from `list_datasets()`; `fashion-mnist` is the default.
        split: ``"train"`` or ``"test"``.
        root: directory searched first (`--data-dir`); see `prunus.data.locate` for the order.
        download: allow a checksummed download when the files are not found.
        **options: dataset-specific options (`dataset_info(name).options`), e.g. `image_size`.

    Returns:
        The split as `ImageTensors`, its `mean`/`std` set for normalisation (training-split statistics
        for the fixed datasets; the split's own statistics for imagefolder and synthetic).

    Raises:
        ConfigError: unknown dataset, split or option.
        DataNotFoundError: the files are nowhere and cannot be downloaded (the message says how to get them).
        CorruptFileError: a file exists but is truncated or malformed (the message names it).

    Example:
        >>> data = load_dataset("fashion-mnist", "test")  # doctest: +SKIP
        >>> data.images.shape, data.classes[0]  # doctest: +SKIP
        (torch.Size([10000, 1, 28, 28]), 'T-shirt/top')
    """
    info = dataset_info(name)
    check_choice("split", split, SPLITS)
    unknown = sorted(k for k, v in options.items() if v is not None and k not in info.options)
    if unknown:
        accepted = ", ".join(info.options) or "none"
        raise ConfigError(f"dataset {name!r} does not accept option(s) {', '.join(unknown)}; accepted: {accepted}")
    return DATASETS.create(name, split=split, root=root, download=download, **options)
