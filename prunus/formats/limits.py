"""Bounds on what a file (model.json, a config) may ask prunus to allocate, checked before allocating.

A model directory from elsewhere names an architecture, its arguments and an input shape; prunus
builds it, replays its pruning history on an example input and loads the weights. Each of those
allocates memory chosen by the file. `build_bounded` builds the architecture on PyTorch's "meta"
device first (shapes only, no storage), counts its parameters and runs one forward pass there
to size every activation, and refuses the file when any of `LIMITS` is exceeded or when the input
shape does not fit the architecture (wrong channel count, a LeNet's fixed input size). Only then
is the real model built.

Example:
    >>> from prunus.models import create_model
    >>> build_bounded(lambda: create_model("lenet5", in_channels=1), (1, 28, 28)) > 0
    True
    >>> build_bounded(lambda: create_model("lenet5", in_channels=1), (3, 28, 28))
    Traceback (most recent call last):
    ...
    prunus.errors.CorruptFileError: input_shape (3, 28, 28) does not fit the architecture: ...
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from prunus.errors import CorruptFileError, FormatError

__all__ = [
    "LIMITS",
    "build_bounded",
    "check_dtypes",
    "check_finite_weights",
    "check_input_shape",
    "check_kwargs",
    "replay_shape",
]

LIMITS = {
    "input_elements": 1 << 24,  # C*H*W of one example: 16.8M (a 3x2048x2048 image is 12.6M)
    "parameters": 1 << 30,  # 1.07e9 parameters = 4.3 GB of float32 weights
    "activation_elements": 1 << 29,  # summed over every module output for one example: 2 GB float32
}


def check_input_shape(shape: Any, where: str = "input_shape") -> tuple[int, int, int]:
    """(C, H, W) as positive ints whose product is at most `LIMITS["input_elements"]`."""
    if (
        not isinstance(shape, Sequence)
        or isinstance(shape, str)
        or len(shape) != 3
        or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in shape)
    ):
        raise FormatError(f"{where} must be [C, H, W] of positive integers, got {str(shape)[:60]}")
    if math.prod(shape) > LIMITS["input_elements"]:
        raise CorruptFileError(
            f"{where} {tuple(shape)} has {math.prod(shape):,} elements; the limit is {LIMITS['input_elements']:,}"
        )
    return (shape[0], shape[1], shape[2])


def check_kwargs(kwargs: Any, where: str = "arch.kwargs") -> dict[str, Any]:
    """A dict of constructor arguments holding only JSON scalars/lists with finite numbers."""
    if not isinstance(kwargs, Mapping):
        raise FormatError(f"{where} must be a dict, got {type(kwargs).__name__}")

    def ok(value: Any) -> bool:
        if isinstance(value, float):
            return math.isfinite(value)
        if isinstance(value, (list, tuple)):
            return all(ok(v) for v in value)
        if isinstance(value, Mapping):
            return all(isinstance(k, str) and ok(v) for k, v in value.items())
        return value is None or isinstance(value, (bool, int, str))

    for key, value in kwargs.items():
        if not ok(value):
            raise FormatError(f"{where}.{key} has an unusable value {str(value)[:40]}")
    return dict(kwargs)


def build_bounded(build: Callable[[], nn.Module], input_shape: Sequence[int] | None, where: str = "model") -> int:
    """Build `build()` on the meta device and check it against `LIMITS`; returns its parameter count.

    Raises:
        CorruptFileError: too many parameters or activations, arguments the builder rejects, or an
            input shape that does not fit the architecture.
    """
    try:
        with torch.device("meta"):
            model = build()
    except (TypeError, ValueError, RuntimeError, KeyError, AttributeError, ZeroDivisionError) as exc:
        if isinstance(exc, CorruptFileError) or type(exc).__module__.startswith("prunus"):
            raise
        raise CorruptFileError(f"{where}: the architecture cannot be built from these arguments ({exc})") from None
    params = sum(p.numel() for p in model.parameters()) + sum(b.numel() for b in model.buffers())
    if params > LIMITS["parameters"]:
        raise CorruptFileError(f"{where} asks for {params:,} parameters; the limit is {LIMITS['parameters']:,}")
    if input_shape:
        shape = check_input_shape(input_shape)
        total = [0]

        def count(_module: nn.Module, _inputs: Any, output: Any) -> None:
            if isinstance(output, torch.Tensor):
                total[0] += output.numel()

        handles = [m.register_forward_hook(count) for m in model.modules()]
        try:
            with torch.no_grad():
                model.eval()(torch.empty(1, *shape, device="meta"))
        except (RuntimeError, ValueError, TypeError, IndexError) as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise CorruptFileError(f"input_shape {shape} does not fit the architecture: {first[:160]}") from None
        finally:
            for h in handles:
                h.remove()
        if total[0] > LIMITS["activation_elements"]:
            raise CorruptFileError(
                f"{where} with input {shape} needs {total[0]:,} activation elements per example; "
                f"the limit is {LIMITS['activation_elements']:,}"
            )
    return params


def check_dtypes(state: Mapping[str, torch.Tensor], model: nn.Module, where: str = "weights") -> None:
    """Refuse weights whose dtype differs from the model's (an int8 tensor is not silently cast)."""
    expected = model.state_dict()
    for name, tensor in state.items():
        want = expected.get(name)
        if want is not None and tensor.dtype != want.dtype:
            raise CorruptFileError(
                f"{where}: tensor {name!r} is {str(tensor.dtype).replace('torch.', '')}, "
                f"the model expects {str(want.dtype).replace('torch.', '')}; refusing to cast it"
            )


#: spatial sizes tried, smallest first, for replaying a pruning history (see `replay_shape`)
REPLAY_SIDES = (32, 64, 128)


def replay_shape(build: Callable[[], nn.Module], input_shape: Sequence[int]) -> tuple[int, ...]:
    """The smallest input shape a pruning history can be replayed at, for the model `build()` makes.

    Replaying traces the model on an example input, and a trace at a large input costs seconds per
    megapixel: a 6 KB file whose header claims 2048x2048 must not take 40 s to load. The channel
    coupling a history refers to does not depend on the spatial size, so the history is replayed at
    the first of `REPLAY_SIDES` (spatial sides capped at it) whose meta-device forward gives the
    same output shape as `input_shape` does (a flatten -> Linear accepts only its own size, so such
    a model falls back to `input_shape`).

    Example:
        >>> from prunus.models import create_model
        >>> replay_shape(lambda: create_model("resnet20", in_channels=1), (1, 2048, 2048))
        (1, 32, 32)
        >>> replay_shape(lambda: create_model("lenet5", in_channels=1), (1, 28, 28))
        (1, 28, 28)
    """
    shape = tuple(int(s) for s in input_shape)
    with torch.device("meta"):
        model = build().eval()

    def out_shape(s: tuple[int, ...]) -> Any:
        try:
            with torch.no_grad():
                out = model(torch.empty(1, *s, device="meta"))
        except (RuntimeError, ValueError, TypeError, IndexError):
            return None
        return tuple(out.shape) if isinstance(out, torch.Tensor) else None

    want = out_shape(shape)
    if want is None:
        return shape
    for side in REPLAY_SIDES:
        small = (shape[0], *(min(d, side) for d in shape[1:]))
        if small != shape and out_shape(small) == want:
            return small
    return shape


def check_finite_weights(state: Mapping[str, torch.Tensor], where: str = "weights") -> None:
    """Refuse floating tensors holding NaN or +-inf: such a file cannot give a usable model."""
    for name, tensor in state.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise CorruptFileError(f"{where}: tensor {name!r} holds NaN or infinite values; refusing to load it")
