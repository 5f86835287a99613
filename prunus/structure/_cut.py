"""Physically cutting positions out of a model's tensors, by name: the one place module shapes change.

A `CutPlan` lists, per (module, tensor, dim), the positions to drop; per module whose width lives
only in an attribute (a BatchNorm without parameters), how many channels it loses; and the new
values of attributes holding sizes (split sections, slice bounds: `Binding`). `apply_plan` edits
any model with those names (the traced one, or a copy for a trial), replacing each parameter by a
smaller one (an optimizer built before must be rebuilt) and updating every size attribute torch
reads (`out_channels`, `num_features`, `num_groups`, ...) and rescaling a normalisation over the
channels (`_layers.StatNorm`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from prunus.structure.parametrized import is_parametrized, snapshot
from prunus.structure.roles import Role

__all__ = ["CutPlan", "apply_plan", "rescale_stat_norm"]


@dataclass
class CutPlan:
    """What one cut removes (see the module docstring)."""

    tensors: list[tuple[str, str, int, Role, list[int]]] = field(default_factory=list)
    widths: dict[str, int] = field(default_factory=dict)
    attrs: dict[tuple[str, str], Any] = field(default_factory=dict)
    #: normalisation over channels -> (weight exponent, channels before, channels after): its eps and
    #: weight are rescaled so the kept channels see the statistic the masked model computes
    rescales: dict[str, tuple[float, int, int]] = field(default_factory=dict)


def _replace(module: nn.Module, name: str, value: torch.Tensor, undo: list | None = None) -> None:
    if undo is not None:
        undo.append(_restorer(module, name))
    if name in module._parameters:
        old = module._parameters[name]
        module._parameters[name] = nn.Parameter(value, requires_grad=old.requires_grad)
    elif name in module._buffers:
        module._buffers[name] = value
    else:
        setattr(module, name, value)


def _keep(size: int, drop: list[int], device: torch.device, cache: dict | None = None) -> torch.Tensor:
    """The indices of `range(size)` not in `drop`; `cache` shares them between the tensors of one cut
    (a conv's weight and bias and its BatchNorm's four tensors drop the same positions)."""
    key = (size, tuple(drop), device)
    if cache is not None and key in cache:
        return cache[key]
    keep = torch.ones(size, dtype=torch.bool)
    keep[list(drop)] = False
    index = keep.nonzero().squeeze(1).to(device)
    if cache is not None:
        cache[key] = index
    return index


def _restorer(module: nn.Module, name: str) -> Any:
    """A function that puts back what `module.name` is now (the very same object)."""
    if is_parametrized(module, name):  # assigning it wrote its originals' data in place (`right_inverse`)
        return snapshot(module, name)
    if name in module._parameters:
        old = module._parameters[name]
        return lambda: module._parameters.__setitem__(name, old)
    if name in module._buffers:
        old = module._buffers[name]
        return lambda: module._buffers.__setitem__(name, old)
    old = module.__dict__[name]
    return lambda: module.__dict__.__setitem__(name, old)


def _set(module: nn.Module, name: str, value: Any, undo: list | None) -> None:
    if undo is not None:
        undo.append(_restorer(module, name))
    setattr(module, name, value)


@torch.no_grad()
def apply_plan(
    model: nn.Module, plan: CutPlan, undo: list | None = None, modules: dict[str, nn.Module] | None = None
) -> None:
    """Cut `plan` out of `model` (found by module names) and update the size attributes.

    With `undo`, a function per change is appended to it; calling them in reverse order puts
    back the very same parameter objects and values (a trial cut on the model itself). `modules`:
    the model's name -> module map, when the caller has it (looking names up one by one is slow).
    """
    get = modules.__getitem__ if modules is not None else model.get_submodule
    touched: dict[str, set[Role]] = {}
    kept: dict = {}
    for module_name, tensor, dim, role, positions in plan.tensors:
        m = get(module_name)
        t = getattr(m, tensor)
        if role is Role.IN_GROUPED:  # positions are input channels; the weight holds in/groups columns
            per = m.in_channels // m.groups
            cols = sorted({p % per for p in positions})
            new = t.detach().index_select(1, _keep(per, cols, t.device, kept))
        else:
            new = t.detach().index_select(dim, _keep(t.shape[dim], positions, t.device, kept))
        _replace(m, tensor, new, undo)
        touched.setdefault(module_name, set()).add(role)
    for module_name, roles in touched.items():
        _resize(get(module_name), roles, undo)
    for module_name, lost in plan.widths.items():
        m = get(module_name)
        if isinstance(m, nn.GroupNorm):
            size = m.num_channels // m.num_groups
            _set(m, "num_channels", m.num_channels - lost, undo)
            _set(m, "num_groups", m.num_channels // size, undo)
        elif isinstance(m, nn.modules.batchnorm._NormBase):
            _set(m, "num_features", m.num_features - lost, undo)
    for (module_name, attr), value in plan.attrs.items():
        _set(get(module_name), attr, value, undo)
    for module_name, (exponent, before, after) in plan.rescales.items():
        rescale_stat_norm(get(module_name), None, before / after, exponent, undo)


def _resize(m: nn.Module, roles: set[Role], undo: list | None = None) -> None:
    """Set the size attributes of a cut conv, linear or PReLU from its weight."""
    if isinstance(m, nn.modules.conv._ConvNd):
        w = m.weight
        if Role.DW in roles:  # a depthwise conv keeps one channel per group
            for attr in ("in_channels", "out_channels", "groups"):
                _set(m, attr, w.shape[0], undo)
        elif m.transposed:  # (in, out / groups, *kernel)
            _set(m, "in_channels", w.shape[0], undo)
            _set(m, "out_channels", w.shape[1] * m.groups, undo)
        else:
            _set(m, "out_channels", w.shape[0], undo)
            _set(m, "in_channels", w.shape[1] * m.groups, undo)
    elif isinstance(m, nn.Linear):
        _set(m, "out_features", m.weight.shape[0], undo)
        _set(m, "in_features", m.weight.shape[1], undo)
    elif isinstance(m, nn.PReLU):
        _set(m, "num_parameters", m.weight.numel(), undo)


def rescale_stat_norm(m: nn.Module, keep: torch.Tensor | None, ratio: float, exponent: float,
                      undo: list | None = None) -> None:  # fmt: skip
    """Keep channels `keep` of normalisation `m` (None: already sliced) and rescale its eps and weight
    for the `ratio` = C / C' channels it had before over those it keeps (`_layers.StatNorm`).

    Example:
        >>> norm = nn.RMSNorm(8, eps=1e-5)
        >>> rescale_stat_norm(norm, torch.arange(4), 2.0, 0.5)
        >>> norm.normalized_shape, round(norm.eps, 9), round(float(norm.weight[0]), 4)
        ((4,), 2e-05, 1.4142)
    """
    for attr in ("weight", "bias"):
        t = getattr(m, attr, None)
        if not isinstance(t, torch.Tensor):
            continue
        new = t.detach() if keep is None else t.detach().index_select(0, keep.to(t.device))
        if attr == "weight":
            new = new * ratio**exponent
        _replace(m, attr, new, undo)
    width = m.weight.shape[0] if getattr(m, "weight", None) is not None else None
    dtype = m.weight.dtype if width is not None else torch.get_default_dtype()
    eps = m.eps if m.eps is not None else torch.finfo(dtype).eps  # what torch's RMSNorm uses for None
    _set(m, "eps", eps * ratio, undo)
    shape = getattr(m, "normalized_shape", None)
    if width is not None and isinstance(shape, (tuple, list)) and len(shape) == 1:
        _set(m, "normalized_shape", type(shape)([width]), undo)
