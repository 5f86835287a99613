"""The model object prunus works on: not a TorchScript module, not a data-parallel wrapper.

`unwrap_parallel`: `nn.DataParallel` / `DistributedDataParallel` compute what the module inside
computes (on one device, in eval), so save and export work on that module: its state has no
`module.` prefix and it carries the architecture record a zoo model was built with.

`check_eager` refuses a TorchScript module where prunus must see or edit the model's layers.

`torch.jit.script` / `torch.jit.trace` return a compiled module: its forward hooks never fire and its
layers cannot be replaced, so a trace finds no layer (a prune used to divide by zero on the MACs
it found) and a cut could not be written. Export and save take such a module as it is.

Example:
    >>> import torch
    >>> check_eager(torch.nn.Linear(2, 2), "prune")
    >>> check_eager(torch.jit.script(torch.nn.Linear(2, 2)), "prune")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    prunus.errors.ConfigError: prune needs the nn.Module itself, not a TorchScript module (RecursiveScriptModule, ...
"""

from __future__ import annotations

import torch
from torch import nn

from prunus.errors import ConfigError

__all__ = ["check_eager", "unwrap_parallel"]


def unwrap_parallel(model: nn.Module) -> nn.Module:
    """The module inside `nn.DataParallel` / `nn.parallel.DistributedDataParallel` (nested too); else `model`.

    Example:
        >>> net = torch.nn.Linear(2, 2)
        >>> unwrap_parallel(torch.nn.DataParallel(net)) is net
        True
    """
    while isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
        model = model.module
    return model


def check_eager(model: nn.Module, what: str) -> None:
    """ConfigError when `model` is a TorchScript module (see the module docstring)."""
    if isinstance(model, torch.jit.ScriptModule):
        raise ConfigError(
            f"{what} needs the nn.Module itself, not a TorchScript module ({type(model).__name__}, from "
            "torch.jit.script or torch.jit.trace), whose layers prunus can neither trace nor edit: pass the model "
            "it was made from"
        )
