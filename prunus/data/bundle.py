"""`DataConfig` -> `build_loaders` -> `DataBundle`: the train/val/test loaders a training run needs.

The validation set is held out of the official training split with `split_seed` (independent of
the run seed, so paired seeds of different arms share it); `subset` then keeps a fixed, seeded
part of the remaining training images (the "quick" protocol: 10k images, same val and test sets).
Subsets are nested: the first 10k of a permutation are inside the first 20k.

Normalisation: every loader uses the training split's statistics (documented constants for the
fixed datasets; computed from the training split for imagefolder and synthetic), never the test
set's. Evaluation loaders are unshuffled, unaugmented and not sharded: every rank evaluates all.

Example:
    >>> from prunus.data import DataConfig, build_loaders
    >>> cfg = DataConfig(name="synthetic", num_samples=200, val_size=40, subset=100, batch_size=32)
    >>> bundle = build_loaders(cfg, seed=0)
    >>> bundle.train.num_samples, bundle.val.num_samples, bundle.test.num_samples, bundle.input_shape
    (100, 40, 50, (1, 28, 28))
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from prunus.config import Config, check_choice, check_count
from prunus.data._seed import generator
from prunus.data.augment import Augment
from prunus.data.catalog import DEFAULT_DATASET, dataset_info, list_datasets, load_dataset
from prunus.data.loader import TensorLoader
from prunus.data.locate import check_root
from prunus.errors import ConfigError

__all__ = [
    "DEFAULT_EVAL_BATCH_SIZE",
    "EXECUTION_ONLY_FIELDS",
    "DataBundle",
    "DataConfig",
    "build_loaders",
    "default_crop_padding",
    "default_val_size",
    "split_indices",
]

#: Validation/test batch size. Not the largest that fits: on CPU a big batch's activations leave
#: the caches and each image gets slower. Measured by benchmarks/bench_eval_batch.py (the 10k
#: Fashion-MNIST test images, 2 threads), time over the fastest batch size at 32 / 128 / 1024:
#: ResNet-20 1.11 / 1.00 / 2.15, ResNet-56 1.12 / 1.00 / 2.11, MobileNetV2 1.00 / 1.77 / 4.31;
#: 32 has the smallest worst case and the smallest total of the three.
DEFAULT_EVAL_BATCH_SIZE = 32

#: DataConfig fields that say where the data is found and how it is scored, not what a run
#: computes: a resumed run (or pipeline stage) may change them, e.g. on another machine.
EXECUTION_ONLY_FIELDS = frozenset({"root", "download", "eval_batch_size"})

# DataConfig fields that are passed to the dataset loader as options (only where the dataset accepts them).
_OPTION_FIELDS = ("num_samples", "num_classes", "image_size", "channels")


def _check_int(field: str, value: Any, low: int, bound: str, *, optional: bool = False) -> None:
    check_count(f"DataConfig.{field}", value, low, bound, optional=optional)


@dataclasses.dataclass(frozen=True)
class DataConfig(Config):
    """Which dataset, how it is split, augmented and batched.

    Example:
        >>> DataConfig(val_size=0, subset=10000).subset
        10000
        >>> DataConfig(batch_size=0)
        Traceback (most recent call last):
        ...
        prunus.errors.ConfigError: DataConfig.batch_size=0 is not valid; expected an integer from 1 to 65536
    """

    name: str = DEFAULT_DATASET  # a name from list_datasets()
    root: str | None = None  # directory searched first (--data-dir); then $PRUNUS_DATA, /usr/share/datasets
    download: bool = True  # allow a checksummed download when the files are nowhere on disk
    val_size: int | None = (
        None  # held out of training for validation; None = 5000 (benchmarks.md) or 10% of small sets; 0 = none
    )
    split_seed: int = 0  # seed of the train/val split and the subset (independent of the run seed)
    subset: int | None = None  # keep this many training images after the val split (quick protocol: 10000)
    test_subset: int | None = None  # evaluate on a fixed random subset of this many test images (demos); None = all
    augment: bool = True  # random crop + flip on the training loader
    crop_padding: int | None = None  # zero padding of the random crop; None = dataset default (2 at 28 px, 4 at 32)
    flip: bool = True  # random horizontal flip (when augment is on)
    batch_size: int = 128  # training batch size (per rank)
    eval_batch_size: int = DEFAULT_EVAL_BATCH_SIZE  # validation/test batch size
    drop_last: bool = False  # drop the incomplete last training batch
    num_samples: int | None = None  # synthetic only: training images (test = num_samples // 4)
    num_classes: int | None = None  # synthetic only: number of classes
    image_size: int | None = None  # synthetic: side length; imagefolder: resize every image to this square
    channels: int | None = None  # synthetic: channels; imagefolder: 1 (grayscale) or 3 (RGB)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str):
            raise ConfigError(f"DataConfig.name must be a dataset name, got {self.name!r}")
        check_choice("DataConfig.name", self.name, list_datasets())
        if self.root is not None:
            check_root(self.root)  # even for generated data: a --data-dir that is not there is a mistake
        _check_int("val_size", self.val_size, 0, "samples", optional=True)
        _check_int("split_seed", self.split_seed, 0, "seed")
        _check_int("subset", self.subset, 1, "samples", optional=True)
        _check_int("test_subset", self.test_subset, 1, "samples", optional=True)
        _check_int("crop_padding", self.crop_padding, 0, "image_size", optional=True)
        _check_int("batch_size", self.batch_size, 1, "batch")
        _check_int("eval_batch_size", self.eval_batch_size, 1, "batch")
        for field, low, bound in (("num_samples", 1, "samples"), ("num_classes", 2, "classes"),
                                  ("image_size", 4, "image_size"), ("channels", 1, "channels")):  # fmt: skip
            _check_int(field, getattr(self, field), low, bound, optional=True)
        accepted = dataset_info(self.name).options
        for field in _OPTION_FIELDS:
            if getattr(self, field) is not None and field not in accepted:
                users = [n for n in list_datasets() if field in dataset_info(n).options]
                raise ConfigError(
                    f"DataConfig.{field} does not apply to dataset {self.name!r}; it is used by: {', '.join(users)}"
                )

    def options(self) -> dict[str, Any]:
        """The dataset options set in this config (passed to `load_dataset`)."""
        return {f: getattr(self, f) for f in _OPTION_FIELDS if getattr(self, f) is not None}


@dataclasses.dataclass(frozen=True)
class DataBundle:
    """Everything a training run needs from the data.

    Attributes:
        train: shuffled, augmented, sharded training loader.
        val: validation loader (None when `val_size` is 0).
        test: test loader.
        num_classes: number of classes.
        in_channels: image channels.
        input_shape: `(C, H, W)`.
        name: dataset name.
        classes: class names (label `k` is `classes[k]`).
        mean: per-channel normalisation mean (in [0, 1] pixel units) used by every loader.
        std: per-channel normalisation std used by every loader.
    """

    train: TensorLoader
    val: TensorLoader | None
    test: TensorLoader
    num_classes: int
    in_channels: int
    input_shape: tuple[int, int, int]
    name: str
    classes: list[str]
    mean: tuple[float, ...]
    std: tuple[float, ...]


def default_val_size(n_train: int) -> int:
    """Validation images held out when `val_size` is not given: the protocol's 5000 for the
    60k-image sets (Fashion-MNIST, MNIST) and CIFAR's 50k, else 10% of a smaller training split."""
    return 5000 if n_train >= 50_000 else n_train // 10


