"""What prunus knows about a model, in one typed object attached to it: `ModelInfo`.

`create_model`, `prunus.load`, the structure engine and the recipes each record a fact about a
model (how to rebuild it, which layers pruning keeps, its input shape, its pruning history, its
saved metrics). They all live in one frozen `ModelInfo` stored as `model.prunus_info`, read with
`get_info(model)` and changed with `update_info(model, **fields)`, never by setting attributes
one by one. A deep copy of the model copies it; `prunus.save` writes it to model.json.

Models from before this object (or user classes) may still declare the old attributes
`prunus_ignored = (stem, classifier)`, `prunus_arch`, `prunus_input_shape`, `prunus_metrics` or
`prunus_history`; `get_info` reads them, with a DeprecationWarning, when no `prunus_info` is set.

Example:
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten(), nn.Linear(4 * 26 * 26, 10))
    >>> get_info(net).ignored
    ()
    >>> info = update_info(net, stem="0", classifier="2", input_shape=(1, 28, 28))
    >>> get_info(net).ignored, get_info(net).input_shape
    (('0', '2'), (1, 28, 28))
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from prunus.errors import ConfigError

__all__ = [
    "INFO_ATTR",
    "ModelInfo",
    "example_input",
    "get_info",
    "normalize_shape",
    "sample_rank",
    "set_info",
    "update_info",
]

#: the one attribute prunus sets on a model
INFO_ATTR = "prunus_info"

# old attribute -> ModelInfo field it maps to (read for compatibility only)
_LEGACY = ("prunus_arch", "prunus_ignored", "prunus_input_shape", "prunus_metrics", "prunus_history")


@dataclass(frozen=True)
class ModelInfo:
    """Facts about one model; every field is JSON-able and optional.

    Attributes:
        arch: How to rebuild the dense model: `{"name": <registry name>, "kwargs": {...}}` or
            `{"factory": "package.module:function", "kwargs": {...}}`; None when unknown.
        stem: Dotted name of the input layer pruning leaves alone by default (None: unknown).
        classifier: Dotted name of the output layer pruning leaves alone by default.
        input_shape: One input sample's shape ((C, H, W), or (C, L), (C, D, H, W)); for a model
            with several inputs a tuple of shapes, or a dict of them for keyword inputs; () when
            unknown. Needed to trace and to reload a pruned model.
        history: The structure engine's pruning history (see `prunus.structure.history`).
        metrics: Numbers saved with the model (accuracy, MACs, ...).
    """

    arch: Mapping[str, Any] | None = None
    stem: str | None = None
    classifier: str | None = None
    input_shape: Any = ()
    history: tuple[dict[str, Any], ...] = ()
    metrics: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # normalise so that equal facts compare equal (lists from JSON, tuples from code)
        object.__setattr__(self, "input_shape", normalize_shape(self.input_shape or ()))
        object.__setattr__(self, "history", tuple(self.history or ()))
        object.__setattr__(self, "metrics", dict(self.metrics or {}))

    @property
    def ignored(self) -> tuple[str, ...]:
        """The declared stem and classifier names (those that are set), in that order."""
        return tuple(n for n in (self.stem, self.classifier) if n is not None)


def _legacy(model: nn.Module) -> ModelInfo | None:
    found = {k: model.__dict__[k] for k in _LEGACY if k in model.__dict__}
    found.update({k: getattr(type(model), k) for k in _LEGACY if k not in found and hasattr(type(model), k)})
    if not found:
        return None
    warnings.warn(
        f"{type(model).__name__} sets {', '.join(sorted(found))}; prunus now keeps model facts in one "
        "ModelInfo: use prunus.models.info.update_info(model, ...) (the old attributes go in a later release)",
        DeprecationWarning,
        stacklevel=3,
    )
    ignored = tuple(found.get("prunus_ignored") or ())
    return ModelInfo(
        arch=found.get("prunus_arch"),
        stem=ignored[0] if len(ignored) > 0 else None,
        classifier=ignored[1] if len(ignored) > 1 else None,
        input_shape=tuple(found.get("prunus_input_shape") or ()),
        history=tuple(found.get("prunus_history") or ()),
        metrics=found.get("prunus_metrics") or {},
    )


def get_info(model: nn.Module) -> ModelInfo:
    """The model's `ModelInfo` (an empty one when nothing is known). Never modifies the model."""
    info = model.__dict__.get(INFO_ATTR)
    if isinstance(info, ModelInfo):
        return info
    return _legacy(model) or ModelInfo()


def set_info(model: nn.Module, info: ModelInfo) -> ModelInfo:
    """Attach `info` to `model` (replacing what was there); returns `info`."""
    if not isinstance(info, ModelInfo):
        raise TypeError(f"expected a ModelInfo, got {type(info).__name__}")
    # plain attribute (not a submodule/buffer), so it is in __dict__ and travels with deepcopy
    setattr(model, INFO_ATTR, info)
    return info


