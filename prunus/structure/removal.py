"""Physical removal of channels: the group's tensors shrink, and the history records it.

Example:
    >>> groups = build_groups(model, x)  # doctest: +SKIP
    >>> g = next(g for g in groups if g.prunable)  # doctest: +SKIP
    >>> remove_(model, g, [0, 3])  # doctest: +SKIP
    >>> g.num_channels  # two fewer  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from torch import nn

from prunus.models.info import get_info, update_info
from prunus.structure._gc import paused_gc
from prunus.structure.groups import ChannelGroup, StructureError, check_channels
from prunus.structure.history import history_length, record

__all__ = ["remove_", "remove_many_"]


def _same_model(model: nn.Module, group: ChannelGroup) -> None:
    if group._graph.model is not model:
        raise StructureError(f"group {group.key!r} was built on another model; call build_groups on this one")


def cut_(model: nn.Module, group: ChannelGroup, idxs: list[int], entry: dict[str, Any]) -> None:
    """Remove already-validated `idxs` from `group` and append `entry` to the history."""
    width = group.num_channels
    group._graph.cut(group.key, idxs, fold=entry["op"] == "remove")  # merged channels carry values, not constants
    record(model, {"op": entry.pop("op"), "group": group.key, "width": width, "idxs": list(idxs), **entry})
    _keep_input_shape(model, group._graph)


def _keep_input_shape(model: nn.Module, graph: Any) -> None:
    """A pruned model can only be rebuilt by replaying its history on an input: keep the one traced."""
    if not get_info(model).input_shape and graph.input_shape:
        update_info(model, input_shape=graph.input_shape)


def remove_many_(model: nn.Module, cuts: Iterable[tuple[ChannelGroup, Iterable[int]]]) -> nn.Module:
    """`remove_` of several groups of one model in one pass; returns `model`.

    The same model as calling `remove_` group by group (the history holds one entry per group, in
    order), but the tensors are sliced once: a one-shot prune of a large model cuts every group.
    Every group is validated before anything is cut.

    Example:
        >>> remove_many_(model, [(group_a, [0, 1]), (group_b, [3])])  # doctest: +SKIP
    """
    todo = []
    for group, idxs in cuts:
        _same_model(model, group)
        out = check_channels(group, idxs, removing=True)
        if out:
            todo.append((group, out))
    if not todo:
        return model
    graph = todo[0][0]._graph
    if any(g._graph is not graph for g, _ in todo):
        raise StructureError("remove_many_ needs groups from one build_groups call")
    widths = [g.num_channels for g, _ in todo]
    with paused_gc():
        graph.cut_many([(g.key, out) for g, out in todo], fold=True)
    for (group, out), width in zip(todo, widths, strict=True):
        record(model, {"op": "remove", "group": group.key, "width": width, "idxs": list(out)})
    graph.version = history_length(model)  # one pass, as many entries: the groups stay in step with the history
    _keep_input_shape(model, graph)
    return model


def remove_(model: nn.Module, group: ChannelGroup, idxs: Iterable[int]) -> nn.Module:
    """Physically remove channels `idxs` of `group` from every coupled tensor; returns `model`.

    Writers lose output rows and biases, BNs their entries and running stats, depthwise convs their
    rows, consumers their input slices (a Linear after flatten a block per channel). Parameters are
    replaced by smaller ones, so an optimizer built before must be rebuilt. Masks and groups keyed by
    channel index refer to the old numbering afterwards.

    Args:
        model: The model `group` was built on.
        group: A prunable group from `build_groups`.
        idxs: Channel indices in [0, group.num_channels); empty does nothing.

    Raises:
        StructureError: the group is not prunable, the indices are invalid, or they are all of the
            group's channels (a group never goes to zero).

    Example:
        >>> remove_(model, group, [1, 2])  # doctest: +SKIP
    """
    return remove_many_(model, [(group, idxs)])
