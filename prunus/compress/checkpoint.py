"""The DE search's checkpoint: one safetensors file, replaced atomically after every cycle.

A killed compression resumes from the last finished cycle and ends exactly where an
uninterrupted one would (`search(resume=...)` restores the masks and the generator state). The
file holds tensors only (no pickle): one bool tensor per layer (`mask.<layer>`, True = kept) and
the search generator's state (`rng`, uint8), the student's whole state (`state.<key>`) when a
recovery between cycles trained it (`SearchState.weights`), and a JSON header (`formats.header` kind
`prunus-compress-checkpoint`) with the cycle, the search log and KL, and a fingerprint of the job
(settings, targets, input weights, calibration images and teacher logits), and after the search
the budget escalation's missed rungs (`attempts`). A checkpoint of
another job (a changed model, recipe or seed) is ignored and the search starts over; a file that
is not a well-formed checkpoint is refused with a `CorruptFileError`.

Example:
    >>> import tempfile, torch
    >>> path = tempfile.mkdtemp() + "/ckpt.safetensors"
    >>> state = SearchState(1, {"fc": torch.tensor([True, False])}, torch.Generator().get_state(), [], 0.5)
    >>> save_checkpoint(path, state, "abc", cycles=2)
    >>> back = load_checkpoint(path, "abc", {"fc": (2,)}, cycles=2)
    >>> back.cycle, back.masks["fc"].tolist(), back.kl
    (1, [True, False], 0.5)
    >>> load_checkpoint(path, "another job", {"fc": (2,)}, cycles=2) is None
    True
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import struct
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from prunus._io.atomic import crash_point, write_bytes
from prunus.compress.search import SearchState
from prunus.errors import CorruptFileError
from prunus.formats.header import check_header, make_header

__all__ = ["KIND", "fingerprint", "load_checkpoint", "save_checkpoint"]

KIND = "prunus-compress-checkpoint"
_MASK = "mask."
_RNG = "rng"
_STATE = "state."
_MAX_HEADER = 64 << 20  # the search log is a few records per layer and cycle


def fingerprint(settings: Mapping[str, Any], targets: Any, tensors: Sequence[torch.Tensor]) -> str:
    """Hex digest of one compression job: its settings, targets and every input tensor's bytes.

    Example:
        >>> a = fingerprint({"cycles": 2}, 0.5, [torch.ones(3)])
        >>> a == fingerprint({"cycles": 2}, 0.5, [torch.ones(3)]), a == fingerprint({"cycles": 3}, 0.5, [torch.ones(3)])
        (True, False)
    """
    h = hashlib.sha256(json.dumps({"settings": dict(settings), "targets": targets}, sort_keys=True).encode())
    for t in tensors:
        h.update(f"{t.dtype}{tuple(t.shape)}".encode())
        flat = t.detach().cpu().reshape(-1).contiguous()  # 1-D: a 0-dim tensor cannot be viewed as bytes
        h.update(flat.view(torch.uint8).numpy().tobytes() if flat.numel() else b"")
    return h.hexdigest()


def save_checkpoint(
    path: str | os.PathLike[str], state: SearchState, job: str, *, cycles: int, point: str = "compress-cycle"
) -> None:
    """Write `state` (after its cycle of `cycles`) for the job `job` atomically, then pass the kill point `point`.

    `state.attempts` (the budget escalation's missed rungs, `prunus.compress.escalate`) go into the
    header when there are any: a resumed job skips those rungs instead of running them again.
    """
    from safetensors.torch import save

    tensors = {f"{_MASK}{name}": mask.contiguous() for name, mask in state.masks.items()}
    tensors[_RNG] = state.rng.contiguous()
    for key, value in (state.weights or {}).items():
        tensors[f"{_STATE}{key}"] = value.detach().contiguous()
    header = make_header(KIND, {"fingerprint": job, "cycle": state.cycle, "cycles": cycles,
                                "kl": state.kl, "log": state.log,
                                **({"attempts": state.attempts} if state.attempts else {})})  # fmt: skip
    write_bytes(path, save(tensors, metadata={"header": json.dumps(header)}))
    crash_point(point)  # tests kill here: the cycle's (or rung's) checkpoint is on disk, the next not begun


def _metadata(data: bytes, where: str) -> dict[str, Any]:
    if len(data) < 8:
        raise CorruptFileError(f"{where} is truncated")
    (size,) = struct.unpack("<Q", data[:8])
    if size > min(_MAX_HEADER, len(data) - 8):
        raise CorruptFileError(f"{where}: its header length {size} does not fit the file")
    try:
        meta = json.loads(data[8 : 8 + size]).get("__metadata__") or {}
        return json.loads(meta["header"])
    except (ValueError, KeyError, TypeError, AttributeError, UnicodeDecodeError):
        raise CorruptFileError(f"{where} is not a prunus compress checkpoint (no readable header)") from None


def load_checkpoint(
    path: str | os.PathLike[str], job: str, shapes: Mapping[str, tuple[int, ...]], *, cycles: int
) -> SearchState | None:
    """The checkpoint at `path` if it belongs to `job`; None when there is none or it is another job's.

    Args:
        path: The checkpoint file.
        job: `fingerprint` of the job about to run.
        shapes: Layer name -> weight shape: the masks must be exactly these.
        cycles: The job's cycle count.

    Raises:
        CorruptFileError: The file is not a well-formed checkpoint of this job's layers.
    """
    from safetensors.torch import load

    from prunus._io.safe import read_bytes

    if not os.path.lexists(path):
        return None
    where = str(path)
    # masks (1 byte per weight) and, for a recovered student, its state (at most 8 bytes per weight, for
    # float64, plus BN and biases: twice the weights bounds it)
    weights = sum(math.prod(s) for s in shapes.values())
    budget = 17 * weights + 16 * len(shapes) * 256 + _MAX_HEADER + 65536
    data = read_bytes(path, budget, "compress checkpoint")
    fields = {"fingerprint": str, "cycle": int, "cycles": int, "kl": float, "log": list}
    header = check_header(_metadata(data, where), KIND, where=where, fields=fields, optional={"attempts": list})
    if header["fingerprint"] != job or header["cycles"] != cycles:
        return None  # another job's (changed settings, model or data): start over, it will be replaced
    if not 1 <= header["cycle"] <= cycles:
        raise CorruptFileError(f"{where}: cycle {header['cycle']} is outside 1..{cycles}")
    try:
        tensors = load(data)
    except Exception as exc:  # safetensors raises its own SafetensorError for malformed files
        raise CorruptFileError(f"{where}: cannot read its tensors ({str(exc)[:80]})") from None
    want = {f"{_MASK}{n}" for n in shapes} | {_RNG}
    stored = {k[len(_STATE) :]: v for k, v in tensors.items() if k.startswith(_STATE)}
    if set(tensors) - {f"{_STATE}{k}" for k in stored} != want:
        raise CorruptFileError(f"{where}: its tensors do not match the model's layers")
    masks = {}
    for name, shape in shapes.items():
        mask = tensors[f"{_MASK}{name}"]
        if mask.dtype != torch.bool or tuple(mask.shape) != tuple(shape):
            raise CorruptFileError(
                f"{where}: mask of {name} is {mask.dtype} {tuple(mask.shape)}, expected bool {shape}"
            )
        masks[name] = mask
    rng = tensors[_RNG]
    if rng.dtype != torch.uint8 or rng.dim() != 1 or rng.numel() != torch.Generator().get_state().numel():
        raise CorruptFileError(f"{where}: the generator state is not a CPU generator's")
    log = header["log"]
    if not all(isinstance(r, dict) for r in log):
        raise CorruptFileError(f"{where}: the search log must be a list of records")
    attempts = header.get("attempts") or []
    if not all(isinstance(r, dict) for r in attempts):
        raise CorruptFileError(f"{where}: the escalation attempts must be a list of records")
    for name, shape in shapes.items():  # a stored state must fit the model it will be loaded into
        w = stored.get(f"{name}.weight")
        if stored and (w is None or tuple(w.shape) != tuple(shape)):
            raise CorruptFileError(f"{where}: the stored state has no weight {shape} for {name}")
    return SearchState(header["cycle"], masks, rng, log, float(header["kl"]), attempts, weights=stored or None)