def update_info(model: nn.Module, **changes: Any) -> ModelInfo:
    """Replace some fields of the model's `ModelInfo` and attach the result; returns it.

    Example:
        >>> from torch import nn
        >>> m = nn.Linear(3, 2)
        >>> update_info(m, metrics={"acc": 0.5}).metrics
        {'acc': 0.5}
    """
    return set_info(model, dataclasses.replace(get_info(model), **changes))


def normalize_shape(value: Any) -> Any:
    """An input shape as prunus stores it: a tuple of ints (one input), a tuple of such tuples
    (several positional inputs) or a dict of them (keyword inputs); () when unknown.

    Example:
        >>> normalize_shape([1, 28, 28]), normalize_shape([[3, 8, 8], [1, 8, 8]]), normalize_shape({"x": [2, 16]})
        ((1, 28, 28), ((3, 8, 8), (1, 8, 8)), {'x': (2, 16)})
    """
    if value is None:
        return ()
    if isinstance(value, Mapping):
        return {str(k): tuple(int(s) for s in v) for k, v in value.items()}
    items = list(value)
    if items and all(isinstance(i, (list, tuple)) for i in items):
        return tuple(tuple(int(s) for s in i) for i in items)
    return tuple(int(s) for s in items)


def sample_rank(model: nn.Module | None) -> int | None:
    """Dimensions of one input sample of `model` as its first conv reads it ((C, L): 2, (C, H, W): 3, ...)."""
    if model is None:
        return None
    conv = next((m for m in model.modules() if isinstance(m, nn.modules.conv._ConvNd)), None)
    return None if conv is None else len(conv.kernel_size) + 1


def example_input(input_shape: Any, model: nn.Module | None = None, *, device: torch.device | str | None = None) -> Any:
    """A batch of one all-zero sample, for tracing and counting (shapes only).

    Zeros rather than `torch.randn`: building an example must not advance the global random
    generator, or merely loading a model would change every random number drawn after it.

    Args:
        input_shape: One sample's shape: `(C, H, W)` (or `(C, L)`, `(C, D, H, W)`, any rank), or
            with the batch dimension, `(1, C, H, W)`; or a tuple / dict of per-sample shapes for
            a model with several inputs (then a tuple / dict of tensors is returned).
        model: When given, the input takes the dtype and device of its first floating tensor, and
            its first conv tells a batched shape from an unbatched one ((1, 8, 8, 8) is one
            volume for a Conv3d, a batch of one image for a Conv2d).
        device: Overrides the device.

    Raises:
        ConfigError: the shape is not positive integers, or does not have the rank the model reads.

    Example:
        >>> example_input((1, 28, 28)).shape
        torch.Size([1, 1, 28, 28])
        >>> float(example_input((1, 1, 2, 2)).abs().sum())
        0.0
        >>> [t.shape for t in example_input(((3, 8, 8), (2, 16)))]
        [torch.Size([1, 3, 8, 8]), torch.Size([1, 2, 16])]
    """
    if isinstance(input_shape, torch.Tensor):  # `count(model, x)`: the tensor was meant as example_inputs
        raise ConfigError(
            f"input_shape is one sample's shape such as (3, 32, 32), not a tensor (got a tensor of shape "
            f"{tuple(input_shape.shape)}); pass a tensor as example_inputs="
        )
    if isinstance(input_shape, Mapping):
        return {k: _one(tuple(v), model, device, batched=False) for k, v in input_shape.items()}
    shape = tuple(input_shape)
    if shape and all(isinstance(s, (list, tuple)) for s in shape):
        return tuple(_one(tuple(s), model, device, batched=False) for s in shape)
    return _one(shape, model, device)


def _one(input_shape: tuple, model: nn.Module | None, device: Any, batched: bool | None = None) -> torch.Tensor:
    shape = tuple(input_shape)
    if not shape or not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in shape):
        raise ConfigError(f"input_shape must be positive integers, got {input_shape!r}")
    rank = sample_rank(model)
    if batched is False:
        shape = (1, *shape)
    elif rank is None:  # no conv to ask: a 4-tuple is a batch of one image, as it always was
        if len(shape) == 4 and shape[0] != 1:
            raise ConfigError(f"input_shape must be (C, H, W) or (1, C, H, W), got {input_shape!r}")
        shape = shape if len(shape) == 4 else (1, *shape)
    elif len(shape) == rank:
        shape = (1, *shape)
    elif not (len(shape) == rank + 1 and shape[0] == 1):
        form = {2: "C, L", 3: "C, H, W", 4: "C, D, H, W"}.get(rank, ", ".join(["n"] * rank))
        raise ConfigError(f"input_shape must be ({form}) or (1, {form}) for this model, got {input_shape!r}")
    dtype = torch.float32
    if model is not None:
        tensors = [*model.parameters(), *model.buffers()]
        floats = [t for t in tensors if t.is_floating_point()]
        if device is None and tensors:
            device = tensors[0].device
        if floats:
            dtype = floats[0].dtype
    return torch.zeros(shape, device=device, dtype=dtype)
