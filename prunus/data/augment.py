"""Batched augmentation of uint8 images: random crop with zero padding and random horizontal flip.

Crop and flip are one gather: each output pixel `(i, j)` of sample `b` reads the zero-padded input
at row `dy[b] + i` and column `dx[b] + j` (or `dx[b] + W - 1 - j` when flipped). The whole batch is
one index computation and one `torch.gather`, so there is no per-sample Python, and it runs on
whatever device the images are on. Random parameters come from a caller-supplied generator, so a
loader reproduces the exact same augmented batches for the same (seed, epoch).

Example:
    >>> import torch
    >>> aug = Augment(crop_padding=2, flip=True)
    >>> x = torch.arange(2 * 16, dtype=torch.uint8).view(2, 1, 4, 4)
    >>> params = aug.sample(2, torch.Generator().manual_seed(0))
    >>> aug.apply(x, params).shape
    torch.Size([2, 1, 4, 4])
    >>> unchanged = AugmentParams(torch.tensor([2, 2]), torch.tensor([2, 2]), torch.tensor([False, True]))
    >>> torch.equal(aug.apply(x, unchanged)[1], x[1].flip(-1))  # centred crop + flip = plain flip
    True
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F

from prunus.errors import ConfigError

__all__ = ["Augment", "AugmentParams"]


class AugmentParams(NamedTuple):
    """Per-sample parameters: crop offsets `dy`, `dx` in `[0, 2 * padding]` and a `flip` mask."""

    dy: torch.Tensor
    dx: torch.Tensor
    flip: torch.Tensor

    def to(self, device: torch.device | str) -> AugmentParams:
        """The same parameters on `device`."""
        return AugmentParams(self.dy.to(device), self.dx.to(device), self.flip.to(device))

    def select(self, item: slice | torch.Tensor) -> AugmentParams:
        """The parameters of the samples selected by `item` (a slice or an index tensor)."""
        return AugmentParams(self.dy[item], self.dx[item], self.flip[item])


@dataclass(frozen=True)
class Augment:
    """Random crop (zero padding `crop_padding` on each side, crop back to the input size) + random flip.

    Attributes:
        crop_padding: pixels of zero padding per side; 0 disables the crop.
        flip: flip each image horizontally with probability 1/2.
    """

    crop_padding: int = 2
    flip: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.crop_padding, bool) or not isinstance(self.crop_padding, int) or self.crop_padding < 0:
            raise ConfigError(f"crop_padding={self.crop_padding!r} must be an integer >= 0")

    @property
    def enabled(self) -> bool:
        """Whether this augmentation changes anything at all."""
        return self.crop_padding > 0 or self.flip

    def sample(self, n: int, generator: torch.Generator) -> AugmentParams:
        """Draw parameters for `n` samples from `generator` (on the CPU: same draws on every device)."""
        span = 2 * self.crop_padding + 1
        dy = torch.randint(0, span, (n,), generator=generator)
        dx = torch.randint(0, span, (n,), generator=generator)
        if self.flip:
            flip = torch.rand(n, generator=generator) < 0.5
        else:
            flip = torch.zeros(n, dtype=torch.bool)
        return AugmentParams(dy, dx, flip)

    def apply(self, images: torch.Tensor, params: AugmentParams) -> torch.Tensor:
        """Crop and flip a batch `(B, C, H, W)` (any dtype) with the given per-sample parameters."""
        b, c, h, w = images.shape
        p = self.crop_padding
        padded = F.pad(images, (p, p, p, p)) if p else images
        wp = w + 2 * p
        ar_h = torch.arange(h, device=images.device)
        ar_w = torch.arange(w, device=images.device)
        rows = params.dy[:, None] + ar_h  # (B, H) rows of the padded image
        cols = torch.where(params.flip[:, None], params.dx[:, None] + (w - 1 - ar_w), params.dx[:, None] + ar_w)
        flat_index = (rows[:, :, None] * wp + cols[:, None, :]).reshape(b, 1, h * w).expand(b, c, h * w)
        return padded.reshape(b, c, -1).gather(2, flat_index).view(b, c, h, w)

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Sample parameters from `generator` and apply them."""
        return self.apply(images, self.sample(len(images), generator).to(images.device))
