"""torchvision.datasets stand-in: the dataset classes timm imports (they cannot be built)."""

from torchvision._missing import placeholder_class

for _name in ("CIFAR10", "CIFAR100", "FashionMNIST", "ImageFolder", "KMNIST", "MNIST"):
    globals()[_name] = placeholder_class("datasets", _name)
