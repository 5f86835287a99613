"""LeNet-5 and LeNet-300-100, the classic small networks of the compression literature.

`lenet5` is the classic 61.7K-parameter LeNet-5 (LeCun et al., 1998) with today's usual choices:
ReLU and 2x2 max pooling instead of scaled tanh and trainable subsampling, and a padded first conv
so 28x28 MNIST-style images give the original 32x32 geometry. It is not the 431K-parameter Caffe
variant (20/50 filters, 500 hidden units) used by Deep Compression.

`lenet300_100` is the fully connected 784-300-100-10 network of LeCun et al. and Deep Compression.

Both take `input_size` (the side of the square input image, default 28) because their first
Linear layer's width depends on it; it is fixed at construction, so the forward pass has no
shape logic and exports cleanly.
"""

from __future__ import annotations

import torch
from torch import nn

from prunus.models._layers import check_int, scaled
from prunus.models._registry import register_model

__all__ = ["LeNet300100", "LeNet5", "lenet5", "lenet300_100"]


class LeNet5(nn.Module):
    """conv 6@5x5 (pad 2) -> pool -> conv 16@5x5 -> pool -> fc 120 -> fc 84 -> fc classes, ReLU between."""

    def __init__(self, num_classes: int = 10, in_channels: int = 3, width_mult: float = 1.0, input_size: int = 28):
        super().__init__()
        # conv1 keeps the size (pad 2), each pool halves it (floor), conv2 (5x5, no pad) removes 4.
        check_int("input_size", input_size, low=12)
        side = (input_size // 2 - 4) // 2
        c1, c2, f1, f2 = (scaled(c, width_mult) for c in (6, 16, 120, 84))
        self.conv1 = nn.Conv2d(in_channels, c1, 5, padding=2)
        self.relu1 = nn.ReLU()
        self.pool1 = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(c1, c2, 5)
        self.relu2 = nn.ReLU()
        self.pool2 = nn.MaxPool2d(2)
        self.fc1 = nn.Linear(c2 * side * side, f1)
        self.relu3 = nn.ReLU()
        self.fc2 = nn.Linear(f1, f2)
        self.relu4 = nn.ReLU()
        self.fc3 = nn.Linear(f2, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool1(self.relu1(self.conv1(x)))
        x = self.pool2(self.relu2(self.conv2(x)))
        x = self.relu3(self.fc1(torch.flatten(x, 1)))
        return self.fc3(self.relu4(self.fc2(x)))


class LeNet300100(nn.Module):
    """Flatten -> fc 300 -> ReLU -> fc 100 -> ReLU -> fc classes."""

    def __init__(self, num_classes: int = 10, in_channels: int = 3, width_mult: float = 1.0, input_size: int = 28):
        super().__init__()
        check_int("input_size", input_size, low=1)
        h1, h2 = scaled(300, width_mult), scaled(100, width_mult)
        self.fc1 = nn.Linear(in_channels * input_size * input_size, h1)
        self.relu1 = nn.ReLU()
        self.fc2 = nn.Linear(h1, h2)
        self.relu2 = nn.ReLU()
        self.fc3 = nn.Linear(h2, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu1(self.fc1(torch.flatten(x, 1)))
        return self.fc3(self.relu2(self.fc2(x)))


@register_model(stem="conv1", classifier="fc3")
def lenet5(num_classes: int = 10, in_channels: int = 3, width_mult: float = 1.0, input_size: int = 28) -> nn.Module:
    """LeNet-5, the classic 61.7K-parameter version.

    Exactly 61,706 params for 1x28x28 input and 10 classes: conv1 156, conv2 2,416,
    fc1 48,120 (400 -> 120), fc2 10,164, fc3 850. A 32x32 input needs `input_size=32` (fc1 then
    takes 16*6*6 = 576 features).

    Example:
        >>> m = lenet5(num_classes=10, in_channels=1)
        >>> sum(p.numel() for p in m.parameters())
        61706
    """
    return LeNet5(num_classes, in_channels, width_mult, input_size)


@register_model(stem="fc1", classifier="fc3")
def lenet300_100(
    num_classes: int = 10, in_channels: int = 3, width_mult: float = 1.0, input_size: int = 28
) -> nn.Module:
    """LeNet-300-100, the fully connected 300-100 network.

    Exactly 266,610 params for 1x28x28 input and 10 classes (235,500 + 30,100 + 1,010); fc1
    takes `in_channels * input_size**2` features (784 for 1x28x28).

    Example:
        >>> m = lenet300_100(num_classes=10, in_channels=1, input_size=28)
        >>> sum(p.numel() for p in m.parameters())
        266610
    """
    return LeNet300100(num_classes, in_channels, width_mult, input_size)
