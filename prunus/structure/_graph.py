"""The only module that talks to Torch-Pruning: tracing, coupled-index lookup and the cut itself.

Everything else in `prunus.structure` sees plain names, roles and index lists, so Torch-Pruning
can be replaced by rewriting this file alone. Torch-Pruning traces one forward pass with autograd
and links every module whose channels must change together (a conv's output rows, the BN after it,
the adds of a residual stream, the input slices of every consumer, the flatten blocks of a Linear).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch_pruning as tp
from torch import nn

from prunus.errors import ConfigError
from prunus.models.info import get_info

__all__ = ["FilterFn", "Graph", "Position", "StructureError", "build_graph", "check_filter_fn", "default_filter"]

#: `filter_fn(module, name) -> bool`: True when pruning may cut the output channels of `module`
FilterFn = Callable[[nn.Module, str], bool]

_OPS = tp.ops.OPTYPE

# Module types whose channel slices we know how to mask, score, merge and cut exactly.
_SUPPORTED = (nn.modules.conv._ConvNd, nn.Linear, nn.modules.batchnorm._BatchNorm, nn.PReLU)
# Types Torch-Pruning can cut but whose exactness (compact == masked) we do not guarantee: a group
# containing one of them is reported as not prunable instead of being cut approximately.
_KNOWN_UNSUPPORTED = (nn.LayerNorm, nn.GroupNorm, nn.modules.instancenorm._InstanceNorm, nn.Embedding, nn.LSTM)
_KNOWN_UNSUPPORTED += (nn.MultiheadAttention,)


class StructureError(ConfigError):
    """A structural edit is impossible or unsafe; the message names the group or module and the fix."""


@dataclass(frozen=True)
class Position:
    """One group item as Torch-Pruning reports it, translated to names.

    `kind` is "module" (an nn.Module we may cut), "output" (the model's output), "parameter"
    (a bare per-channel nn.Parameter of a user module, e.g. a layer scale; `name` is its full
    dotted name), "other" (a structural no-op like add or cat).
    """

    kind: str
    name: str
    module: Any
    is_out: bool
    index: tuple[int, ...]
    channel: tuple[int, ...]
    is_sink: bool


class Graph:
    """A traced model: Torch-Pruning's DependencyGraph plus the names we need around it."""

    def __init__(self, model: nn.Module, dg: Any, ignored: frozenset[str], opaque: frozenset[str]) -> None:
        self.model = model
        self.dg = dg
        self.ignored = ignored  # names whose output channels are never cut
        self.opaque = opaque  # ignored modules with parameters the engine cannot see into
        self.names = {m: n for n, m in model.named_modules()}
        self.param_names = {p: n for n, p in model.named_parameters()}
        #: (C, H, W) of one traced input when the example was a single tensor; edits record it on the
        #: model (`ModelInfo.input_shape`) because replaying them when loading needs an input to trace
        self.input_shape: tuple[int, ...] | None = None

    def has(self, module: nn.Module) -> bool:
        """Whether `module` took part in the traced forward pass."""
        return module in self.dg.module2node

    def out_channels(self, module: nn.Module) -> int:
        """Current output width of a conv or linear module."""
        return int(self.dg.get_out_channels(module))

    def _out_fn(self, module: nn.Module) -> Any:
        return self.dg.get_pruner_of_module(module).prune_out_channels

    def positions(self, root: nn.Module, idxs: Sequence[int] | None = None) -> list[Position]:
        """Every slice coupled to output channels `idxs` (default: all) of `root`, with names."""
        if idxs is None:
            idxs = range(self.out_channels(root))
        tp_group = self.dg.get_pruning_group(root, self._out_fn(root), list(idxs))
        result = []
        for item in tp_group.items:
            node = item.dep.target
            module = node.module
            pairs = sorted(zip(item.idxs, item.root_idxs, strict=True))
            index = tuple(int(i) for i, _ in pairs)
            channel = tuple(int(r) for _, r in pairs)
            is_out = bool(self.dg.is_out_channel_pruning_fn(item.dep.handler))
            sink = not node.outputs
            if node.type == _OPS.OUTPUT:
                result.append(Position("output", "(model output)", module, is_out, index, channel, True))
            elif node.type == _OPS.PARAMETER:
                name = self.param_names.get(module, "")
                result.append(Position("parameter", name, module, is_out, index, channel, sink))
            elif isinstance(module, nn.Module) and module in self.names:
                result.append(Position("module", self.names[module], module, is_out, index, channel, sink))
            else:
                result.append(Position("other", str(module), module, is_out, index, channel, sink))
        return result

    def prune(self, root: nn.Module, idxs: Sequence[int]) -> None:
        """Physically remove output channels `idxs` of `root` and every slice coupled to them."""
        tp_group = self.dg.get_pruning_group(root, self._out_fn(root), sorted(int(i) for i in idxs))
        with torch.no_grad():
            tp_group.prune(record_history=False)


def _display(name: str) -> str:
    return repr(name) if name else "(the model itself)"


def _default_ignored(model: nn.Module) -> tuple[str, ...]:
    declared = get_info(model).ignored
    if declared:
        return declared
    # no declaration: protect the input conv and the classifier, as every zoo model does
    convs = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    linears = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    return tuple(convs[:1]) + tuple(linears[-1:])


def default_filter(model: nn.Module) -> FilterFn:
    """The layer filter used when none is given: every layer except the model's stem and classifier.

    The stem and classifier are the ones declared in the model's `ModelInfo` (set by
    `create_model`); a model without a declaration gets its first Conv2d and its last Linear.

    Example:
        >>> import prunus
        >>> model = prunus.create_model("resnet20")
        >>> keep = default_filter(model)
        >>> keep(model.conv1, "conv1"), keep(model.layer1[0].conv1, "layer1.0.conv1"), keep(model.fc, "fc")
        (False, True, False)
    """
    fixed = frozenset(_default_ignored(model))
    return lambda module, name: name not in fixed


def check_filter_fn(filter_fn: object, owner: str = "filter_fn") -> FilterFn | None:
    """`filter_fn` itself when it is None or callable; otherwise a `ConfigError` (e.g. a name from YAML)."""
    if filter_fn is not None and not callable(filter_fn):
        raise ConfigError(f"{owner} must be a callable filter_fn(module, name) -> bool, got {filter_fn!r}")
    return filter_fn  # type: ignore[return-value]


def _resolve_ignored(
    model: nn.Module, ignored_layers: Iterable[str | nn.Module] | None, filter_fn: FilterFn | None = None
) -> frozenset[str]:
    names = {m: n for n, m in model.named_modules()}
    if ignored_layers is None and filter_fn is None:
        ignored_layers = _default_ignored(model)  # = default_filter(model), by name
    result = set()
    if filter_fn is not None:
        # asked of every module that owns parameters: writers, and modules the engine cannot see into
        for name, module in model.named_modules():
            if any(True for _ in module.parameters(recurse=False)) and not filter_fn(module, name):
                result.add(name)
    if ignored_layers is None:
        return frozenset(result)
    for item in ignored_layers:
        if isinstance(item, nn.Module):
            if item not in names:
                raise StructureError(f"ignored layer {type(item).__name__} is not a submodule of the model")
            result.add(names[item])
        else:
            try:
                model.get_submodule(str(item))
            except AttributeError:
                raise StructureError(f"ignored layer {item!r} is not a module of the model") from None
            result.add(str(item))
    return frozenset(result)


def channel_dim(p: torch.Tensor) -> int | None:
    """The one dimension of a bare per-channel parameter (shape (C,), (C, 1, 1), (1, C, 1, 1)), else None."""
    dims = [d for d, size in enumerate(p.shape) if size > 1]
    return dims[0] if len(dims) == 1 else None


def _opaque_modules(
    model: nn.Module, ignored: frozenset[str], strict: bool
) -> tuple[frozenset[str], dict[nn.Parameter, int]]:
    """Modules owning parameters we cannot cut (an error unless ignored), and the bare per-channel ones we can.

    A user module's own parameter with exactly one dimension longer than 1 (a ConvNeXt-style layer
    scale `x * self.gamma[:, None, None]`, a learnable per-channel bias) is handed to
    Torch-Pruning as an unwrapped parameter cut along that dimension, so it follows its channels.
    """
    opaque, bare = set(), {}
    for name, module in model.named_modules():
        own = list(module.parameters(recurse=False))
        if not own or isinstance(module, _SUPPORTED + _KNOWN_UNSUPPORTED):
            continue
        is_ignored = any(name == i or name.startswith(i + ".") for i in ignored)
        dims = [channel_dim(p) for p in own]
        if not is_ignored and all(d is not None for d in dims):
            bare.update(zip(own, dims))
            continue
        if strict and not is_ignored:
            # Torch-Pruning would treat this module as element-wise and cut its parameters along a
            # guessed dimension: silently wrong. Refuse instead, and say how to proceed.
            raise StructureError(
                f"module {_display(name)} ({type(module).__name__}) has parameters the structure engine cannot "
                f"prune (only per-channel vectors are followed); pass ignored_layers including {name!r} to keep "
                "every channel it touches"
            )
        opaque.add(name)
    return frozenset(opaque), bare


def _forward(model: nn.Module, inputs: Any) -> Any:
    # Torch-Pruning's own fallback tries model(*inputs) first, which unpacks a lone tensor along
    # the batch dimension (a conv happily runs on the unbatched sample) and swallows real errors.
    try:
        if isinstance(inputs, dict):
            return model(**inputs)
        if isinstance(inputs, (tuple, list)):
            return model(*inputs)
        return model(inputs)
    except Exception as exc:  # the user's model and inputs: say which step failed, keep the cause
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise StructureError(f"cannot trace the model on the example inputs: {first}") from exc


def build_graph(
    model: nn.Module,
    example_inputs: Any,
    ignored_layers: Iterable[str | nn.Module] | None = None,
    *,
    filter_fn: FilterFn | None = None,
    strict: bool = True,
) -> Graph:
    """Trace `model` once on `example_inputs` (train/eval modes are restored afterwards).

    A layer's output channels are cut only if `filter_fn(module, name)` is true and its name is not
    in `ignored_layers`; with neither given, `default_filter(model)` applies.
    """
    ignored = _resolve_ignored(model, ignored_layers, check_filter_fn(filter_fn))
    opaque, bare = _opaque_modules(model, ignored, strict)
    modes = {m: m.training for m in model.modules()}  # the tracer switches to eval and leaves it there
    try:
        with torch.enable_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # its warnings are about what we check ourselves
            dg = tp.DependencyGraph().build_dependency(
                model,
                example_inputs=example_inputs,
                forward_fn=_forward,
                verbose=False,
                unwrapped_parameters=list(bare.items()),
            )
    finally:
        for m, mode in modes.items():
            m.training = mode
    graph = Graph(model, dg, ignored, opaque)
    if isinstance(example_inputs, torch.Tensor) and example_inputs.dim() >= 2:
        graph.input_shape = tuple(int(d) for d in example_inputs.shape[1:])
    return graph
