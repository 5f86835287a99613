"""The pruning history: a JSON-able record of every structural edit, and its replay.

Every `remove_` and `merge_` appends one entry to the model's `ModelInfo.history`:

    {"op": "remove" | "merge", "group": "<key>", "width": <channels before>, "idxs": [<removed>]}

(`merge` entries also carry `"clusters"`). Indices are relative to the group's width at that time
and the key is the dotted name of the group's root module, which never changes. `replay` re-applies
the entries, in order, to a freshly built dense model of the same architecture, so a pruned model
is rebuilt from `model.json` + `model.safetensors` without pickle.

Example:
    >>> dense = create_model("resnet20")  # doctest: +SKIP
    >>> replay(dense, get_history(pruned), torch.randn(1, 3, 32, 32))  # doctest: +SKIP
    >>> dense.load_state_dict(pruned.state_dict())  # doctest: +SKIP
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

from torch import nn

from prunus.errors import CorruptFileError
from prunus.models.info import get_info, update_info
from prunus.structure._graph import StructureError, build_graph

__all__ = ["HISTORY_OPS", "get_history", "history_length", "record", "replay"]

HISTORY_OPS = ("remove", "merge")


def get_history(model: nn.Module) -> list[dict[str, Any]]:
    """A deep copy of `model`'s pruning history (empty for a dense model); JSON-serialisable."""
    return copy.deepcopy(list(get_info(model).history))


def record(model: nn.Module, entry: dict[str, Any]) -> None:
    """Append `entry` to the model's pruning history; only the structure engine calls this."""
    update_info(model, history=(*get_info(model).history, entry))


def history_length(model: nn.Module) -> int:
    """How many structural edits `model` has had: a version number that changes with every edit."""
    return len(get_info(model).history)


def _validate(i: int, entry: Any) -> tuple[str, int, list[int]]:
    bad = CorruptFileError(f"pruning history entry {i} is malformed: {entry!r}")
    if not isinstance(entry, dict) or entry.get("op") not in HISTORY_OPS:
        raise bad
    key, width, idxs = entry.get("group"), entry.get("width"), entry.get("idxs")
    if not isinstance(key, str) or not isinstance(width, int) or not isinstance(idxs, list):
        raise bad
    if not all(isinstance(j, int) and not isinstance(j, bool) for j in idxs):
        raise bad
    return key, width, idxs


def replay(model: nn.Module, history: Sequence[dict[str, Any]], example_inputs: Any) -> nn.Module:
    """Re-apply a pruning history to a freshly built dense model so its shapes match; returns it.

    Only shapes change: the weights are the dense model's, to be replaced by the caller (e.g. from
    safetensors). Merges are replayed as removals of the merged-away channels.

    Args:
        model: A dense model of the architecture the history was recorded on (empty history).
        history: Entries as returned by `get_history`.
        example_inputs: A batch the model accepts, for tracing.

    Raises:
        CorruptFileError: an entry is malformed or does not fit the model (unknown module, width
            mismatch, out-of-range index).
        StructureError: `model` already carries a history.

    Example:
        >>> replay(fresh, get_history(pruned), torch.randn(1, 3, 32, 32))  # doctest: +SKIP
    """
    if get_info(model).history:
        raise StructureError("replay needs a freshly built dense model, but this one already has a pruning history")
    entries = [_validate(i, e) for i, e in enumerate(history)]
    if not entries:
        return model
    # Every group may be cut: the history was valid when recorded, whatever the ignored layers were.
    graph = build_graph(model, example_inputs, ignored_layers=())
    for i, ((key, width, idxs), entry) in enumerate(zip(entries, history, strict=True)):
        try:
            model.get_submodule(key)
        except AttributeError:
            raise CorruptFileError(
                f"pruning history entry {i} names group {key!r}, not a module of the model"
            ) from None
        if not graph.has_group(key):
            raise CorruptFileError(f"pruning history entry {i}: {key!r} is not the first writer of a channel group")
        current = graph.num_channels(key)
        if current != width:
            raise CorruptFileError(
                f"pruning history entry {i}: group {key!r} has {current} channels, the history expects {width}"
            )
        if len(set(idxs)) != len(idxs) or any(not 0 <= j < width for j in idxs) or len(idxs) >= width:
            raise CorruptFileError(f"pruning history entry {i}: invalid indices for width {width}: {idxs}")
        if entry.get("op") == "remove":  # the biases a removal folded constants into (values: the saved weights)
            graph.fold_constants(graph.classes_of(key, idxs), values=False)
        graph.cut(key, idxs)
        record(model, copy.deepcopy(dict(entry)))
    return model
