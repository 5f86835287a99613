"""`ImageTensors`: a whole image dataset held in memory as uint8 tensors.

Small vision sets (Fashion-MNIST: 47 MB, CIFAR-10: 150 MB as uint8) fit in memory, so every
dataset is loaded once into one `(N, C, H, W)` uint8 tensor plus an int64 label vector. The
loader indexes, augments and normalises whole batches of it; nothing is decoded per sample.

Example:
    >>> import torch
    >>> data = ImageTensors(torch.zeros(4, 1, 8, 8, dtype=torch.uint8), torch.tensor([0, 1, 0, 1]),
    ...                     classes=["a", "b"], name="demo")
    >>> len(data), data.input_shape, data.num_classes
    (4, (1, 8, 8), 2)
    >>> data.subset(torch.tensor([1, 3])).labels.tolist()
    [1, 1]
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import torch

__all__ = ["ImageTensors", "channel_stats"]

# Statistics are exact sums over a histogram per chunk; a chunk bounds the int64 copy bincount makes.
_STATS_CHUNK = 4096


def channel_stats(images: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of uint8 images, in [0, 1] units (pixel / 255).

    Computed from an exact 256-bin histogram per channel, so the result does not depend on
    float summation order and needs no float copy of the whole set.

    Args:
        images: uint8 tensor `(N, C, H, W)`.

    Returns:
        `(mean, std)`, one float per channel each (population std).

    Example:
        >>> import torch
        >>> m, s = channel_stats(torch.tensor([0, 255], dtype=torch.uint8).view(2, 1, 1, 1))
        >>> round(m[0], 3), round(s[0], 3)
        (0.5, 0.5)
    """
    if images.dtype != torch.uint8 or images.dim() != 4:
        raise ValueError(f"channel_stats expects uint8 (N, C, H, W) images, got {images.dtype} {tuple(images.shape)}")
    n, c = images.shape[:2]
    if n == 0:
        return tuple([0.0] * c), tuple([1.0] * c)
    hist = torch.zeros(c, 256, dtype=torch.float64)
    for start in range(0, n, _STATS_CHUNK):
        chunk = images[start : start + _STATS_CHUNK].cpu()
        for ch in range(c):
            hist[ch] += torch.bincount(chunk[:, ch].reshape(-1).long(), minlength=256).double()
    values = torch.arange(256, dtype=torch.float64) / 255.0
    total = hist.sum(dim=1)
    mean = (hist * values).sum(dim=1) / total
    var = (hist * (values - mean[:, None]) ** 2).sum(dim=1) / total
    std = var.sqrt().clamp_min(1e-6)  # a constant channel must not divide by zero
    return tuple(mean.tolist()), tuple(std.tolist())


@dataclasses.dataclass(frozen=True, eq=False)
class ImageTensors:
    """An in-memory image dataset: uint8 images, int64 labels, class names, normalisation stats.

    Attributes:
        images: uint8 `(N, C, H, W)`.
        labels: int64 `(N,)`, values in `[0, len(classes))`.
        classes: class names; `classes[k]` is the name of label `k`.
        mean: per-channel mean in [0, 1] units used to normalise (default: computed from `images`).
        std: per-channel std in [0, 1] units used to normalise (default: computed from `images`).
        name: dataset name plus split, for messages (e.g. ``"fashion-mnist/train"``).
    """

    images: torch.Tensor
    labels: torch.Tensor
    classes: Sequence[str]
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    name: str = "dataset"

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.dim() != 4:
            raise ValueError(
                f"{self.name}: images must be uint8 (N, C, H, W), got {self.images.dtype} {tuple(self.images.shape)}"
            )
        if self.labels.dtype != torch.int64 or self.labels.dim() != 1 or len(self.labels) != len(self.images):
            raise ValueError(
                f"{self.name}: labels must be int64 (N,) with N={len(self.images)}, got "
                f"{self.labels.dtype} {tuple(self.labels.shape)}"
            )
        object.__setattr__(self, "classes", [str(c) for c in self.classes])
        if len(self.labels) and (int(self.labels.min()) < 0 or int(self.labels.max()) >= len(self.classes)):
            raise ValueError(
                f"{self.name}: labels must lie in [0, {len(self.classes)}), got "
                f"[{int(self.labels.min())}, {int(self.labels.max())}]"
            )
        if self.mean is None or self.std is None:
            mean, std = channel_stats(self.images)
            object.__setattr__(self, "mean", tuple(self.mean) if self.mean is not None else mean)
            object.__setattr__(self, "std", tuple(self.std) if self.std is not None else std)
        c = self.images.shape[1]
        if len(self.mean) != c or len(self.std) != c:  # type: ignore[arg-type]
            raise ValueError(f"{self.name}: mean/std need {c} values (one per channel)")
        object.__setattr__(self, "mean", tuple(float(v) for v in self.mean))  # type: ignore[union-attr]
        object.__setattr__(self, "std", tuple(float(v) for v in self.std))  # type: ignore[union-attr]

    def __len__(self) -> int:
        return len(self.labels)

    def __repr__(self) -> str:
        return f"ImageTensors(name={self.name!r}, n={len(self)}, shape={self.input_shape}, classes={self.num_classes})"

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """`(C, H, W)` of one image."""
        c, h, w = self.images.shape[1:]
        return int(c), int(h), int(w)

    @property
    def num_classes(self) -> int:
        """Number of classes (length of `classes`, not the number present in `labels`)."""
        return len(self.classes)

    def subset(self, indices: torch.Tensor | Sequence[int], name: str | None = None) -> ImageTensors:
        """A new set with the samples at `indices` (same classes and stats)."""
        idx = torch.as_tensor(indices, dtype=torch.long)
        return dataclasses.replace(self, images=self.images[idx], labels=self.labels[idx], name=name or self.name)

    def with_stats(self, mean: Sequence[float], std: Sequence[float]) -> ImageTensors:
        """A copy (sharing the tensors) that normalises with the given mean/std."""
        return dataclasses.replace(self, mean=tuple(mean), std=tuple(std))
