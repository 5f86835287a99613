"""Selection policies that decide which channels go: one-shot pruning to a channel or MACs target.

The structural engine (`prunus.structure`) does the cutting; this layer only decides what to cut.

Example:
    >>> import torch, prunus
    >>> from prunus.pruning import prune
    >>> model, report = prune(prunus.create_model("lenet5", in_channels=1), torch.zeros(1, 1, 28, 28), ratio=0.5)
    >>> report.achieved_macs_ratio < 1.0
    True
"""

from prunus.pruning.oneshot import PruneReport as PruneReport
from prunus.pruning.oneshot import num_to_prune as num_to_prune
from prunus.pruning.oneshot import prune as prune

__all__ = ["PruneReport", "num_to_prune", "prune"]
