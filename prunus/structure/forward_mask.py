"""Masks in the forward pass only: the network computes exactly the pruned one, masked filters keep learning.

Zeroing a masked channel's weights (conv rows, BN gamma AND beta) makes the masked model equal the
compact one, but with a ReLU after the BN the channel's weights then get exactly zero gradient,
so soft pruning can never regrow anything (issue 13 measured 0 of 81 channels back). A
`ForwardMask` leaves the weights alone and cuts the channel where it is READ instead:

- every consumer of a masked channel (a conv or linear taking it as input) sees 0 there. So the
  forward pass is exactly the network with those channels removed, whatever the channel's weights,
  BN constants or activation (compact == masked, also in train mode);
- in the backward pass that zeroing is the identity (straight-through): the masked channel's own
  parameters (writer rows, BN gamma/beta, depthwise rows) receive the gradient they would get if
  the channel were alive;
- every writer of a masked channel passes back to ITS input only the live rows' gradient; the
  masked rows' weight and bias gradients are computed from the detached input. Nothing leaks
  upstream: every parameter outside the masked channels gets exactly the masked network's gradient.

Masked filters therefore train as if alive, their scores stay meaningful, and a criterion can
pick them again at the next re-selection. Zero their weights (`soft_mask_`) only at the final mask.

Example:
    >>> fm = ForwardMask(groups)  # doctest: +SKIP
    >>> fm.set(groups[0], [1, 3]); fm.attach(model)  # doctest: +SKIP
    >>> with fm.paused(): neighbour = copy.deepcopy(model)  # a hook-free copy  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from typing import Any

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from prunus.structure.groups import ChannelGroup, StructureError, check_channels
from prunus.structure.roles import CONSUMER_ROLES, Role

__all__ = ["ForwardMask"]


class _StraightThroughMask(torch.autograd.Function):
    """x * mask forward, identity backward."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return x * mask

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return grad, None


class _WriterGradient(torch.autograd.Function):
    """Identity on a writer's output; backward sends only live rows' gradient into the writer's own
    backward (so its input gradient excludes masked rows) and returns the masked rows' weight/bias
    gradients, computed from the detached input, directly."""

    @staticmethod
    def forward(ctx: Any, out: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, bias: Any, rows: torch.Tensor,
                module: nn.Module) -> torch.Tensor:  # fmt: skip
        ctx.save_for_backward(x, rows)
        ctx.module = module
        ctx.has_bias = isinstance(bias, torch.Tensor)
        return out.clone()

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[Any, ...]:
        x, rows = ctx.saved_tensors
        m = ctx.module
        dim = 1 if isinstance(m, nn.modules.conv._ConvNd) else grad.dim() - 1
        live = grad.index_fill(dim, rows, 0.0)
        g_rows = grad.index_select(dim, rows)
        w = m.weight
        if isinstance(m, nn.modules.conv._ConvNd):
            if m.groups == 1:
                gw_rows = _conv_weight_grad(m, x, (len(rows), *w.shape[1:]), g_rows, 1)
            else:  # a grouped writer: the full weight gradient of the masked rows' output gradient
                only = torch.zeros_like(grad).index_copy_(dim, rows, g_rows)
                gw_rows = _conv_weight_grad(m, x, tuple(w.shape), only, m.groups).index_select(0, rows)
            reduce_dims = [d for d in range(grad.dim()) if d != dim]
        else:
            gw_rows = g_rows.reshape(-1, len(rows)).t() @ x.reshape(-1, x.shape[-1])
            reduce_dims = list(range(grad.dim() - 1))
        gw = torch.zeros_like(w).index_copy_(0, rows, gw_rows.to(w.dtype))
        gb = None
        if ctx.has_bias:
            gb = torch.zeros_like(m.bias).index_copy_(0, rows, g_rows.sum(reduce_dims).to(m.bias.dtype))
        return live, None, gw, gb, None, None


def _conv_weight_grad(
    m: nn.Module, x: torch.Tensor, shape: tuple[int, ...], grad: torch.Tensor, groups: int
) -> torch.Tensor:
    fn = {1: torch.nn.grad.conv1d_weight, 2: torch.nn.grad.conv2d_weight, 3: torch.nn.grad.conv3d_weight}[x.dim() - 2]
    return fn(x, shape, grad, m.stride, m.padding, m.dilation, groups)


def _rerouteable(m: nn.Module) -> bool:
    """Writers whose masked rows' gradient `_WriterGradient` can compute (others leak upstream)."""
    if isinstance(m, nn.Linear):
        return True
    return (
        isinstance(m, nn.modules.conv._ConvNd)
        and not m.transposed
        and m.padding_mode == "zeros"
        and not isinstance(m.padding, str)
    )


