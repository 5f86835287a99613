"""MobileNetV2 (Sandler et al., 2018) adapted to 28x28 / 32x32 inputs.

Differences from the ImageNet network, all for small images: the stem conv has stride 1 (not 2)
and the second stage (24 channels) keeps stride 1, so the network downsamples only 3 times
(32 -> 16 -> 8 -> 4, or 28 -> 14 -> 7 -> 4) and ends with 4x4 feature maps; there is no dropout
before the classifier. Everything else follows the paper: inverted residual blocks (1x1 expand
conv with expansion 6, except 1 in the first block where the expand conv is omitted; 3x3
depthwise conv; linear 1x1 projection), ReLU6, residual adds when stride is 1 and the channel
count is unchanged, a 1x1 conv to 1280 channels, global average pooling and a Linear classifier.

Width: every channel count is `make_divisible(c * width_mult, 8)` (so never below 8); the last conv
keeps 1280 channels for `width_mult <= 1` and grows above 1, as in the paper.

Module names: `conv1`/`bn1`/`relu1` (stem), `layers.{k}` (InvertedResidual blocks with
`conv1`/`bn1` expand when present, `conv2`/`bn2` depthwise, `conv3`/`bn3` projection),
`conv2`/`bn2`/`relu2` (last 1x1 conv), `pool`, `fc`.
"""

from __future__ import annotations

import torch
from torch import nn

from prunus.models._layers import init_weights, make_divisible
from prunus.models._registry import register_model

__all__ = ["CifarMobileNetV2", "InvertedResidual", "mobilenetv2"]

# (expansion t, output channels c, repeats n, stride of the first repeat s), as in Table 2 of the
# paper, with the stride of the 24-channel stage changed from 2 to 1 for small images.
_SETTINGS: tuple[tuple[int, int, int, int], ...] = (
    (1, 16, 1, 1),
    (6, 24, 2, 1),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)


class InvertedResidual(nn.Module):
    """1x1 expand (omitted when `expansion == 1`) -> 3x3 depthwise -> 1x1 linear projection (+ input)."""

    # Constants for TorchScript, which then skips compiling the branch that uses a missing conv1.
    __constants__ = ["expand", "use_residual"]

    def __init__(self, in_channels: int, out_channels: int, stride: int, expansion: int) -> None:
        super().__init__()
        hidden = in_channels * expansion
        self.use_residual = stride == 1 and in_channels == out_channels
        self.expand = expansion != 1
        if self.expand:
            self.conv1 = nn.Conv2d(in_channels, hidden, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(hidden)
            self.relu1 = nn.ReLU6()
        self.conv2 = nn.Conv2d(hidden, hidden, 3, stride=stride, padding=1, groups=hidden, bias=False)
        self.bn2 = nn.BatchNorm2d(hidden)
        self.relu2 = nn.ReLU6()
        # No activation after the projection: the paper's "linear bottleneck".
        self.conv3 = nn.Conv2d(hidden, out_channels, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu1(self.bn1(self.conv1(x))) if self.expand else x
        out = self.relu2(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return out + x if self.use_residual else out


class CifarMobileNetV2(nn.Module):
    """MobileNetV2 for small images (see the module docstring for the changes)."""

    def __init__(self, num_classes: int = 10, in_channels: int = 3, width_mult: float = 1.0) -> None:
        super().__init__()
        channels = make_divisible(32 * width_mult)
        last_channels = make_divisible(1280 * max(1.0, width_mult))
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.relu1 = nn.ReLU6()
        blocks: list[nn.Module] = []
        for expansion, c, repeats, stride in _SETTINGS:
            out_channels = make_divisible(c * width_mult)
            for i in range(repeats):
                blocks.append(InvertedResidual(channels, out_channels, stride if i == 0 else 1, expansion))
                channels = out_channels
        self.layers = nn.Sequential(*blocks)
        self.conv2 = nn.Conv2d(channels, last_channels, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(last_channels)
        self.relu2 = nn.ReLU6()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(last_channels, num_classes)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu1(self.bn1(self.conv1(x)))
        x = self.layers(x)
        x = self.relu2(self.bn2(self.conv2(x)))
        return self.fc(torch.flatten(self.pool(x), 1))


@register_model(stem="conv1", classifier="fc")
def mobilenetv2(num_classes: int = 10, in_channels: int = 3, width_mult: float = 1.0) -> nn.Module:
    """MobileNetV2 adapted to 28x28 / 32x32 inputs.

    2,236,682 params for 3 input channels and 10 classes.

    Example:
        >>> m = mobilenetv2(num_classes=10, in_channels=3)
        >>> sum(p.numel() for p in m.parameters())
        2236682
    """
    return CifarMobileNetV2(num_classes, in_channels, width_mult)
