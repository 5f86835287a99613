"""Soft and hard channel masks: zero channels without changing shapes.

A masked channel has zero writer rows and biases, zero depthwise rows and biases, and zero BN
gamma AND beta, so it emits exactly zero whatever its input and running statistics (the SFP
reference code left beta alone, so its "pruned" channels still emitted a BN constant). With any
activation that maps 0 to 0 (ReLU, ReLU6, SiLU, GELU, ...) the masked model then computes exactly
what the compact model computes after `remove_` of the same channels.

Example:
    >>> soft_mask_(model, group, [0, 5])  # SFP: zero now, let training revive them  # doctest: +SKIP
    >>> hard = HardMask(groups); hard.set(group, [0, 5])  # doctest: +SKIP
    >>> loss.backward(); hard.apply_(model, optimizer); optimizer.step()  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from prunus.structure.groups import ChannelGroup, StructureError, check_channels
from prunus.structure.history import history_length
from prunus.structure.parametrized import is_parametrized, mask_, masked_originals
from prunus.structure.roles import MASKED_ROLES, Role

__all__ = ["MASKED_ROLES", "HardMask", "reset_optimizer_rows", "reset_optimizer_state_", "soft_mask_"]


def _targets(group: ChannelGroup, idxs: list[int]) -> list[tuple[str, str, int, list[int]]]:
    """(module, tensor, dim, positions) to zero for channels `idxs` of `group`."""
    out = []
    for s in group.slices:
        if s.role.is_masked:
            pos = s.positions(idxs)
            if pos:
                out.append((s.module, s.tensor, s.dim, pos))
    return out


def soft_mask_(model: nn.Module, group: ChannelGroup, idxs: Iterable[int]) -> nn.Module:
    """Zero channels `idxs` of `group` in `model` (weights only; gradients flow on); returns `model`.

    `model` may be a deep copy of the model the group was built on (slices are found by name),
    which is how MFP evaluates neighbour networks.

    Raises:
        StructureError: the group is not prunable or the indices are invalid.

    Example:
        >>> soft_mask_(model, group, [1, 3])  # doctest: +SKIP
    """
    chans = check_channels(group, idxs, removing=False)
    with torch.no_grad():
        for module, tensor, dim, pos in _targets(group, chans):
            m = model.get_submodule(module)
            if is_parametrized(m, tensor):  # a computed tensor: zeroing it in place would change nothing
                mask_(m, tensor, dim, pos)
                continue
            t = getattr(m, tensor)
            t.index_fill_(dim, torch.tensor(pos, dtype=torch.long, device=t.device), 0.0)
    return model


@torch.no_grad()
def reset_optimizer_rows(optimizer: torch.optim.Optimizer, param: torch.Tensor, rows: Any, dim: int = 0) -> int:
    """Zero `optimizer`'s state tensors shaped like `param` (momentum, Adam moments) at `rows` along `dim`.

    The one primitive every "this row was rewritten, forget its momentum" path uses (channel
    masks, WE's evolved rows, the Trainer's method hook). Step counters and other scalars are
    per parameter, not per row, and stay. A parameter the optimizer has no state for yet (before
    its first step) needs nothing. Returns how many state tensors were edited.

    Example:
        >>> from torch import nn
        >>> layer = nn.Linear(2, 3)
        >>> opt = torch.optim.SGD(layer.parameters(), lr=0.1, momentum=0.9)
        >>> layer(torch.ones(1, 2)).sum().backward(); opt.step()
        >>> reset_optimizer_rows(opt, layer.weight, [0, 2])
        1
        >>> opt.state[layer.weight]["momentum_buffer"][[0, 2]].abs().sum().item()
        0.0
    """
    index = torch.as_tensor(rows, dtype=torch.long).flatten()
    edited = 0
    for value in optimizer.state.get(param, {}).values():
        if torch.is_tensor(value) and value.shape == param.shape:
            value.index_fill_(dim, index.to(value.device), 0.0)
            edited += 1
    return edited


@torch.no_grad()
def reset_optimizer_state_(
    optimizer: torch.optim.Optimizer,
    model: nn.Module,
    group: ChannelGroup,
    channels: Iterable[int],
    *,
    roles: Iterable[Role | str] | None = None,
) -> None:
    """Zero `optimizer`'s per-parameter state (momentum, Adam moments) for channels of `group`.

    A channel whose weights were just rewritten (reactivated, grafted, reinitialised) must not be
    pushed by momentum accumulated for its old values; this clears exactly its rows, in every
    state tensor shaped like the parameter. Weights and gradients are untouched.

    Args:
        optimizer: Built on `model`'s parameters (state of parameters it does not hold is skipped).
        model: The model `group` was built on.
        group: A group from `build_groups`.
        channels: Channel indices in [0, group.num_channels).
        roles: Only slices with these roles (default: every learnable slice: all roles but BN
            running statistics and grouped-conv inputs).

    Example:
        >>> assign_(model, group, values, channels=[3])  # doctest: +SKIP
        >>> reset_optimizer_state_(optimizer, model, group, [3])  # doctest: +SKIP
    """
    chans = check_channels(group, channels, removing=False)
    wanted = (
        frozenset(Role(r) for r in roles)
        if roles is not None
        else frozenset(Role) - {Role.BN_MEAN, Role.BN_VAR, Role.IN_GROUPED}
    )
    for s in group.slices:
        pos = s.positions(chans) if s.role in wanted else []
        if pos:
            p = s.get(model)
            reset_optimizer_rows(optimizer, p, pos, s.dim)


class HardMask:
    """Masks that stay zero through training: weights, gradients and optimizer state.

    Call `apply_` every step between `loss.backward()` and `optimizer.step()`. It zeroes the masked
    slices of the weights, of their gradients and of every optimizer state tensor shaped like the
    parameter (SGD `momentum_buffer`, Adam `exp_avg`/`exp_avg_sq`, ...), so neither momentum nor
    weight decay can move them: the step then leaves them at exactly 0.0.

    Args:
        groups: The groups masks may refer to (by object or key).

    Example:
        >>> hard = HardMask(groups)  # doctest: +SKIP
        >>> hard.set("layer1.0.conv1", [2, 7])  # doctest: +SKIP
        >>> hard.apply_(model, optimizer)  # between backward and step  # doctest: +SKIP
    """

    def __init__(self, groups: Iterable[ChannelGroup]) -> None:
        self._groups = {g.key: g for g in groups}
        self._masks: dict[str, tuple[int, list[int]]] = {}  # key -> (group width when set, channels)
        self._plan: tuple[int, list[tuple[str, str, int, list[int]]]] | None = None

    def _group(self, group: ChannelGroup | str) -> ChannelGroup:
        key = group if isinstance(group, str) else group.key
        if key not in self._groups:
            raise StructureError(f"HardMask knows no group {key!r}")
        return self._groups[key]

    def set(self, group: ChannelGroup | str, idxs: Iterable[int]) -> None:
        """Mask exactly channels `idxs` of `group` (replacing its previous mask; empty clears it)."""
        g = self._group(group)
        chans = check_channels(g, idxs, removing=False)
        if chans:
            self._masks[g.key] = (g.num_channels, chans)
        else:
            self._masks.pop(g.key, None)
        self._plan = None

    def clear(self, group: ChannelGroup | str | None = None) -> None:
        """Drop the mask of `group`, or all masks; call it after removing a group's masked channels."""
        if group is None:
            self._masks.clear()
        else:
            self._masks.pop(self._group(group).key, None)
        self._plan = None

    @property
    def masks(self) -> dict[str, list[int]]:
        """Copy of the current masks: group key -> masked channel indices."""
        return {k: list(v) for k, (_, v) in self._masks.items()}

    def _targets(self) -> list[tuple[str, str, int, list[int]]]:
        version = sum(history_length(g._graph.model) for g in self._groups.values())
        if self._plan is None or self._plan[0] != version:
            plan = []
            for key, (width, idxs) in self._masks.items():
                group = self._groups[key]
                if group.num_channels != width:  # indices would now point at other channels
                    raise StructureError(
                        f"group {key!r} changed width ({width} -> {group.num_channels}) since its mask was set; "
                        "clear or set the mask again"
                    )
                plan += _targets(group, idxs)
            self._plan = (version, plan)
        return self._plan[1]

    @torch.no_grad()
    def apply_(self, model: nn.Module, optimizer: torch.optim.Optimizer | None = None) -> None:
        """Zero the masked weights, their gradients and `optimizer`'s state slices in place."""
        for module, tensor, dim, pos in self._targets():
            m = model.get_submodule(module)
            if is_parametrized(m, tensor):  # its value is computed: the stored originals are what is zeroed
                mask_(m, tensor, dim, pos)
                stored = masked_originals(m, tensor, dim)
            else:
                stored = [getattr(m, tensor)]
                stored[0].index_fill_(dim, torch.tensor(pos, dtype=torch.long, device=stored[0].device), 0.0)
            for p in stored:
                index = torch.tensor(pos, dtype=torch.long, device=p.device)
                if p.grad is not None:
                    p.grad.index_fill_(dim, index, 0.0)
                if optimizer is not None:
                    reset_optimizer_rows(optimizer, p, index, dim)

    def state_dict(self) -> dict[str, Any]:
        """Masks as plain lists and strings (loadable with `torch.load(weights_only=True)`)."""
        return {"masks": self.masks}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore masks saved by `state_dict`; unknown group keys raise `StructureError`."""
        self.clear()
        for key, idxs in state.get("masks", {}).items():
            self.set(str(key), [int(i) for i in idxs])
