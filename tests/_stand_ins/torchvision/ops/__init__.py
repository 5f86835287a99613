"""torchvision.ops stand-in: only `misc.FrozenBatchNorm2d`."""

from torchvision.ops import misc as misc
