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
from prunus._version import provenance as provenance
from prunus.compress import CompressConfig as CompressConfig
from prunus.compress import CompressReport as CompressReport
from prunus.compress import compress as compress
from prunus.compress import decompress as decompress
from prunus.compress import load as load
from prunus.errors import PrunusError as PrunusError
from prunus.formats import save as save
from prunus.measure import Counts as Counts
from prunus.measure import count as count
from prunus.models import create_model as create_model
from prunus.models import list_models as list_models
from prunus.pruning import PruneReport as PruneReport
from prunus.pruning import WidthPlan as WidthPlan
from prunus.pruning import plan_widths as plan_widths
from prunus.pruning import prune as prune

__all__ = [
    "CompressConfig",
    "CompressReport",
    "Counts",
    "PruneReport",
    "PrunusError",
    "WidthPlan",
    "__version__",
    "count",
    "compress",
    "create_model",
    "decompress",
    "list_models",
    "load",
    "plan_widths",
    "provenance",
    "prune",
    "save",
]
