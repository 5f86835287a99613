"""A fixed, unaugmented slice of the training set, as one normalised batch.

Data-driven criteria (taylor), MFP's meta-attribute and the coming DE search score on "the same
training images every time": this helper gives them, without touching any loader's state
(shuffle, epoch, augmentation). The images are normalised exactly as the loaders do it, come from
the whole training split (the training loader shards by index but holds the whole split, so every
rank gets the same slice), and never from the test set.

Example:
    >>> from prunus.data import DataConfig, build_loaders
    >>> bundle = build_loaders(DataConfig(name="synthetic", num_samples=64, val_size=16, batch_size=16))
    >>> x, y = training_slice(bundle, 8)
    >>> tuple(x.shape), bool((training_slice(bundle, 8)[0] == x).all())
    ((8, 1, 28, 28), True)
"""

from __future__ import annotations

from typing import Any

import torch

from prunus.data._seed import generator
from prunus.data.loader import TensorLoader
from prunus.data.tensors import ImageTensors
from prunus.errors import ConfigError

__all__ = ["training_slice", "training_slice_loader"]


def _training_set(source: Any) -> ImageTensors:
    if isinstance(source, ImageTensors):
        return source
    if isinstance(source, TensorLoader):
        return source.data
    train = getattr(source, "train", None)  # a DataBundle (or anything holding a training loader)
    if isinstance(train, TensorLoader):
        return train.data
    raise ConfigError(f"training_slice needs a DataBundle, TensorLoader or ImageTensors, got {type(source).__name__}")


def training_slice_loader(
    source: Any, n: int, batch_size: int, *, seed: int | None = None, device: torch.device | str | None = None
) -> TensorLoader:
    """An unshuffled, unaugmented loader over the `n` slice images (see `training_slice` for the arguments).

    For callers that evaluate the slice in batches (MFP's neighbours); iterating it twice gives
    the same batches. A new loader: the source's loaders are not touched.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ConfigError(f"training_slice n={n!r} must be an integer >= 1")
    data = _training_set(source)
    if len(data) == 0:
        raise ConfigError(f"training_slice: {data.name} holds no images")
    if device is None:
        loader = source if isinstance(source, TensorLoader) else getattr(source, "train", None)
        device = loader.device if isinstance(loader, TensorLoader) else "cpu"
    n = min(n, len(data))
    if seed is None:
        idx = torch.arange(n)
    else:
        idx = torch.randperm(len(data), generator=generator("training-slice", int(seed)))[:n].sort().values
    # a fresh unshuffled, unaugmented loader normalises exactly as training batches are normalised
    return TensorLoader(data.subset(idx, name=f"{data.name}[slice {n}]"), batch_size, device=device)


def training_slice(
    source: Any, n: int, *, seed: int | None = None, device: torch.device | str | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """`n` training images `(x, y)`, unaugmented and normalised like training batches.

    Args:
        source: A `DataBundle` (its training split), a `TensorLoader` or an `ImageTensors`.
        n: Images wanted; capped at the size of the set.
        seed: None = the first `n` images in dataset order; an integer = `n` images drawn
            without replacement by a generator seeded with it (the same for the same seed),
            kept in dataset order.
        device: Where the tensors go; default: the source loader's device, else CPU.

    Returns:
        `x` float32 `(n, C, H, W)` and `y` int64 `(n,)`; identical on every call with the same
        arguments. No loader is modified.

    Raises:
        ConfigError: `n` is not a positive integer, or `source` holds no training images.
    """
    loader = training_slice_loader(source, n, max(int(n), 1) if isinstance(n, int) else 1, seed=seed, device=device)
    return next(iter(loader))
