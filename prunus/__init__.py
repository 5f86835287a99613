"""prunus: manage the filter redundancy of convolutional networks over their whole life.

Find unimportant filters, remove them with no loss, reactivate them instead of removing them,
compress what survives, and ship a smaller, faster model with honest numbers.

Example:
    >>> import prunus
    >>> model = prunus.create_model("resnet20", num_classes=10, in_channels=1)
    >>> prunus.count(model, (1, 28, 28)).params
    272186
"""

from prunus._version import __version__ as __version__
from prunus.counting import Counts as Counts
from prunus.counting import count as count
from prunus.errors import PrunusError as PrunusError
from prunus.models import create_model as create_model
from prunus.models import list_models as list_models
from prunus.prune import PruneReport as PruneReport
from prunus.prune import prune as prune
from prunus.serialization import load as load
from prunus.serialization import save as save

__all__ = [
    "Counts",
    "PruneReport",
    "PrunusError",
    "__version__",
    "count",
    "create_model",
    "list_models",
    "load",
    "prune",
    "save",
]
