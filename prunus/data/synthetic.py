"""A deterministic, learnable synthetic image set for tests and demos (no files needed).

Each class has a smooth random template (a coarse random grid, bilinearly upsampled, mirror-symmetric
so that the default horizontal-flip augmentation keeps the class); an image is
its class template, shifted by up to 2 pixels, plus Gaussian pixel noise, quantised to uint8.
Templates depend only on `seed`, so the train and test splits share them (test images are new
draws of shift and noise). A small CNN separates the classes well above chance within a few
epochs; the noise keeps it from being trivial.

Example:
    >>> data = make_synthetic(100, num_classes=4, image_size=12, channels=3, seed=1)
    >>> data.images.shape, data.num_classes, data.labels.bincount().tolist()
    (torch.Size([100, 3, 12, 12]), 4, [25, 25, 25, 25])
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F

from prunus.data._seed import generator
from prunus.data.catalog import DatasetInfo, register_dataset
from prunus.data.tensors import ImageTensors
from prunus.errors import ConfigError

__all__ = ["make_synthetic"]

_CHUNK = 8192  # images generated per step: bounds the float32 working memory
_MAX_SHIFT = 2


def _templates(num_classes: int, channels: int, image_size: int, seed: int) -> torch.Tensor:
    """`(K, C, S, S)` float templates in [0.1, 0.9], one per class, depending only on `seed`."""
    grid = max(2, min(4, image_size))
    coarse = torch.rand(num_classes, channels, grid, grid, generator=generator("synthetic-templates", seed))
    # Mirror-symmetric templates: a horizontal flip (the default augmentation) keeps the class, as for photos.
    coarse = torch.maximum(coarse, coarse.flip(-1))
    smooth = F.interpolate(coarse, size=(image_size, image_size), mode="bilinear", align_corners=False)
    lo = smooth.amin(dim=(1, 2, 3), keepdim=True)
    hi = smooth.amax(dim=(1, 2, 3), keepdim=True)
    return 0.1 + 0.8 * (smooth - lo) / (hi - lo).clamp_min(1e-6)  # full contrast for every class


def make_synthetic(
    num_samples: int,
    *,
    num_classes: int = 10,
    image_size: int = 28,
    channels: int = 1,
    seed: int = 0,
    split: str = "train",
    noise: float = 0.25,
) -> ImageTensors:
    """Generate `num_samples` balanced, labelled images (same arguments -> identical tensors).

    Args:
        num_samples: number of images.
        num_classes: number of classes (labels are balanced to within one image).
        image_size: height and width.
        channels: image channels.
        seed: selects the class templates (shared by all splits) and the per-split draws.
        split: name of the draw; "train" and "test" give different images of the same classes.
        noise: std of the Gaussian pixel noise, in [0, 1] intensity units.

    Returns:
        `ImageTensors` named ``synthetic/<split>`` with its own mean/std.
    """
    for field, value, low in (
        ("num_samples", num_samples, 1),
        ("num_classes", num_classes, 2),
        ("image_size", image_size, 4),
        ("channels", channels, 1),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ConfigError(f"synthetic {field}={value!r} must be an integer >= {low}")
    templates = _templates(num_classes, channels, image_size, seed)
    g = generator("synthetic-samples", seed, split)
    labels = (torch.arange(num_samples) % num_classes)[torch.randperm(num_samples, generator=g)]
    images = torch.empty(num_samples, channels, image_size, image_size, dtype=torch.uint8)
    for start in range(0, num_samples, _CHUNK):
        lab = labels[start : start + _CHUNK]
        x = templates[lab]
        # A per-sample circular shift as two gathers (rows, then columns): no per-image Python loop.
        n = len(lab)
        dy = torch.randint(-_MAX_SHIFT, _MAX_SHIFT + 1, (n,), generator=g)
        dx = torch.randint(-_MAX_SHIFT, _MAX_SHIFT + 1, (n,), generator=g)
        ar = torch.arange(image_size)
        rows = (ar[None, :] - dy[:, None]) % image_size  # (n, S)
        cols = (ar[None, :] - dx[:, None]) % image_size
        x = x.gather(2, rows[:, None, :, None].expand(n, channels, image_size, image_size))
        x = x.gather(3, cols[:, None, None, :].expand(n, channels, image_size, image_size))
        x = x + noise * torch.randn(x.shape, generator=g)
        images[start : start + n] = (x.clamp(0, 1) * 255).round().to(torch.uint8)
    classes = [f"class_{k}" for k in range(num_classes)]
    return ImageTensors(images, labels.to(torch.int64), classes, name=f"synthetic/{split}")


@register_dataset(
    "synthetic",
    DatasetInfo(
        summary="generated class templates + noise (deterministic, for tests and demos; no files)",
        input_shape=None,
        num_classes=None,
        sizes=None,
        crop_padding=None,
        hint="",
        options=("num_samples", "num_classes", "image_size", "channels", "seed"),
    ),
)
def synthetic(
    split: str,
    root: str | os.PathLike[str] | None = None,
    download: bool = True,
    num_samples: int = 2000,
    num_classes: int = 10,
    image_size: int = 28,
    channels: int = 1,
    seed: int = 0,
) -> ImageTensors:
    """The synthetic `split`: `num_samples` training images, or `num_samples // 4` test images."""
    del root, download  # generated, no files
    n = num_samples if split == "train" else max(1, num_samples // 4)
    return make_synthetic(n, num_classes=num_classes, image_size=image_size, channels=channels, seed=seed, split=split)
