"""torchvision.transforms stand-in: the classes timm names at import time (they cannot be built)."""

from torchvision._missing import placeholder_class
from torchvision.transforms import functional as functional

_NAMES = (
    "CenterCrop", "ColorJitter", "Compose", "GaussianBlur", "Normalize", "PILToTensor", "RandomApply",
    "RandomCrop", "RandomGrayscale", "RandomHorizontalFlip", "RandomResizedCrop", "RandomVerticalFlip", "Resize",
    "ToTensor",
)  # fmt: skip
for _name in _NAMES:
    globals()[_name] = placeholder_class("transforms", _name)