def default_crop_padding(name: str, input_shape: tuple[int, int, int]) -> int:
    """The dataset's default crop padding: its declared value, else 2 for images up to 28 px and 4 above."""
    declared = dataset_info(name).crop_padding
    if declared is not None:
        return declared
    return 2 if min(input_shape[1:]) <= 28 else 4


def split_indices(n: int, val_size: int, subset: int | None, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Sorted `(train, val)` indices: `val_size` random images held out, then `subset` of the rest kept.

    Both come from one permutation seeded by `seed`, so validation does not change with `subset`
    and smaller subsets are contained in larger ones.

    Example:
        >>> train, val = split_indices(10, 3, 4, seed=0)
        >>> len(train), len(val), set(train.tolist()) & set(val.tolist())
        (4, 3, set())
    """
    if val_size >= n:
        raise ConfigError(f"val_size={val_size} leaves no training images; the training split has {n}")
    if subset is not None and subset > n - val_size:
        raise ConfigError(f"subset={subset} is larger than the {n - val_size} training images left after validation")
    perm = torch.randperm(n, generator=generator("val-split", seed))
    val = perm[:val_size]
    rest = perm[val_size:]
    if subset is not None:
        rest = rest[:subset]
    return rest.sort().values, val.sort().values


def build_loaders(
    cfg: DataConfig, *, seed: int = 0, rank: int = 0, world_size: int = 1, device: torch.device | str = "cpu"
) -> DataBundle:
    """Load the dataset of `cfg` and build its train/val/test loaders.

    Args:
        cfg: the data configuration.
        seed: run seed: training order and augmentation (the split uses `cfg.split_seed`).
        rank: this process's rank for the training-set shard.
        world_size: number of data-parallel ranks (the training loader shards; eval loaders do not).
        device: where batches are produced.

    Returns:
        A `DataBundle`.

    Raises:
        ConfigError, DataNotFoundError, CorruptFileError: see `load_dataset`; also `val_size`/`subset`
            too large for the training split.

    Example:
        >>> bundle = build_loaders(DataConfig(subset=10000))  # doctest: +SKIP
        >>> len(bundle.train), bundle.val.num_samples, bundle.test.num_samples  # doctest: +SKIP
        (79, 5000, 10000)
    """
    options = cfg.options()
    full = load_dataset(cfg.name, "train", root=cfg.root, download=cfg.download, **options)
    test = load_dataset(cfg.name, "test", root=cfg.root, download=cfg.download, **options)
    if test.input_shape != full.input_shape:
        raise ConfigError(f"{cfg.name}: test images are {test.input_shape} but training images are {full.input_shape}")
    mean, std = full.mean, full.std
    val_size = default_val_size(len(full)) if cfg.val_size is None else cfg.val_size
    train_idx, val_idx = split_indices(len(full), val_size, cfg.subset, cfg.split_seed)
    train_set = full.subset(train_idx, name=f"{cfg.name}/train")
    augment = None
    if cfg.augment:
        padding = cfg.crop_padding if cfg.crop_padding is not None else default_crop_padding(cfg.name, full.input_shape)
        augment = Augment(crop_padding=padding, flip=cfg.flip)
    train = TensorLoader(train_set, cfg.batch_size, shuffle=True, augment=augment, seed=seed, drop_last=cfg.drop_last,
                         rank=rank, world_size=world_size, device=device)  # fmt: skip
    val = None
    if val_size > 0:
        val = TensorLoader(full.subset(val_idx, name=f"{cfg.name}/val"), cfg.eval_batch_size, device=device)
    if cfg.test_subset is not None and cfg.test_subset < len(test):
        # a fixed subset (split_seed), sorted so it keeps the file's order
        pick = torch.randperm(len(test), generator=torch.Generator().manual_seed(cfg.split_seed))[: cfg.test_subset]
        test = test.subset(pick.sort().values, name=f"{cfg.name}/test")
    test_loader = TensorLoader(test.with_stats(mean, std), cfg.eval_batch_size, device=device)
    return DataBundle(
        train=train,
        val=val,
        test=test_loader,
        num_classes=full.num_classes,
        in_channels=full.input_shape[0],
        input_shape=full.input_shape,
        name=cfg.name,
        classes=list(full.classes),
        mean=tuple(mean),
        std=tuple(std),
    )
