"""MACs and parameter counts of a model for one input sample.

What is counted, exactly:
- MACs (multiply-accumulates) of `nn.Conv1d`, `nn.Conv2d`, `nn.Conv3d`, their `ConvTranspose`
  counterparts and `nn.Linear` modules (and their subclasses) only, measured with forward hooks
  during one forward pass on a single sample (batch size 1):
  - Conv: `output elements * (in_channels / groups) * kernel volume` (Conv2d:
    `out_h * out_w * out_channels * (in_channels / groups) * k_h * k_w`), which covers grouped and
    depthwise convs (a depthwise 3x3 conv costs `out_h * out_w * channels * 9`);
  - ConvTranspose: `input elements * (out_channels / groups) * kernel volume` (each input value
    is scattered through its kernels; where they overlap the output sums them);
  - Linear: `in_features * out_features` per output row (one row for a flat input).
  A module that runs twice in one forward pass is counted twice.
- Not counted: bias additions, BatchNorm, activations, pooling, residual adds and any functional
  op. This is the convention of the filter-pruning papers (ResNet-56 on CIFAR: 125M MACs), whose
  reductions prunus reproduces, and it is what filter pruning changes.
- Params: every parameter of the model (`sum(p.numel() for p in model.parameters())`, shared
  parameters once), including BatchNorm affine parameters and biases; buffers are not params.

Relation to Torch-Pruning's `tp.utils.count_ops_and_params` (checked in tests/measure/test_counting.py):
its params equal ours; its per-layer count for a Conv2d/Linear equals our MACs plus one addition
per output element for a bias; its total also adds 2 per element for affine BatchNorm, 1 per
element for ReLU/ReLU6 and 1 per input element for pooling layers.

Example:
    >>> from prunus.models import create_model
    >>> c = count(create_model("lenet5", in_channels=1), (1, 28, 28))
    >>> c.params, c.macs, c.layers["conv1"].macs
    (61706, 416520, 117600)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from prunus.models.eager import check_eager
from prunus.models.info import example_input

_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_TRANSPOSED = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
#: the layers `count` charges MACs for (and subclasses); the structure tracer charges the same ones
COUNTED = (*_CONVS, *_TRANSPOSED, nn.Linear)

__all__ = ["Counts", "LayerCount", "count"]


@dataclass(frozen=True)
class LayerCount:
    """MACs and parameters of one conv or Linear module (`kind` is its class name)."""

    kind: str
    macs: int
    params: int


@dataclass(frozen=True)
class Counts:
    """Totals for one input sample plus a per-layer breakdown keyed by dotted module name.

    `layers` lists every Conv1d/2d/3d, ConvTranspose and Linear module in `named_modules()` order; one that did not
    run in the forward pass has 0 MACs.
    """

    macs: int
    params: int
    layers: dict[str, LayerCount]


def count(
    model: nn.Module,
    input_shape: Sequence[int] | Any = None,
    *,
    device: torch.device | str | None = None,
    example_inputs: Any = None,
) -> Counts:
    """Count the MACs (convs and Linear only, no bias) and parameters of `model` for one sample.

    Runs one forward pass on a zero input of `input_shape` (or on the first sample of
    `example_inputs`) under `torch.no_grad()` in eval mode (so BatchNorm running statistics are
    not touched), then restores every module's train/eval flag and removes its hooks. See the
    module docstring for the exact counting rules.

    Args:
        model: Any nn.Module.
        input_shape: One sample's shape without the batch dimension, `(C, H, W)` (or `(C, L)`,
            `(C, D, H, W)` for Conv1d/Conv3d models), or with a batch dimension of 1,
            `(1, C, H, W)`: both give the same, per-sample numbers. A tuple or dict of shapes for
            a model with several inputs (see `prunus.models.info.example_input`).
        device: Where to run the forward pass; default: the device of the model's parameters.
        example_inputs: Instead of `input_shape`: what the model is called with (a tensor, a
            tuple of tensors or a dict of keyword tensors); only the first sample of each is used.

    Returns:
        `Counts(macs, params, layers)`.

    Raises:
        ConfigError: `input_shape` has sizes that are not positive, or not the rank the model reads.

    Example:
        >>> net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1, bias=False), nn.Flatten(), nn.Linear(4 * 8 * 8, 10))
        >>> c = count(net, (1, 8, 8))
        >>> c.layers["0"].macs, c.layers["2"].macs, c.macs, c.params
        (2304, 2560, 4864, 2606)
        >>> count(nn.Conv1d(2, 4, 3), (2, 10)).macs
        192
    """
    check_eager(model, "count")  # its hooks never fire: it would count 0 MACs
    if example_inputs is not None:
        x = _first_sample(example_inputs)
    else:
        x = example_input(input_shape, model, device=device)
    macs: dict[str, int] = {}
    handles = []

    def hook_for(name: str):
        def hook(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], output: torch.Tensor) -> None:
            macs[name] += call_macs(module, output, (*args, *kwargs.values()))

        return hook

    layers = counted_layers(model)
    for name, module in layers.items():
        macs[name] = 0
        handles.append(module.register_forward_hook(hook_for(name), with_kwargs=True))
    was_training = {m: m.training for m in model.modules()}
    try:
        model.eval()
        with torch.no_grad():
            if isinstance(x, dict):
                model(**x)
            elif isinstance(x, tuple):
                model(*x)
            else:
                model(x)
    finally:
        for handle in handles:
            handle.remove()
        for m, flag in was_training.items():
            m.training = flag
    return counts_from(model, macs)


def counted_layers(model: nn.Module) -> dict[str, nn.Module]:
    """The modules whose MACs `count` charges (Conv1d/2d/3d, ConvTranspose1d/2d/3d, Linear and subclasses), by name,
    in order."""
    return {n: m for n, m in model.named_modules() if isinstance(m, COUNTED)}


def call_macs(module: nn.Module, output: torch.Tensor, inputs: Sequence[Any] = ()) -> int:
    """MACs of one call of a counted layer that read `inputs` and returned `output` (see the module docstring)."""
    if isinstance(module, _TRANSPOSED):  # every input element meets out/groups kernels (the output overlaps)
        x = inputs[0] if inputs else None
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{type(module).__name__}: its MACs are counted from its input tensor")
        return x.numel() * (module.out_channels // module.groups) * math.prod(module.kernel_size)
    if isinstance(module, _CONVS):
        per_output = (module.in_channels // module.groups) * math.prod(module.kernel_size)
    else:  # nn.Linear: one MAC per input feature for each output element
        per_output = module.in_features
    return output.numel() * per_output


def counts_from(model: nn.Module, macs: dict[str, int]) -> Counts:
    """`Counts` of `model` from the MACs its counted layers ran in one single-sample forward pass.

    `count` records them with its own hooks; the structure tracer records them during the pass it
    runs anyway (`prunus.structure.traced_counts`), so a prune needs no second forward pass. A layer
    missing from `macs` did not run (0 MACs).
    """
    per_layer = {
        name: LayerCount(type(m).__name__, macs.get(name, 0), sum(p.numel() for p in m.parameters(recurse=False)))
        for name, m in counted_layers(model).items()
    }
    params = sum(p.numel() for p in model.parameters())
    return Counts(macs=sum(c.macs for c in per_layer.values()), params=params, layers=per_layer)


def _first_sample(x: Any) -> Any:
    if isinstance(x, torch.Tensor):
        return x[:1].detach() if x.dim() else x
    if isinstance(x, dict):
        return {k: _first_sample(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return tuple(_first_sample(v) for v in x)
    return x
