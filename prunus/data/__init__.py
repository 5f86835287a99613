"""Datasets as uint8 tensors in memory, file discovery/download, and a fast batched `TensorLoader`.

Modules, one job each:

- `tensors`: `ImageTensors`, the in-memory dataset container, and `channel_stats`.
- `idx`: IDX (MNIST format) reader/writer. `cifar`: safe reader of the CIFAR python archives.
- `mnist`, `cifar`, `imagefolder`, `synthetic`: the registered datasets.
- `locate`: where files are searched, checksummed downloads, the "how to get it" error.
- `catalog`: the dataset registry, `load_dataset`, `list_datasets`.
- `augment`: batched random crop + flip. `loader`: `TensorLoader`.
- `bundle`: `DataConfig`, `build_loaders` -> `DataBundle`.
- `slices`: `training_slice` (and its loader form), a fixed unaugmented training batch that leaves every loader alone.

Example:
    >>> from prunus.data import DataConfig, build_loaders
    >>> bundle = build_loaders(DataConfig(name="synthetic", num_samples=64, val_size=16, batch_size=16))
    >>> x, y = next(iter(bundle.train))
    >>> x.shape, x.dtype, y.dtype, bundle.num_classes
    (torch.Size([16, 1, 28, 28]), torch.float32, torch.int64, 10)
"""

# Dataset modules register themselves on import; they come first so the registry is full
# before anything (e.g. DataConfig validation) asks it for names.
from prunus.data import cifar as cifar
from prunus.data import imagefolder as imagefolder
from prunus.data import mnist as mnist
from prunus.data import synthetic as synthetic
from prunus.data.augment import Augment, AugmentParams
from prunus.data.bundle import (
    DEFAULT_EVAL_BATCH_SIZE,
    EXECUTION_ONLY_FIELDS,
    DataBundle,
    DataConfig,
    build_loaders,
    split_indices,
)
from prunus.data.catalog import (
    DatasetInfo,
    dataset_info,
    find_dataset,
    list_datasets,
    load_dataset,
    register_dataset,
)
from prunus.data.idx import read_idx, write_idx
from prunus.data.loader import TensorLoader
from prunus.data.slices import training_slice, training_slice_loader
from prunus.data.synthetic import make_synthetic
from prunus.data.tensors import ImageTensors, channel_stats

__all__ = [
    "DEFAULT_EVAL_BATCH_SIZE",
    "EXECUTION_ONLY_FIELDS",
    "Augment",
    "AugmentParams",
    "DataBundle",
    "DataConfig",
    "DatasetInfo",
    "ImageTensors",
    "TensorLoader",
    "build_loaders",
    "channel_stats",
    "dataset_info",
    "find_dataset",
    "list_datasets",
    "load_dataset",
    "make_synthetic",
    "read_idx",
    "register_dataset",
    "split_indices",
    "training_slice",
    "training_slice_loader",
    "write_idx",
]
