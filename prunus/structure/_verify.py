"""The last line of defence: cut each prunable group on a copy and check it computes what masking computes.

The tracer's rules are exact for the ops they know, but a model may hide a size in its code where
no rule can see it (`x.view(b, 64, -1)`, `x[:, :6]`, a constant tensor of full width), and a user
layer is only probed. So `build_groups` takes every prunable group whose channels pass such a
place (the tracer marks them *risky*: a size given for a channel dim, a split, a slice, padding,
a user conv), cuts a few of its channels (the first of every split piece, one more unit in some
rounds) from the model itself, all such groups at once, by amounts that differ from group to
group, and compares the outputs, on a random input, with the model's outputs when the same
channels are masked (their weights zeroed, as `soft_mask_` does); then it puts the very same
parameters back. A mismatch or an error is traced to the groups responsible by bisection, and
those are left whole: the pruner never hands back a model that breaks or computes something else
than its masked twin.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from prunus.errors import first_line
from prunus.structure._cut import apply_plan
from prunus.structure._graph import Graph, StructureError
from prunus.structure._labels import tensors
from prunus.structure._trace import eval_mode, forward, random_other

__all__ = ["verify_groups"]


def _trial_classes(group: Any, extra: int = 0) -> set[int] | None:
    """Units of `group` to cut on trial: the first of every split piece (so every size and bound the
    forward uses changes), else the middle one; never all of a piece, never the whole group. `extra`
    more units where the group has them (a trial cutting a different amount)."""
    units, segments = group.units, [set(s) for s in group.segments]
    if len(units) < 2:
        return None
    chosen: set[int] = set()

    def fits(trial: set[int]) -> bool:
        return len(trial) < len(units) and not any(seg <= trial for seg in segments)

    for seg in segments:
        for u in sorted(seg):
            if fits(chosen | {u}):
                chosen.add(u)
                break
    if not chosen:
        chosen = next(({u} for u in (len(units) // 2, *range(len(units))) if fits({u})), set())
    for u in range(len(units)) if chosen else ():
        if extra <= 0:
            break
        if u not in chosen and fits(chosen | {u}):
            chosen.add(u)
            extra -= 1
    return group._graph.classes_of(group.key, [c for u in sorted(chosen) for c in units[u]]) if chosen else None


def _run(model: nn.Module, inputs: Any) -> list[torch.Tensor]:
    return [t.detach().float() for t in tensors(forward(model, inputs))]


def _compare(masked: list[torch.Tensor], pruned: list[torch.Tensor]) -> str | None:
    if len(masked) != len(pruned):
        return "the cut model returns a different number of outputs"
    for m, p in zip(masked, pruned, strict=True):
        if m.shape != p.shape:
            return f"the cut model returns an output of shape {tuple(p.shape)}, the masked one {tuple(m.shape)}"
        if not bool(torch.isfinite(m).all()):
            return "masking its channels makes the outputs non-finite"
        scale = 1.0 + float(m.abs().max()) if m.numel() else 1.0
        diff = float((m - p).abs().max()) if m.numel() else 0.0
        if not diff <= 1e-4 * scale:
            return (
                f"cutting it changes the outputs by {diff:.2g} where masking the same channels does not (a size or "
                "an op on the way cannot follow the cut)"
            )
    return None


def _trial(graph: Graph, inputs: Any, classes: set[int]) -> str | None:
    """Why cutting `classes` does not reproduce masking them, or None when it does (the caller holds
    the model in eval mode for all its trials)."""
    model = graph.model
    with torch.no_grad():
        undo: list = []  # the cut is tried on the model itself and taken back: no copy of the weights
        try:
            seen: list[Any] = []  # folding runs the masked model on `inputs`: its output is the reference
            try:
                graph.fold_constants(classes, undo, probe=inputs, outputs=seen)
            except StructureError as exc:  # no constant to fold: say that, not "the model fails"
                return str(exc)
            if seen:
                masked = [t.detach().float() for t in tensors(seen[0])]
            else:
                with graph.masked(classes):
                    masked = _run(model, inputs)
            apply_plan(model, graph.plan(classes), undo, graph.modules)
            pruned = _run(model, inputs)
        except Exception as exc:
            first = first_line(exc)[:160]
            return f"the model fails once it is cut ({type(exc).__name__}: {first})"
        finally:
            for restore in reversed(undo):
                restore()
    return _compare(masked, pruned)


def verify_groups(graph: Graph, groups: Sequence[Any]) -> list[tuple[Any, str]]:
    """(group, reason) for every group among `groups` whose trial cut does not match masking.

    Example:
        >>> bad = verify_groups(graph, [g for g in groups if g.prunable])  # doctest: +SKIP
    """
    trials = {}
    for g in groups:
        classes = _trial_classes(g)
        if classes:
            trials[g.key] = (g, classes)
    if not trials:
        return []
    inputs = random_other(graph.example_inputs, 0)  # never the example itself

    def search(keys: list[str], pick: dict[str, set[int]]) -> list[tuple[Any, str]]:
        why = _trial(graph, inputs, set().union(*(pick[k] for k in keys)))
        if why is None:
            return []
        if len(keys) == 1:
            return [(trials[keys[0]][0], why)]
        half = len(keys) // 2
        found = search(keys[:half], pick) + search(keys[half:], pick)
        # each half alone is fine but not both together: keep them all
        return found or [(trials[k][0], f"{why}, together with other groups") for k in keys]

    keys = list(trials)
    bad: list[tuple[Any, str]] = []
    with eval_mode(graph.model):  # once for every trial: `_trial` runs the model as it finds it
        # Cut by the same amount, two groups can agree by coincidence: a width read from one tensor's shape
        # reshapes another of the same width (timm's LambdaLayer). So the groups are cut by amounts that
        # differ: in round b, group i loses one more unit when bit b of i is set. Any two groups differ in
        # some bit, so log2(n) rounds (not one per group) break every such pair apart; every round cuts
        # every group (group 0 by the base amount each time). One group: one round, the base amount.
        for bit in range(max(1, (len(keys) - 1).bit_length())):
            found = {g.key for g, _ in bad}
            rest = [k for k in keys if k not in found]
            pick = {k: _trial_classes(trials[k][0], extra=(i >> bit) & 1) or trials[k][1] for i, k in enumerate(keys)}
            bad += search(rest, pick) if rest else []
    return bad
