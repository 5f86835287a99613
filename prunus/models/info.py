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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from prunus.errors import ConfigError

__all__ = ["INFO_ATTR", "ModelInfo", "example_input", "get_info", "set_info", "update_info"]

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
        input_shape: (C, H, W) of one input, () when unknown; needed to trace and to reload a
            pruned model.
        history: The structure engine's pruning history (see `prunus.structure.history`).
        metrics: Numbers saved with the model (accuracy, MACs, ...).
    """

    arch: Mapping[str, Any] | None = None
    stem: str | None = None
    classifier: str | None = None
    input_shape: tuple[int, ...] = ()
    history: tuple[dict[str, Any], ...] = ()
    metrics: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # normalise so that equal facts compare equal (lists from JSON, tuples from code)
        object.__setattr__(self, "input_shape", tuple(int(s) for s in self.input_shape or ()))
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


def example_input(
    input_shape: Sequence[int], model: nn.Module | None = None, *, device: torch.device | str | None = None
) -> torch.Tensor:
    """A batch of one all-zero sample, for tracing and counting (shapes only).

    Zeros rather than `torch.randn`: building an example must not advance the global random
    generator, or merely loading a model would change every random number drawn after it.

    Args:
        input_shape: `(C, H, W)`, or `(1, C, H, W)` with the batch dimension.
        model: When given, the input takes the dtype and device of its first floating tensor.
        device: Overrides the device.

    Raises:
        ConfigError: the shape is not 3 or 4 positive integers with a batch of 1.

    Example:
        >>> example_input((1, 28, 28)).shape
        torch.Size([1, 1, 28, 28])
        >>> float(example_input((1, 1, 2, 2)).abs().sum())
        0.0
    """
    shape = tuple(input_shape)
    if not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in shape):
        raise ConfigError(f"input_shape must be positive integers, got {input_shape!r}")
    if len(shape) == 3:
        shape = (1, *shape)
    elif len(shape) != 4 or shape[0] != 1:
        raise ConfigError(f"input_shape must be (C, H, W) or (1, C, H, W), got {input_shape!r}")
    dtype = torch.float32
    if model is not None:
        tensors = [*model.parameters(), *model.buffers()]
        floats = [t for t in tensors if t.is_floating_point()]
        if device is None and tensors:
            device = tensors[0].device
        if floats:
            dtype = floats[0].dtype
    return torch.zeros(shape, device=device, dtype=dtype)
