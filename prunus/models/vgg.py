"""VGG-16 with BatchNorm for small images (CIFAR-style, as used by most pruning papers).

Layout, with `w = width_mult`: 13 conv3x3 (padding 1, no bias) + BN + ReLU layers in five blocks of
64w, 128w, 256w, 512w, 512w channels (2, 2, 3, 3, 3 convs), each block closed by a 2x2 max pool with
`ceil_mode=True` so that 28x28 inputs reduce cleanly (28 -> 14 -> 7 -> 4 -> 2 -> 1; 32x32 inputs go
32 -> 16 -> 8 -> 4 -> 2 -> 1). An adaptive average pool to 1x1 (a no-op at those two sizes, so other
input sizes work too) and a single Linear(512w, num_classes) classifier follow: the small classifier
of the CIFAR variant, not ImageNet VGG's 4096-4096 head.

Module names: `features.conv{b}_{i}`, `features.bn{b}_{i}`, `features.relu{b}_{i}`,
`features.pool{b}` (block b = 1..5, layer i = 1..3), then `pool` and `fc`.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from prunus.models._layers import init_weights, scaled
from prunus.models._registry import register_model

__all__ = ["CifarVGG", "vgg16_bn"]

# (channels, number of conv layers) per block.
_VGG16_BLOCKS: tuple[tuple[int, int], ...] = ((64, 2), (128, 2), (256, 3), (512, 3), (512, 3))


class CifarVGG(nn.Module):
    """VGG with BN for small inputs; `blocks` gives (channels, conv layers) per pooling stage."""

    def __init__(
        self,
        blocks: tuple[tuple[int, int], ...] = _VGG16_BLOCKS,
        num_classes: int = 10,
        in_channels: int = 3,
        width_mult: float = 1.0,
    ) -> None:
        super().__init__()
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        channels = in_channels
        for b, (width, depth) in enumerate(blocks, start=1):
            out_channels = scaled(width, width_mult)
            for i in range(1, depth + 1):
                layers[f"conv{b}_{i}"] = nn.Conv2d(channels, out_channels, 3, padding=1, bias=False)
                layers[f"bn{b}_{i}"] = nn.BatchNorm2d(out_channels)
                layers[f"relu{b}_{i}"] = nn.ReLU()
                channels = out_channels
            layers[f"pool{b}"] = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.features = nn.Sequential(layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, num_classes)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.features(x)), 1))


@register_model(stem="features.conv1_1", classifier="fc")
def vgg16_bn(num_classes: int = 10, in_channels: int = 3, width_mult: float = 1.0) -> nn.Module:
    """VGG-16 with BN and a one-layer CIFAR classifier.

    14,724,042 params for 3 input channels and 10 classes.

    Example:
        >>> m = vgg16_bn(num_classes=10, in_channels=3)
        >>> sum(p.numel() for p in m.parameters())
        14724042
    """
    return CifarVGG(_VGG16_BLOCKS, num_classes, in_channels, width_mult)
