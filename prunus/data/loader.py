"""`TensorLoader`: batches of an in-memory `ImageTensors`, shuffled, augmented and normalised as tensor ops.

Order: the sample order of an epoch is a pure function of `(seed, epoch)` — a permutation drawn
from a generator seeded with both (no hidden state), so a run resumed at epoch `e` sees exactly the
batches it would have seen. With `world_size > 1` every rank takes a strided share of that ONE
permutation, padded by wrapping around so all ranks get the same number of samples and batches
(the contract of `torch.utils.data.DistributedSampler`). Augmentation draws come from a second
generator seeded with `(seed, epoch, rank)`, drawn once per epoch for the whole order, so they do
not depend on the batch size. Call `set_epoch(e)` before iterating each epoch; without it every
epoch repeats epoch 0, as with `DistributedSampler`.

Example:
    >>> import torch
    >>> from prunus.data import ImageTensors, TensorLoader, Augment
    >>> data = ImageTensors(torch.randint(0, 256, (10, 1, 8, 8), dtype=torch.uint8), torch.arange(10) % 2, ["a", "b"])
    >>> loader = TensorLoader(data, 4, shuffle=True, augment=Augment(crop_padding=1), seed=3)
    >>> loader.set_epoch(2)
    >>> [tuple(x.shape) for x, _ in loader], len(loader)
    ([(4, 1, 8, 8), (4, 1, 8, 8), (2, 1, 8, 8)], 3)
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch

from prunus.data._seed import generator
from prunus.data.augment import Augment
from prunus.data.tensors import ImageTensors
from prunus.errors import ConfigError

__all__ = ["TensorLoader"]


class TensorLoader:
    """Iterate `(x, y)` batches: `x` float32 normalised `(B, C, H, W)`, `y` int64 `(B,)`, both on `device`.

    Args:
        data: the dataset (kept as uint8; moved to `device` once).
        batch_size: samples per batch.
        shuffle: draw a new permutation every epoch (a pure function of `seed` and the epoch).
        augment: batched random crop/flip, or None.
        seed: base seed for order and augmentation.
        drop_last: drop the last incomplete batch of each epoch.
        rank: this process's rank (0-based) when sharding for data-parallel training.
        world_size: number of ranks; each gets `ceil(N / world_size)` samples of the same permutation.
        device: where batches are produced (augmentation and normalisation run there).

    Example:
        >>> import torch
        >>> from prunus.data import ImageTensors
        >>> data = ImageTensors(torch.zeros(5, 1, 2, 2, dtype=torch.uint8), torch.zeros(5, dtype=torch.long), ["a"])
        >>> shard = TensorLoader(data, 2, shuffle=True, rank=1, world_size=2)
        >>> shard.num_samples, len(shard)
        (3, 2)
    """

    def __init__(
        self,
        data: ImageTensors,
        batch_size: int,
        *,
        shuffle: bool = False,
        augment: Augment | None = None,
        seed: int = 0,
        drop_last: bool = False,
        rank: int = 0,
        world_size: int = 1,
        device: torch.device | str = "cpu",
    ) -> None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ConfigError(f"batch_size={batch_size!r} must be an integer >= 1")
        if world_size < 1 or not 0 <= rank < world_size:
            raise ConfigError(f"rank={rank!r} must lie in [0, world_size={world_size!r}) and world_size >= 1")
        self.data = data
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.augment = augment if augment is not None and augment.enabled else None
        self.seed = int(seed)
        self.drop_last = drop_last
        self.rank = rank
        self.world_size = world_size
        self.device = torch.device(device)
        self.epoch = 0
        self._images = data.images.to(self.device)
        self._labels = data.labels.to(self.device)
        # (x / 255 - mean) / std == x * scale + shift: one fused multiply-add per pixel.
        std = torch.tensor(data.std, dtype=torch.float64)
        mean = torch.tensor(data.mean, dtype=torch.float64)
        c = len(std)
        self._scale = (1.0 / (255.0 * std)).float().view(1, c, 1, 1).to(self.device)
        self._shift = (-mean / std).float().view(1, c, 1, 1).to(self.device)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose order and augmentation the next iteration produces."""
        self.epoch = int(epoch)

    @property
    def num_samples(self) -> int:
        """Samples this rank yields per epoch (before `drop_last`): `ceil(N / world_size)`."""
        return math.ceil(len(self.data) / self.world_size)

    def __len__(self) -> int:
        """Batches per epoch for this rank."""
        if self.drop_last:
            return self.num_samples // self.batch_size
        return math.ceil(self.num_samples / self.batch_size)

    def indices(self, epoch: int | None = None) -> torch.Tensor:
        """This rank's sample indices, in order, for `epoch` (default: the current epoch).

        Example:
            >>> import torch
            >>> from prunus.data import ImageTensors
            >>> data = ImageTensors(torch.zeros(5, 1, 1, 1, dtype=torch.uint8), torch.zeros(5, dtype=torch.long), ["a"])
            >>> TensorLoader(data, 2, rank=0, world_size=2).indices().tolist()  # padded: sample 0 appears twice
            [0, 2, 4]
        """
        epoch = self.epoch if epoch is None else int(epoch)
        n = len(self.data)
        if self.shuffle:
            order = torch.randperm(n, generator=generator("order", self.seed, epoch))
        else:
            order = torch.arange(n)
        if self.world_size > 1:
            total = self.num_samples * self.world_size
            if total > n and n > 0:  # wrap around so every rank gets the same count
                order = order.repeat(math.ceil(total / n))[:total]
            order = order[self.rank :: self.world_size]
        return order

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = self.indices()
        if self.drop_last:
            order = order[: len(self) * self.batch_size]
        order = order.to(self.device)
        params = None
        if self.augment is not None:
            gen = generator("augment", self.seed, self.epoch, self.rank)
            params = self.augment.sample(len(order), gen).to(self.device)
        for start in range(0, len(order), self.batch_size):
            idx = order[start : start + self.batch_size]
            x = self._images[idx]
            if params is not None:
                x = self.augment.apply(x, params.select(slice(start, start + self.batch_size)))  # type: ignore[union-attr]
            yield torch.addcmul(self._shift, x.float(), self._scale), self._labels[idx]

    def __repr__(self) -> str:
        return (
            f"TensorLoader({self.data.name!r}, batch_size={self.batch_size}, batches={len(self)}, "
            f"shuffle={self.shuffle}, augment={self.augment}, rank={self.rank}/{self.world_size})"
        )
