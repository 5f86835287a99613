"""Training checkpoints: one file per run directory, written atomically, loaded without pickle.

The file holds only tensors, numbers, strings, lists and dicts, so it loads with
`torch.load(weights_only=True)`: a checkpoint from an untrusted source cannot execute code.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from prunus._atomic import atomic_path
from prunus.errors import CorruptFileError

__all__ = ["CHECKPOINT_NAME", "load_checkpoint", "save_checkpoint"]

CHECKPOINT_NAME = "checkpoint.pt"
FORMAT = "prunus-checkpoint"
FORMAT_VERSION = 1


def save_checkpoint(path: str | os.PathLike[str], state: dict[str, Any]) -> None:
    """Write `state` atomically (a crash mid-write keeps the previous checkpoint intact).

    Example:
        >>> import tempfile
        >>> p = Path(tempfile.mkdtemp()) / CHECKPOINT_NAME
        >>> save_checkpoint(p, {"epoch": 3})
        >>> load_checkpoint(p)["epoch"]
        3
    """
    payload = {"format": FORMAT, "format_version": FORMAT_VERSION, **state}
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load_checkpoint(path: str | os.PathLike[str], map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by `save_checkpoint`; corrupt files raise `CorruptFileError`."""
    path = Path(path)
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as exc:  # truncated zip, foreign pickle, ...: all mean "not a usable checkpoint"
        raise CorruptFileError(f"{path} is not a readable prunus checkpoint ({type(exc).__name__})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CorruptFileError(f"{path} is not a prunus checkpoint")
    if state.get("format_version", 0) > FORMAT_VERSION:
        raise CorruptFileError(f"{path} was written by a newer prunus (format {state['format_version']})")
    return state
