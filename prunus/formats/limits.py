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

from prunus.errors import CorruptFileError, FormatError, first_line
from prunus.models.info import example_input

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


def _one_shape(shape: Any, where: str) -> tuple[int, ...]:
    if (
        not isinstance(shape, Sequence)
        or isinstance(shape, str)
        or not 1 <= len(shape) <= 6
        or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in shape)
    ):
        raise FormatError(
            f"{where} must be [C, H, W] of positive integers (one sample; also [C, L] or [C, D, H, W]), "
            f"or a list or dict of them for several inputs, got {str(shape)[:60]}"
        )
    return tuple(shape)


def check_input_shape(shape: Any, where: str = "input_shape") -> Any:
    """One sample's shape ((C, H, W), or any rank from 1 to 6) as positive ints, or a list / dict of
    them for a model with several inputs; at most `LIMITS["input_elements"]` elements in all.

    Returns the shape normalised (a tuple, a tuple of tuples, or a dict of tuples).
    """
    if isinstance(shape, Mapping) and shape:
        value: Any = {str(k): _one_shape(v, where) for k, v in shape.items()}
        sizes = [math.prod(v) for v in value.values()]
    elif (
        isinstance(shape, Sequence)
        and not isinstance(shape, str)
        and shape
        and all(isinstance(s, Sequence) and not isinstance(s, str) for s in shape)
    ):
        value = tuple(_one_shape(s, where) for s in shape)
        sizes = [math.prod(v) for v in value]
    else:
        value = _one_shape(shape, where)
        sizes = [math.prod(value)]
    if sum(sizes) > LIMITS["input_elements"]:
        raise CorruptFileError(
            f"{where} {_show(value)} has {sum(sizes):,} elements; the limit is {LIMITS['input_elements']:,}"
        )
    return value


def _show(value: Any) -> str:
    return str(value if not isinstance(value, tuple) or not value or isinstance(value[0], int) else list(value))


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
                x = example_input(shape, model, device="meta")
                if isinstance(x, dict):
                    model.eval()(**x)
                elif isinstance(x, tuple):
                    model.eval()(*x)
                else:
                    model.eval()(x)
        except (RuntimeError, ValueError, TypeError, IndexError) as exc:
            first = first_line(exc)
            raise CorruptFileError(f"input_shape {_show(shape)} does not fit the architecture: {first[:160]}") from None
        finally:
            for h in handles:
                h.remove()
        if total[0] > LIMITS["activation_elements"]:
            raise CorruptFileError(
                f"{where} with input {_show(shape)} needs {total[0]:,} activation elements per example; "
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
        except Exception:  # noqa: BLE001 - any failure (a model's own `assert H == 32`) rules this size out
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