class ForwardMask:
    """Channel masks enforced in the forward pass by hooks; weights are never touched.

    Args:
        groups: The groups masks may refer to (by object or key), built on the model that
            `attach` will hook.

    Example:
        >>> fm = ForwardMask(groups)  # doctest: +SKIP
        >>> fm.set("layer1.0.conv1", [0, 2]); fm.attach(model)  # doctest: +SKIP
        >>> fm.detach()  # the plain model again  # doctest: +SKIP
    """

    def __init__(self, groups: Iterable[ChannelGroup]) -> None:
        self._groups = {g.key: g for g in groups}
        self._masks: dict[str, list[int]] = {}
        self._handles: list[RemovableHandle] = []
        self._model: nn.Module | None = None

    # ---------------------------------------------------------------------------------- masks
    def set(self, group: ChannelGroup | str, idxs: Iterable[int]) -> None:
        """Mask exactly channels `idxs` of `group` (replacing its previous mask; empty clears it)."""
        key = group if isinstance(group, str) else group.key
        if key not in self._groups:
            raise StructureError(f"ForwardMask knows no group {key!r}")
        chans = check_channels(self._groups[key], idxs, removing=False)
        if chans:
            self._masks[key] = chans
        else:
            self._masks.pop(key, None)
        if self._model is not None:
            self.attach(self._model)  # rebuild the hooks' index tensors

    def clear(self) -> None:
        """Drop every mask (and the hooks)."""
        self._masks.clear()
        self.detach()

    @property
    def masks(self) -> dict[str, list[int]]:
        """Copy of the current masks: group key -> masked channel indices."""
        return {k: list(v) for k, v in self._masks.items()}

    @property
    def attached(self) -> bool:
        return self._model is not None

    # ---------------------------------------------------------------------------------- hooks
    def attach(self, model: nn.Module) -> None:
        """Install the hooks on `model` (replacing earlier ones); a no-op mask installs nothing."""
        self.detach()
        self._model = model
        consumers: dict[str, list[int]] = {}
        writers: dict[str, list[int]] = {}
        for key, idxs in self._masks.items():
            for s in self._groups[key].slices:
                if s.role in CONSUMER_ROLES:
                    consumers.setdefault(s.module, []).extend(s.positions(idxs))
                elif s.role == Role.OUT:
                    writers.setdefault(s.module, []).extend(s.positions(idxs))
        for name, pos in consumers.items():
            module = model.get_submodule(name)
            self._handles.append(module.register_forward_pre_hook(_consumer_hook(module, sorted(set(pos)))))
        for name, rows in writers.items():
            module = model.get_submodule(name)
            if _rerouteable(module):
                self._handles.append(module.register_forward_hook(_writer_hook(sorted(set(rows)))))

    def detach(self) -> None:
        """Remove the hooks; the model computes with its plain weights again."""
        for h in self._handles:
            h.remove()
        self._handles = []
        self._model = None

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """Without the hooks inside the block (e.g. to deep-copy a hook-free model), then back."""
        model = self._model
        self.detach()
        try:
            yield
        finally:
            if model is not None:
                self.attach(model)


def _consumer_hook(module: nn.Module, positions: list[int]) -> Any:
    cache: dict[tuple[Any, Any, int], torch.Tensor] = {}

    def hook(mod: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
        x = args[0]
        dim = x.dim() - 1 if isinstance(mod, nn.Linear) else 1
        key = (x.device, x.dtype, x.shape[dim])
        mask = cache.get(key)
        if mask is None:
            mask = torch.ones(x.shape[dim], device=x.device, dtype=x.dtype)
            mask[positions] = 0
            shape = [1] * x.dim()
            shape[dim] = -1
            mask = cache[key] = mask.view(shape)
        return (_StraightThroughMask.apply(x, mask), *args[1:])

    return hook


def _writer_hook(rows: list[int]) -> Any:
    cache: dict[Any, torch.Tensor] = {}

    def hook(mod: nn.Module, args: tuple[Any, ...], out: torch.Tensor) -> torch.Tensor:
        if not torch.is_grad_enabled() or not mod.weight.requires_grad:
            return out
        idx = cache.get(out.device)
        if idx is None:
            idx = cache[out.device] = torch.tensor(rows, dtype=torch.long, device=out.device)
        return _WriterGradient.apply(out, args[0].detach(), mod.weight, mod.bias, idx, mod)

    return hook
