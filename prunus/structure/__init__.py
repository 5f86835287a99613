"""The structure engine: coupled channel groups, masks, physical removal, merging and history.

Only this package edits module shapes. Its own tracer finds the couplings (`_trace.py` with the op
rules of `_ops.py`, turned into groups by `_graph.py`, cut by `_cut.py`, each group checked by a
trial cut in `_verify.py`); everything else works on `ChannelGroup` slices.

Example:
    >>> import torch
    >>> from torch import nn
    >>> from prunus import structure
    >>> net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(),
    ...                     nn.Conv2d(8, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 4, 1))
    >>> x = torch.randn(1, 3, 8, 8)
    >>> group = [g for g in structure.build_groups(net, x, ignored_layers=["0", "6"]) if g.prunable][0]
    >>> group.key, group.num_channels
    ('3', 8)
    >>> _ = structure.remove_(net, group, [0, 1, 2])
    >>> net[3].out_channels, net[6].in_channels, structure.get_history(net)
    (5, 5, [{'op': 'remove', 'group': '3', 'width': 8, 'idxs': [0, 1, 2]}])
"""

from prunus.errors import StructureWarning as StructureWarning
from prunus.structure._graph import FilterFn as FilterFn
from prunus.structure._graph import StructureError as StructureError
from prunus.structure._graph import check_filter_fn as check_filter_fn
from prunus.structure._graph import default_filter as default_filter
from prunus.structure.forward_mask import ForwardMask as ForwardMask
from prunus.structure.groups import ChannelGroup as ChannelGroup
from prunus.structure.groups import Slice as Slice
from prunus.structure.groups import build_groups as build_groups
from prunus.structure.groups import check_channels as check_channels
from prunus.structure.groups import lowest_channels as lowest_channels
from prunus.structure.groups import removal_order as removal_order
from prunus.structure.groups import traced_counts as traced_counts
from prunus.structure.history import get_history as get_history
from prunus.structure.history import replay as replay
from prunus.structure.masks import HardMask as HardMask
from prunus.structure.masks import reset_optimizer_rows as reset_optimizer_rows
from prunus.structure.masks import reset_optimizer_state_ as reset_optimizer_state_
from prunus.structure.masks import soft_mask_ as soft_mask_
from prunus.structure.merge import merge_ as merge_
from prunus.structure.removal import remove_ as remove_
from prunus.structure.removal import remove_many_ as remove_many_
from prunus.structure.roles import CLUSTERED_ROLES as CLUSTERED_ROLES
from prunus.structure.roles import CONSUMER_ROLES as CONSUMER_ROLES
from prunus.structure.roles import MASKED_ROLES as MASKED_ROLES
from prunus.structure.roles import ROLES as ROLES
from prunus.structure.roles import VECTOR_ROLES as VECTOR_ROLES
from prunus.structure.roles import WRITER_ROLES as WRITER_ROLES
from prunus.structure.roles import Role as Role
from prunus.structure.weights import ChannelTensors as ChannelTensors
from prunus.structure.weights import assign_ as assign_
from prunus.structure.weights import channel_values as channel_values
from prunus.structure.weights import group_weights as group_weights
from prunus.structure.weights import per_channel as per_channel

__all__ = [
    "CLUSTERED_ROLES",
    "CONSUMER_ROLES",
    "MASKED_ROLES",
    "ROLES",
    "VECTOR_ROLES",
    "WRITER_ROLES",
    "Role",
    "ChannelGroup",
    "ChannelTensors",
    "FilterFn",
    "ForwardMask",
    "HardMask",
    "Slice",
    "StructureError",
    "StructureWarning",
    "assign_",
    "build_groups",
    "channel_values",
    "check_channels",
    "check_filter_fn",
    "default_filter",
    "get_history",
    "group_weights",
    "lowest_channels",
    "merge_",
    "removal_order",
    "per_channel",
    "remove_",
    "remove_many_",
    "replay",
    "reset_optimizer_rows",
    "reset_optimizer_state_",
    "soft_mask_",
    "traced_counts",
]
