"""Run a network in two halves: everything up to one layer once, then P candidate versions of that layer
and everything after it in one batch.

`Runner.enter(x, name)` runs the model on the calibration batch up to the layer and keeps the
activations that cross that cut (with `torch.fx`; a model fx cannot trace falls back to forward
hooks and recomputes the prefix).
`Runner.suffix(state, outputs, P)` continues from P candidate outputs of the layer stacked along
the batch: activations from before the layer that are used after it (residual branches) are
repeated P times, nothing before the layer is recomputed.

`candidate_outputs(module, inp, weights)` evaluates P weight tensors of one conv/Linear at once
(a broadcast matmul for a Linear; for a conv one conv with the P candidates' filters stacked as
P x out output channels; a grouped conv, a ConvTranspose or a layer with a forward of its own
runs each candidate through the module itself, with the keyword arguments the model called it
with, e.g. a ConvTranspose's `output_size`).

Example:
    >>> import torch
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2)).eval()
    >>> x = torch.randn(5, 4)
    >>> r = Runner(net)
    >>> state = r.enter(x, "0")
    >>> ws = torch.stack([net[0].weight, torch.zeros_like(net[0].weight)])
    >>> out = r.suffix(state, candidate_outputs(net[0], state.input, ws), 2)
    >>> torch.allclose(out[:5], net(x), atol=1e-6), out.shape
    (True, torch.Size([10, 2]))
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import fx, nn

__all__ = ["CONVS", "PRUNABLE", "LayerState", "Runner", "batched_layer", "candidate_outputs", "prunable_layers"]


#: the layers DE prunes and the .prn quantizes: convolutions of every rank (audio, image, volume), their
#: transposed counterparts (decoders, U-Nets) and Linear
CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
PRUNABLE = (*CONVS, nn.Linear)
_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}


def prunable_layers(model: nn.Module) -> dict[str, nn.Module]:
    """Every Conv1d/2d/3d, ConvTranspose1d/2d/3d and Linear module by dotted name, in `named_modules` order."""
    return {n: m for n, m in model.named_modules() if isinstance(m, PRUNABLE)}


@dataclass
class LayerState:
    """What `Runner.enter` cached: the layer's input, and the activations read after it (fx) or the batch (hooks)."""

    name: str
    input: torch.Tensor
    env: dict[fx.Node, Any] | None
    x: torch.Tensor
    kwargs: dict[str, Any] = field(default_factory=dict)  # what else the model called the layer with


class _Prefix(fx.Interpreter):
    """Runs a traced model up to (not including) one node, keeping only the values still needed there."""

    def run_until(self, stop: fx.Node, order: dict[fx.Node, int], *args: Any) -> dict[fx.Node, Any]:
        """The live values just before `stop` runs: its inputs and whatever a later node reads.

        Everything else is freed as soon as its last user has run, so what is held is what crosses
        the cut (on MobileNetV2 at 512 images: the layer input and at most one residual, not the
        7.8 GB of every activation that keeping the whole forward pass held), and the part of the
        network after the cut is not run at all.
        """
        self.env = {}
        self.args_iter = iter(self.graph.process_inputs(*args))
        for node in self.graph.nodes:
            if node is stop:
                break
            self.env[node] = self.run_node(node)
            here = order[node]
            for used in node.all_input_nodes:
                if all(order[u] <= here for u in used.users):  # its last reader has run
                    self.env.pop(used, None)
            if not node.users:  # nothing ever reads it (e.g. a dead branch)
                self.env.pop(node, None)
        return self.env


