"""MACs and parameter counts of a model for one input sample.

What is counted, exactly:
- MACs (multiply-accumulates) of `nn.Conv2d` and `nn.Linear` modules (and their subclasses) only,
  measured with forward hooks during one forward pass on a single sample (batch size 1):
  - Conv2d: `out_h * out_w * out_channels * (in_channels / groups) * k_h * k_w`, which covers
    grouped and depthwise convs (a depthwise 3x3 conv costs `out_h * out_w * channels * 9`);
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

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from prunus.models.info import example_input

__all__ = ["Counts", "LayerCount", "count"]


@dataclass(frozen=True)
class LayerCount:
    """MACs and parameters of one Conv2d or Linear module (`kind` is its class name)."""

    kind: str
    macs: int
    params: int


@dataclass(frozen=True)
class Counts:
    """Totals for one input sample plus a per-layer breakdown keyed by dotted module name.

    `layers` lists every Conv2d/Linear module in `named_modules()` order; one that did not run in
    the forward pass has 0 MACs.
    """

    macs: int
    params: int
    layers: dict[str, LayerCount]


def count(model: nn.Module, input_shape: Sequence[int], *, device: torch.device | str | None = None) -> Counts:
    """Count the MACs (Conv2d and Linear only, no bias) and parameters of `model` for one sample.

    Runs one forward pass on a zero input of `input_shape` under `torch.no_grad()` in eval mode
    (so BatchNorm running statistics are not touched), then restores every module's train/eval
    flag and removes its hooks. See the module docstring for the exact counting rules.

    Args:
        model: Any nn.Module taking a single image tensor.
        input_shape: One sample's shape without the batch dimension, `(C, H, W)`, or with a batch
            dimension of 1, `(1, C, H, W)`; both give the same, per-sample numbers.
        device: Where to run the forward pass; default: the device of the model's parameters.

    Returns:
        `Counts(macs, params, layers)`.

    Raises:
        ConfigError: `input_shape` is not `(C, H, W)` or `(1, C, H, W)` with positive sizes.

    Example:
        >>> net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1, bias=False), nn.Flatten(), nn.Linear(4 * 8 * 8, 10))
        >>> c = count(net, (1, 8, 8))
        >>> c.layers["0"].macs, c.layers["2"].macs, c.macs, c.params
        (2304, 2560, 4864, 2606)
    """
    x = example_input(input_shape, model, device=device)
    macs: dict[str, int] = {}
    handles = []

    def hook_for(name: str):
        def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
            if isinstance(module, nn.Conv2d):
                k_h, k_w = module.kernel_size
                per_output = (module.in_channels // module.groups) * k_h * k_w
            else:  # nn.Linear: one MAC per input feature for each output element
                per_output = module.in_features
            macs[name] += output.numel() * per_output

        return hook

    layers = {n: m for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}
    for name, module in layers.items():
        macs[name] = 0
        handles.append(module.register_forward_hook(hook_for(name)))
    was_training = {m: m.training for m in model.modules()}
    try:
        model.eval()
        with torch.no_grad():
            model(x)
    finally:
        for handle in handles:
            handle.remove()
        for m, flag in was_training.items():
            m.training = flag
    per_layer = {
        name: LayerCount(type(m).__name__, macs[name], sum(p.numel() for p in m.parameters(recurse=False)))
        for name, m in layers.items()
    }
    params = sum(p.numel() for p in model.parameters())
    return Counts(macs=sum(macs.values()), params=params, layers=per_layer)
