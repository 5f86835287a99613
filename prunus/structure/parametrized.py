"""Cutting and masking a conv or linear whose weight or bias is parametrized (weight_norm, spectral_norm, ...).

`torch.nn.utils.parametrize` turns `module.weight` into a computed property: the tensors the model
stores are its *originals* (weight_norm: a magnitude g and a direction v), and assigning
`module.weight = w` stores `right_inverse(w)` in them. prunus cuts and masks the tensor the module
computes, then assigns the result back through that property. This is exact when the
parametrization holds no tensors of its own and maps the right inverse of the edited tensor back to
it; `why_not_editable` checks both on the module's own weight before any group is offered for
pruning, and a layer that fails keeps its channels (its group is left whole with one warning).

One case is exact only by hand: a masked output row of a weight_norm weight is all zeros, whose
right inverse has a zero norm (0/0 in the forward). `mask_` zeroes that row's magnitude g instead,
which leaves the direction v and every other row as they were.

Example:
    >>> import torch
    >>> from torch import nn
    >>> conv = nn.utils.parametrizations.weight_norm(nn.Conv2d(4, 6, 3))
    >>> why_not_editable(conv) is None
    True
    >>> mask_(conv, "weight", 0, [1, 4])
    >>> [int(r.abs().sum() == 0) for r in conv.weight]
    [0, 1, 0, 0, 1, 0]
    >>> why_not_editable(nn.utils.parametrizations.spectral_norm(nn.Conv2d(4, 6, 3)))
    'has its weight parametrized by _SpectralNorm, whose own tensors are shaped by the whole weight'
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import _WeightNorm
from torch.nn.utils.weight_norm import WeightNorm

from prunus.errors import first_line

__all__ = ["bake_", "is_parametrized", "mask_", "masked_originals", "plain_copy", "snapshot", "why_not_editable"]


def is_parametrized(module: nn.Module, tensor: str | None = None) -> bool:
    """Whether `module` (or its `tensor`) is parametrized."""
    return parametrize.is_parametrized(module, tensor)


def _round_trip(chain: Any, value: torch.Tensor) -> torch.Tensor:
    """What the module would compute after `value` is assigned to it (no state is changed)."""
    out: Any = value
    for p in reversed(chain):
        out = p.right_inverse(out)
    for i, p in enumerate(chain):
        out = p(*out) if i == 0 and isinstance(out, (tuple, list)) else p(out)
    return out


def _same(got: torch.Tensor, want: torch.Tensor) -> bool:
    scale = float(want.abs().max()) if want.numel() else 0.0
    return got.shape == want.shape and bool(((got - want).abs() <= 1e-5 * (1.0 + scale)).all())


def _weight_norm_rows(chain: Any, dim: int) -> bool:
    """A lone weight_norm whose magnitude is per index of `dim`: masking there zeroes g (see `mask_`)."""
    return len(chain) == 1 and isinstance(chain[0], _WeightNorm) and chain[0].dim == dim


def why_not_editable(module: nn.Module) -> str | None:
    """Why a cut or a mask cannot be written exactly through `module`'s parametrized tensors; None when it can.

    Checked on the module's own values: the tensor minus its last row and column (a cut), and the
    tensor with its last row and column zeroed (a mask), each assigned and computed back.
    """
    for hook in module._forward_pre_hooks.values():
        if isinstance(hook, WeightNorm):  # torch.nn.utils.weight_norm: a hook recomputes `name` from g and v
            return (
                f"uses torch.nn.utils.weight_norm on its {hook.name} (deprecated: a hook recomputes it), which "
                "a cut cannot follow; torch.nn.utils.parametrizations.weight_norm can be cut"
            )
    if not parametrize.is_parametrized(module):
        return None
    for tensor, chain in module.parametrizations.items():
        names = " + ".join(type(p).__name__ for p in chain)
        where = f"has its {tensor} parametrized by {names}"
        if any(len(p._parameters) + len(p._buffers) for p in chain.modules() if p is not chain):
            return f"{where}, whose own tensors are shaped by the whole {tensor}"
        try:
            with torch.no_grad():
                value = getattr(module, tensor)
                cut, masked = value, value.clone()
                for d in range(min(value.dim(), 2)):
                    cut = cut.narrow(d, 0, max(cut.shape[d] - 1, 1))
                    if value.shape[d] > 1 and not _weight_norm_rows(chain, d):  # `mask_` zeroes g there
                        masked.narrow(d, value.shape[d] - 1, 1).zero_()
                if not _same(_round_trip(chain, cut), cut):
                    return f"{where}, which does not give back a cut {tensor} it is assigned"
                if not _same(_round_trip(chain, masked), masked):
                    return f"{where}, which does not give back a masked {tensor} it is assigned"
        except Exception as exc:  # no right_inverse, a shape it refuses, ...
            return f"{where}, which cannot take a cut {tensor}: {first_line(exc)}"
    return None


@torch.no_grad()
def mask_(module: nn.Module, tensor: str, dim: int, positions: Sequence[int]) -> None:
    """Zero `positions` along `dim` of the parametrized `module.tensor` (see the module docstring)."""
    chain = module.parametrizations[tensor]
    index = torch.tensor(list(positions), dtype=torch.long)
    if _weight_norm_rows(chain, dim):  # zero g there: a zero row's right inverse has norm 0 (0/0)
        g = chain.original0
        g.index_fill_(dim, index.to(g.device), 0.0)
        return
    value = getattr(module, tensor)
    setattr(module, tensor, value.index_fill(dim, index.to(value.device), 0.0))


def masked_originals(module: nn.Module, tensor: str, dim: int) -> list[torch.Tensor]:
    """The stored tensors that `mask_` zeroes along `dim` (their gradients and optimizer state follow the mask).

    A weight_norm's magnitude g for its own rows; otherwise the originals shaped like the tensor
    (a right inverse that keeps the shape, like a scaling). Others have no rows to follow.
    """
    chain = module.parametrizations[tensor]
    if _weight_norm_rows(chain, dim):  # g holds one value per row
        return [chain.original0]
    shape = getattr(module, tensor).shape
    return [t for t in (*chain._parameters.values(), *chain._buffers.values()) if t.shape == shape]


def snapshot(module: nn.Module, tensor: str) -> Callable[[], None]:
    """A function that puts back the stored values behind `module.tensor` as they are now.

    Assigning a parametrized tensor writes its originals in place (`right_inverse`), so what is
    kept is their data, and the very same tensor objects get it back.
    """
    chain = module.parametrizations[tensor]
    saved = [(t, t.detach().clone()) for t in (*chain._parameters.values(), *chain._buffers.values())]

    def put_back() -> None:
        with torch.no_grad():
            for t, data in saved:
                t.set_(data)

    return put_back


@torch.no_grad()
def bake_(module: nn.Module) -> nn.Module:
    """Replace every computed weight of `module` (a copy: see below) by its current value; returns it.

    Parametrizations and the deprecated `torch.nn.utils.weight_norm` hook both become plain
    parameters, for a copy that must compute what the model computes with plain tensors (a BN fold,
    a probe of the layer's forward, `compress`'s student). A deep copy shares the original's
    generated `Parametrized<Class>`, and removing a parametrization deletes its property from that
    class, so each copy gets a class of its own first; the model it was copied from is untouched.
    """
    for m in list(module.modules()):
        for key, hook in list(m._forward_pre_hooks.items()):
            if isinstance(hook, WeightNorm):
                hook.remove(m)  # `name` becomes a parameter again, g and v go
                del m._forward_pre_hooks[key]
        if not parametrize.is_parametrized(m):
            continue
        cls = type(m)
        namespace = {k: v for k, v in vars(cls).items() if k not in ("__dict__", "__weakref__")}
        m.__class__ = type(cls.__name__, cls.__bases__, namespace)
        for name in list(m.parametrizations.keys()):
            parametrize.remove_parametrizations(m, name, leave_parametrized=True)
    return module


@torch.no_grad()
def plain_copy(model: nn.Module) -> nn.Module:
    """A deep copy of `model` with its computed weights baked (`bake_`); `model` computes as before.

    The deprecated weight_norm hook leaves a weight with a grad_fn after a forward with gradients,
    which `copy.deepcopy` refuses; it is first recomputed without one, as a no-grad forward does.
    """
    for m in model.modules():
        for hook in m._forward_pre_hooks.values():
            if isinstance(hook, WeightNorm):
                setattr(m, hook.name, hook.compute_weight(m))
    return bake_(copy.deepcopy(model))
