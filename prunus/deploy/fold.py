"""BatchNorm folding: an eval-mode copy of a model with every BN merged into the conv before it.

In eval mode a BatchNorm is a per-channel affine map, so a conv followed only by a BN equals one
conv with rescaled weights and a shifted bias (`torch.nn.utils.fusion.fuse_conv_bn_weights`).
Folding removes one memory pass per BN at inference; onnxruntime does the same in its graph
optimizer, torch eager does not.

Which conv a BN follows is read from a `torch.fx` trace of the forward: a pair is folded only
when the BN's input is exactly the conv's output, that output has no other user, and both modules
are called once (a shared module would be folded for every call site). Anything else is left as
it was, so the copy always computes what the original computes in eval mode.

Example:
    >>> import torch
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU()).eval()
    >>> folded, n = fold_bn(net)
    >>> n, type(folded[1]).__name__
    (1, 'Identity')
    >>> x = torch.randn(2, 1, 8, 8)
    >>> bool((folded(x) - net(x)).abs().max() < 1e-5)
    True
"""

from __future__ import annotations

import torch
import torch.fx
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_weights

from prunus.errors import PrunusError, first_line
from prunus.structure.parametrized import plain_copy

__all__ = ["FoldError", "fold_bn"]


class FoldError(PrunusError, RuntimeError):
    """The model cannot be traced by torch.fx, so no conv-BN pair can be proven safe to fold."""


def _pairs(model: nn.Module) -> list[tuple[str, str]]:
    """(conv name, bn name) pairs that are safe to fold, from a symbolic trace of `model`."""
    try:
        graph = torch.fx.symbolic_trace(model).graph
    except Exception as exc:  # fx raises TraceError, TypeError, ... on data-dependent Python
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise FoldError(f"cannot fold BatchNorm: torch.fx cannot trace {type(model).__name__}: {first}") from exc
    calls: dict[str, int] = {}
    for node in graph.nodes:
        if node.op == "call_module":
            calls[node.target] = calls.get(node.target, 0) + 1
    pairs = []
    for node in graph.nodes:
        if node.op != "call_module" or not isinstance(
            model.get_submodule(node.target), nn.modules.batchnorm._BatchNorm
        ):
            continue
        src = node.args[0] if node.args else None
        if not isinstance(src, torch.fx.Node) or src.op != "call_module" or len(node.args) != 1 or node.kwargs:
            continue
        conv = model.get_submodule(src.target)
        bn = model.get_submodule(node.target)
        if not isinstance(conv, nn.modules.conv._ConvNd) or (conv.transposed and conv.groups != 1):
            continue  # a grouped transposed conv holds out/groups columns: one scale per column is not per channel
        if len(src.users) != 1 or calls[src.target] != 1 or calls[node.target] != 1:
            continue
        if bn.running_mean is None or bn.running_var is None or bn.num_features != conv.out_channels:
            continue  # no running statistics: the BN normalises by batch statistics even in eval mode
        pairs.append((src.target, node.target))
    return pairs


def _set(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, leaf = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, leaf, module)


@torch.no_grad()
def fold_bn(model: nn.Module) -> tuple[nn.Module, int]:
    """An eval-mode deep copy of `model` with BatchNorms folded into their convs; `model` is untouched.

    Args:
        model: Any module torch.fx can trace (every prunus zoo model, pruned or not).

    Returns:
        (copy, number of BatchNorms folded). Folded BNs become `nn.Identity` under their old names;
        module names, classes and every other module are as in `model`.

    Raises:
        FoldError: torch.fx cannot trace the model (data-dependent control flow in `forward`).

    Example:
        >>> import prunus
        >>> folded, n = fold_bn(prunus.create_model("resnet20", in_channels=1, width_mult=0.25))
        >>> n  # every BN of a ResNet-20 (stem, 18 in blocks, 2 in projection shortcuts) follows a conv
        21
    """
    pairs = _pairs(model)
    try:  # weight_norm, spectral_norm, ... as plain weights: their eval-mode values are what folds
        folded = plain_copy(model).eval()
    except RuntimeError as exc:  # a tensor with a grad_fn kept on a module (the user's own cache)
        raise FoldError(f"cannot fold BatchNorm: the model cannot be copied ({first_line(exc)})") from exc
    for conv_name, bn_name in pairs:
        conv, bn = folded.get_submodule(conv_name), folded.get_submodule(bn_name)
        weight, bias = fuse_conv_bn_weights(  # a ConvTranspose's output channels are its weight's dim 1
            conv.weight, conv.bias, bn.running_mean, bn.running_var, bn.eps, bn.weight, bn.bias, conv.transposed
        )
        conv.weight = weight
        conv.bias = bias
        _set(folded, bn_name, nn.Identity())
    return folded, len(pairs)
