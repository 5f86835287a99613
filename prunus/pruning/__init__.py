"""Selection policies that decide which channels go: one-shot pruning to a channel, MACs, params or latency
target, and `plan_widths`, the same search returning per-group widths for the training-time methods.

The structural engine (`prunus.structure`) does the cutting; this layer only decides what to cut.

Example:
    >>> import torch, prunus
    >>> from prunus.pruning import prune
    >>> model = prunus.create_model("lenet5", in_channels=1)
    >>> model, report = prune(model, torch.zeros(1, 1, 28, 28), remove_channels=0.5)
    >>> report.achieved_macs_ratio < 1.0
    True
"""

from prunus.pruning.config import BUDGETS as BUDGETS
from prunus.pruning.config import TARGETS as TARGETS
from prunus.pruning.config import PruneBudget as PruneBudget
from prunus.pruning.config import PruneConfig as PruneConfig
from prunus.pruning.oneshot import PruneReport as PruneReport
from prunus.pruning.oneshot import num_to_prune as num_to_prune
from prunus.pruning.oneshot import prune as prune
from prunus.pruning.plan import WidthPlan as WidthPlan
from prunus.pruning.plan import plan_widths as plan_widths
from prunus.pruning.widths import channel_block as channel_block

__all__ = [
    "BUDGETS",
    "PruneBudget",
    "PruneConfig",
    "PruneReport",
    "TARGETS",
    "WidthPlan",
    "channel_block",
    "num_to_prune",
    "plan_widths",
    "prune",
]
