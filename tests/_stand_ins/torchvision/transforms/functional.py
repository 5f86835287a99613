"""torchvision.transforms.functional stand-in: `InterpolationMode` (real values) and functions that raise."""

from enum import Enum

from torchvision._missing import placeholder_function


class InterpolationMode(Enum):
    NEAREST = "nearest"
    NEAREST_EXACT = "nearest-exact"
    BILINEAR = "bilinear"
    BICUBIC = "bicubic"
    BOX = "box"
    HAMMING = "hamming"
    LANCZOS = "lanczos"


_NAMES = ("crop", "get_dimensions", "get_image_size", "pad", "pil_to_tensor", "resize", "resized_crop", "to_tensor")
for _name in _NAMES:
    globals()[_name] = placeholder_function("transforms.functional", _name)
