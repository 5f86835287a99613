"""The conv layers whose filters the weight-editing methods edit, and their filters as rows.

WE (`_evolution.evolve_`) and grafting's internal variants (`_grafting`) score and rewrite whole
filters (output channels). Every conv the tracer knows holds them on a weight dim:

- Conv1d / Conv2d / Conv3d (any groups): dim 0, rows of (in/groups, *kernel);
- ConvTranspose1d/2d/3d with groups=1: dim 1 (its weight is (in, out, *kernel)); the methods edit a
  filter-major copy, written back after (`filter_rows` / `write_back`);
- a grouped ConvTranspose keeps out/groups columns per group, so one column is not one filter: it is
  left out, as is a parametrized conv (weight_norm), whose weight is recomputed on every access and
  would silently drop an in-place edit.

Example:
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Conv1d(2, 4, 3), nn.ConvTranspose1d(4, 3, 2), nn.ConvTranspose1d(3, 6, 2, groups=3))
    >>> [type(m).__name__ for m in editable_convs(net)]
    ['Conv1d', 'ConvTranspose1d']
    >>> [tuple(filter_rows(m).shape) for m in editable_convs(net)]  # (filters, inputs, kernel)
    [(4, 2, 3), (3, 4, 2)]
"""

from __future__ import annotations

import torch
from torch import nn

from prunus.structure.parametrized import is_parametrized

__all__ = ["editable_batchnorms", "editable_convs", "filter_dim", "filter_rows", "write_back"]


def filter_dim(conv: nn.Module) -> int | None:
    """The weight dim that holds `conv`'s filters, or None when the methods leave it out (see module doc)."""
    if not isinstance(conv, nn.modules.conv._ConvNd) or is_parametrized(conv, "weight"):
        return None
    if conv.transposed:
        return 1 if conv.groups == 1 else None
    return 0


def editable_convs(model: nn.Module) -> list[nn.modules.conv._ConvNd]:
    """Every conv whose filters WE and the internal grafts edit, in registration order."""
    return [m for m in model.modules() if filter_dim(m) is not None]


def editable_batchnorms(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    """Every affine BatchNorm (1d/2d/3d, SyncBatchNorm) whose gamma and beta WE evolves; a parametrized
    one is left out for the same reason as a parametrized conv."""
    return [
        m
        for m in model.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.affine and not is_parametrized(m)
    ]


def filter_rows(conv: nn.modules.conv._ConvNd) -> torch.Tensor:
    """`conv`'s weight with one filter per row: the weight's own data for a plain conv (edits land in
    place), a contiguous filter-major copy for a transposed one (edits land through `write_back`)."""
    dim = filter_dim(conv)
    if dim is None:
        raise ValueError(f"{type(conv).__name__} has no editable filters (grouped transposed or parametrized)")
    data = conv.weight.data
    return data if dim == 0 else data.transpose(0, 1).contiguous()


@torch.no_grad()
def write_back(conv: nn.modules.conv._ConvNd, rows: torch.Tensor) -> None:
    """Store `filter_rows(conv)` edited: a no-op for a plain conv (they were its weight), a copy for a
    transposed one."""
    if rows.data_ptr() != conv.weight.data.data_ptr():
        conv.weight.data.copy_(rows.transpose(0, 1))