class Runner:
    """Prefix-once, suffix-many evaluation of a model around one of its conv/Linear layers."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.modules = prunable_layers(model)
        self.gm: fx.GraphModule | None
        try:
            # the GraphModule shares the model's submodules, so weight edits are seen by both
            self.gm = fx.symbolic_trace(model)
        except Exception:  # noqa: BLE001 - any tracing failure means: use hooks
            self.gm = None
        self.nodes: dict[str, fx.Node] = {}
        if self.gm is not None:
            self.order = {n: i for i, n in enumerate(self.gm.graph.nodes)}
            calls = [n for n in self.gm.graph.nodes if n.op == "call_module" and n.target in self.modules]
            if len({n.target for n in calls}) != len(calls) or len(calls) != len(self.modules):
                self.gm = None  # a layer called twice or never: hooks handle it without assumptions
            else:
                self.nodes = {n.target: n for n in calls}

    @torch.no_grad()
    def enter(self, x: torch.Tensor, name: str) -> LayerState:
        """Run the model once on `x`; cache what the suffix of layer `name` needs."""
        if self.gm is not None:
            node = self.nodes[name]
            env = _Prefix(self.gm).run_until(node, self.order, x)
            kwargs = fx.node.map_arg(node.kwargs, lambda n: env[n])
            return LayerState(name, env[node.args[0]], env, x, dict(kwargs))
        seen: list[tuple[torch.Tensor, dict[str, Any]]] = []
        handle = self.modules[name].register_forward_pre_hook(lambda m, a, kw: seen.append((a[0], kw)),
                                                              with_kwargs=True)  # fmt: skip
        try:
            self.model(x)
        finally:
            handle.remove()
        return LayerState(name, seen[0][0], None, x, dict(seen[0][1]))

    def head(self, state: LayerState, n: int) -> LayerState:
        """The state `enter` would give for the first `n` images of `state.x` (a slice, no forward pass).

        Valid for models whose images do not interact (eval mode: no batch statistics).
        """
        batch = state.x.shape[0]
        env = None
        if state.env is not None:
            env = {
                node: value[:n]
                if node.op != "get_attr" and isinstance(value, torch.Tensor) and value.dim() and value.shape[0] == batch
                else value
                for node, value in state.env.items()
            }
        return LayerState(state.name, state.input[:n], env, state.x[:n], state.kwargs)

    @torch.no_grad()
    def suffix(self, state: LayerState, outputs: torch.Tensor, count: int) -> torch.Tensor:
        """Logits (count * B, classes) when the layer's output is `outputs` (count * B, ...)."""
        batch = state.x.shape[0]
        if self.gm is not None and state.env is not None:
            node = self.nodes[state.name]
            last = self.order[node]
            env: dict[fx.Node, Any] = {}
            ok = True
            for n, i in self.order.items():
                if i > last:
                    break
                if n is node:
                    env[n] = outputs
                    continue
                value = state.env.get(n)
                if any(self.order[u] > last for u in n.users):
                    if (
                        isinstance(value, torch.Tensor)
                        and n.op != "get_attr"
                        and value.dim()
                        and value.shape[0] == batch
                    ):
                        value = value.repeat(count, *([1] * (value.dim() - 1)))
                    elif isinstance(value, torch.Tensor) and n.op == "get_attr":
                        pass
                    else:
                        ok = False  # a shape or scalar computed from the batch crosses the cut
                        break
                env[n] = value
            if ok:
                return fx.Interpreter(self.gm).run(initial_env=env)
        handle = self.modules[state.name].register_forward_hook(lambda m, a, o: outputs)
        try:
            return self.model(state.x.repeat(count, *([1] * (state.x.dim() - 1))))
        finally:
            handle.remove()


_PLAIN_FORWARDS = {nn.Conv1d.forward, nn.Conv2d.forward, nn.Conv3d.forward, nn.Linear.forward}


def _own_forward(module: nn.Module) -> bool:
    """Whether `module` is a conv/Linear subclass whose forward is not torch's (it pads, scales or
    standardises on the way), so its output is not `F.conv*d` / `F.linear` of its weight."""
    return type(module).forward not in _PLAIN_FORWARDS


def batched_layer(module: nn.Module, inp: torch.Tensor, kwargs: dict[str, Any] | None = None):
    """A function `weights (P, *weight.shape) -> outputs (P * B, ...)` for `module` on the fixed input `inp`
    (and the keyword arguments `kwargs` the model calls it with)."""
    bias = module.bias
    batch = inp.shape[0]
    if _own_forward(module) or kwargs:  # timm's Conv2dSame pads in forward, NF-Nets standardise the weight
        # there, a ConvTranspose takes output_size: the module itself runs each candidate, or the scores
        # would be of a layer the model does not have
        return lambda weights: torch.cat(
            [torch.func.functional_call(module, {"weight": w}, (inp,), kwargs or {}, strict=False) for w in weights]
        )
    if isinstance(module, nn.Linear):

        def linear(weights: torch.Tensor) -> torch.Tensor:
            # (P, out, in) -> (P, 1, ..., 1, in, out): one matrix per candidate, broadcast over every leading
            # dim of the input (a Linear on tokens or channels-last maps reads (B, ..., in), not (B, in))
            w = weights.transpose(-1, -2).reshape(weights.shape[0], *([1] * (inp.dim() - 2)), *weights.shape[:0:-1])
            y = torch.matmul(inp.unsqueeze(0), w)  # (P, B, ..., out)
            if bias is not None:
                y = y + bias
            return y.reshape(weights.shape[0] * batch, *y.shape[2:])

        return linear
    conv: nn.Conv1d | nn.Conv2d | nn.Conv3d = module  # type: ignore[assignment]
    if conv.groups != 1 or conv.padding_mode != "zeros" or isinstance(conv.padding, str):
        return lambda weights: torch.cat([conv._conv_forward(inp, w, bias) for w in weights])
    out = conv.out_channels
    conv_nd = _CONV[conv.weight.dim() - 2]

    def convolve(weights: torch.Tensor) -> torch.Tensor:
        # the P candidates as one conv with P * out output channels: the runtime's own conv kernel,
        # 3-5x faster on CPU than im2col + a batched matmul (measured on ResNet-20's convs), and no
        # (B, C*kh*kw, L) column matrix held in memory
        count = weights.shape[0]
        stacked_bias = bias.repeat(count) if bias is not None else None
        y = conv_nd(inp, weights.reshape(count * out, *weights.shape[2:]), stacked_bias, conv.stride, conv.padding,
                    conv.dilation)  # fmt: skip
        spatial = y.shape[2:]
        return y.reshape(batch, count, out, *spatial).transpose(0, 1).reshape(count * batch, out, *spatial)

    return convolve


@torch.no_grad()
def candidate_outputs(
    module: nn.Module, inp: torch.Tensor, weights: torch.Tensor, kwargs: dict[str, Any] | None = None
) -> torch.Tensor:
    """Outputs of `module` for each of the P weight tensors in `weights` (P, *weight.shape), stacked
    along the batch: (P * B, ...)."""
    return batched_layer(module, inp, kwargs)(weights)
