"""prunus: manage the filter redundancy of convolutional networks over their whole life.

Find unimportant filters, remove them with no loss, reactivate them instead of removing them,
compress what survives, and ship a smaller, faster model with honest numbers.

Example:
    >>> import prunus
    >>> model = prunus.create_model("resnet20", num_classes=10, in_channels=1)
    >>> prunus.count(model, (1, 1, 28, 28)).params > 0
    True
"""

from prunus._version import __version__ as __version__
from prunus.errors import PrunusError as PrunusError

# Re-exports of the public API are added as the modules land (integration step).
__all__ = ["PrunusError", "__version__"]
