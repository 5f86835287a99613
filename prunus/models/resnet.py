"""CIFAR-style ResNets (He et al., 2016, section 4.2): resnet20, resnet32, resnet56, resnet110.

Layout, with `w = width_mult`: a 3x3 stem conv (16w channels) + BN + ReLU, three stages of
`n = (depth - 2) / 6` BasicBlocks with 16w, 32w and 64w channels (the first block of stages 2 and 3
halves the resolution), global average pooling and a Linear classifier. Module names are stable:
`conv1`, `bn1`, `layer1.0.conv1`, ..., `layer3.{n-1}.bn2`, `fc`; projection shortcuts are
`layerX.0.shortcut.0` (conv) and `layerX.0.shortcut.1` (BN).

Shortcuts where the shape changes:
- `"B"` (default): 1x1 conv (stride 2) + BN projection. Every channel of the residual stream is
  produced by a conv, so the stream can be pruned as one coupled group.
- `"A"`: the parameter-free option of the paper: subsample by 2 and zero-pad the new channels
  (the 0.27M-parameter ResNet-20 of the literature). Traced by Torch-Pruning as an element-wise
  op, so pruning across these shortcuts must treat the stream channels as unprunable.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from prunus.config import check_choice
from prunus.models._layers import init_weights, scaled
from prunus.models._registry import register_model

__all__ = ["BasicBlock", "CifarResNet", "PadShortcut", "resnet20", "resnet32", "resnet56", "resnet110"]


class PadShortcut(nn.Module):
    """Option-A shortcut: spatial subsampling plus zero channels on both sides (no parameters)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        self.pad_front = (out_channels - in_channels) // 2
        self.pad_back = out_channels - in_channels - self.pad_front

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # A strided slice and F.pad are plain tensor ops: traceable by autograd (Torch-Pruning),
        # TorchScript and ONNX (Slice + Pad), with no shape logic in Python.
        x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, self.pad_front, self.pad_back))


class BasicBlock(nn.Module):
    """Two 3x3 conv+BN layers with a residual add: `relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))`."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, shortcut: str) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.relu2 = nn.ReLU()
        self.shortcut: nn.Module
        if stride == 1 and in_channels == out_channels:
            self.shortcut = nn.Identity()
        elif shortcut == "A":
            self.shortcut = PadShortcut(in_channels, out_channels, stride)
        else:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu2(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """ResNet for 28x28 / 32x32 inputs with `blocks_per_stage` BasicBlocks in each of 3 stages."""

    def __init__(
        self,
        blocks_per_stage: int,
        num_classes: int = 10,
        in_channels: int = 3,
        width_mult: float = 1.0,
        shortcut: str = "B",
    ) -> None:
        super().__init__()
        check_choice("shortcut", shortcut, ("A", "B"))
        widths = [scaled(c, width_mult) for c in (16, 32, 64)]
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU()
        self.layer1 = self._stage(widths[0], widths[0], blocks_per_stage, 1, shortcut)
        self.layer2 = self._stage(widths[0], widths[1], blocks_per_stage, 2, shortcut)
        self.layer3 = self._stage(widths[1], widths[2], blocks_per_stage, 2, shortcut)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(widths[2], num_classes)
        init_weights(self)

    @staticmethod
    def _stage(in_channels: int, out_channels: int, blocks: int, stride: int, shortcut: str) -> nn.Sequential:
        layers = [BasicBlock(in_channels, out_channels, stride, shortcut)]
        layers += [BasicBlock(out_channels, out_channels, 1, shortcut) for _ in range(blocks - 1)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(self.pool(x), 1))


@register_model(stem="conv1", classifier="fc")
def resnet20(num_classes: int = 10, in_channels: int = 3, width_mult: float = 1.0, shortcut: str = "B") -> nn.Module:
    """ResNet-20 for CIFAR: 3 BasicBlocks per stage.

    272,474 params for 3 input channels and 10 classes with option-B shortcuts (269,722 with
    option A, the 0.27M of the paper); 272,186 for 1 input channel.

    Example:
        >>> m = resnet20(num_classes=10, in_channels=1)
        >>> sum(p.numel() for p in m.parameters())
        272186
    """
    return CifarResNet(3, num_classes, in_channels, width_mult, shortcut)


@register_model(stem="conv1", classifier="fc")
def resnet32(num_classes: int = 10, in_channels: int = 3, width_mult: float = 1.0, shortcut: str = "B") -> nn.Module:
    """ResNet-32 for CIFAR: 5 BasicBlocks per stage."""
    return CifarResNet(5, num_classes, in_channels, width_mult, shortcut)


@register_model(stem="conv1", classifier="fc")
def resnet56(num_classes: int = 10, in_channels: int = 3, width_mult: float = 1.0, shortcut: str = "B") -> nn.Module:
    """ResNet-56 for CIFAR: 9 BasicBlocks per stage."""
    return CifarResNet(9, num_classes, in_channels, width_mult, shortcut)


@register_model(stem="conv1", classifier="fc")
def resnet110(num_classes: int = 10, in_channels: int = 3, width_mult: float = 1.0, shortcut: str = "B") -> nn.Module:
    """ResNet-110 for CIFAR: 18 BasicBlocks per stage."""
    return CifarResNet(18, num_classes, in_channels, width_mult, shortcut)
