"""Training checkpoints: one file per run directory, written atomically, loaded without pickle.

The file holds only tensors, numbers, strings, lists and dicts, so it loads with
`torch.load(weights_only=True)`: a checkpoint from an untrusted source cannot execute code.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from prunus._io.atomic import atomic_path
from prunus.errors import CorruptFileError
from prunus.formats.header import KINDS, check_header, make_header

__all__ = ["load_checkpoint", "save_checkpoint"]
FORMAT = "prunus-checkpoint"
FORMAT_VERSION = KINDS[FORMAT]


# typed fields the trainer writes; methods' and optimizers' own state is checked by their loaders
_OPTIONAL = {"epoch": int, "global_step": int, "model": dict, "optimizer": dict, "config": dict}


def save_checkpoint(path: str | os.PathLike[str], state: dict[str, Any]) -> None:
    """Write `state` atomically (a crash mid-write keeps the previous checkpoint intact).

    Example:
        >>> import tempfile
        >>> p = Path(tempfile.mkdtemp()) / "checkpoint.pt"
        >>> save_checkpoint(p, {"epoch": 3})
        >>> load_checkpoint(p)["epoch"]
        3
    """
    payload = make_header(FORMAT, state)
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
    return check_header(state, FORMAT, optional=_OPTIONAL, where=str(path))
