"""Calibration tensors from a file: `prunus compress --calib-file` for models whose inputs are not images.

The bundled datasets are images, so a 1-D signal model, a 3-D volume model or a model trained on
your own data could only be compressed from Python (`prunus.compress(model, x)`). This file format
lets the CLI do it: one safetensors file (tensors only, never pickle) holding

- `x` (required): inputs from the TRAINING split, (N, ...), floating point: what the search and the
  fine-tunes run on;
- `y` (optional): their labels, (N,), integers (without labels, accuracy is agreement with the
  input model's top-1);
- `holdout_x`, `holdout_y` (optional): inputs the model never trained on (validation split): the
  budget batch and its verdict come from them (`prunus.compress(holdout=)`);
- `test_x`, `test_y` (optional, both or neither): what `--test` scores the two models on.

Any other name is refused, so a misspelt `holdout_x` is not silently ignored.

Example:
    >>> import tempfile, torch
    >>> from safetensors.torch import save_file
    >>> path = tempfile.mkdtemp() + "/calib.safetensors"
    >>> save_file({"x": torch.randn(8, 2, 16), "y": torch.arange(8) % 3}, path)
    >>> cal = read_calibration(path)
    >>> tuple(cal.x.shape), cal.y.tolist()[:4], cal.holdout, cal.test
    ((8, 2, 16), [0, 1, 2, 0], None, None)
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from prunus.errors import ConfigError, CorruptFileError

__all__ = ["NAMES", "Calibration", "read_calibration"]

NAMES = ("x", "y", "holdout_x", "holdout_y", "test_x", "test_y")


@dataclass(frozen=True)
class Calibration:
    """The tensors of a calibration file: inputs and labels, and the optional held-out and test pairs."""

    x: torch.Tensor
    y: torch.Tensor | None
    holdout: tuple[torch.Tensor, torch.Tensor | None] | None
    test: tuple[torch.Tensor, torch.Tensor] | None

    @property
    def calib(self) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """What `prunus.compress` takes as `calib`: the inputs, or (inputs, labels)."""
        return self.x if self.y is None else (self.x, self.y)


def _inputs(path: Path, name: str, t: torch.Tensor) -> torch.Tensor:
    if not t.is_floating_point() or t.dim() < 2 or t.shape[0] < 1:
        raise ConfigError(
            f"{path}: {name!r} must be floating-point inputs (N, ...) with at least one sample, "
            f"got {t.dtype} of shape {tuple(t.shape)}"
        )
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t


def _labels(path: Path, name: str, t: torch.Tensor | None, n: int) -> torch.Tensor | None:
    if t is None:
        return None
    if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool or tuple(t.shape) != (n,):
        raise ConfigError(f"{path}: {name!r} must be {n} integer labels (one per input), got {t.dtype} of shape "
                          f"{tuple(t.shape)}")  # fmt: skip
    if n and int(t.min()) < 0:
        raise ConfigError(f"{path}: {name!r} holds a negative label ({int(t.min())})")
    return t.long()


def read_calibration(path: str | os.PathLike[str]) -> Calibration:
    """Read and check a calibration file (see the module docstring for its tensors).

    Raises:
        CorruptFileError: the file is missing, not a regular file, or not a readable safetensors file.
        ConfigError: a tensor is missing, misnamed, of the wrong kind, or its count does not match.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    if not path.exists():
        raise CorruptFileError(f"{path}: no such calibration file")
    if not path.is_file():  # a FIFO or a device would block or never end
        raise CorruptFileError(f"{path} is not a regular file")
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CorruptFileError(f"{path} is not a safetensors file ({exc})".splitlines()[0]) from None
    unknown = sorted(set(tensors) - set(NAMES))
    if unknown:
        raise ConfigError(f"{path}: unknown tensor(s) {', '.join(map(repr, unknown))}; a calibration file holds "
                          f"{', '.join(NAMES)}")  # fmt: skip
    if "x" not in tensors:
        raise ConfigError(f"{path} has no 'x' tensor (the calibration inputs, N x ...)")
    x = _inputs(path, "x", tensors["x"])
    y = _labels(path, "y", tensors.get("y"), x.shape[0])
    holdout = None
    if "holdout_x" in tensors:
        hx = _inputs(path, "holdout_x", tensors["holdout_x"])
        holdout = (hx, _labels(path, "holdout_y", tensors.get("holdout_y"), hx.shape[0]))
    elif "holdout_y" in tensors:
        raise ConfigError(f"{path} has 'holdout_y' without 'holdout_x'")
    test = None
    if ("test_x" in tensors) != ("test_y" in tensors):
        raise ConfigError(f"{path}: 'test_x' and 'test_y' go together (the test accuracy needs both)")
    if "test_x" in tensors:
        tx = _inputs(path, "test_x", tensors["test_x"])
        ty = _labels(path, "test_y", tensors["test_y"], tx.shape[0])
        assert ty is not None
        test = (tx, ty)
    for name, t in (("x", x), ("holdout_x", holdout[0] if holdout else None), ("test_x", test[0] if test else None)):
        if t is not None and t.shape[1:] != x.shape[1:]:
            raise ConfigError(f"{path}: {name!r} holds inputs of shape {tuple(t.shape[1:])}, 'x' of "
                              f"{tuple(x.shape[1:])}")  # fmt: skip
        if t is not None and not bool(torch.isfinite(t).all()):
            raise ConfigError(f"{path}: {name!r} holds NaN or infinite values")
    return Calibration(x, y, holdout, test)
