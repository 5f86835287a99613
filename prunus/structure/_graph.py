"""The traced structure of one model: its channel groups, and cuts that keep it consistent.

`build_graph` traces the model once (`_trace.py`: prunus's own dimension-aware tracer; it
replaced Torch-Pruning's DependencyGraph, which could not follow reshapes, stacks, split sizes or
slices by position) and turns what it found into groups:

- a *channel* is one class of labels: every position, in every tensor, that exists only with it
  (a conv's output row, the BN entries after it, the consumers' input columns, the rows of every
  writer added to it in a residual stream);
- a *group* is the channels written by one set of convs/linears (connected through shared
  channels or units); its key is the first of those writers in module order, and its channels are
  numbered by their first writer's rows, so channel j of a plain conv's group is its row j;
- *units* are channels that go together (grouped-conv offsets, GroupNorm groups, equal split
  pieces): `blocks` is their size. *Segments* are pieces of a split or slice that must keep one.

The graph is the live state: `cut` removes channels from the model and from its own bookkeeping,
so groups stay valid across edits without tracing again. It never leaves a broken model: a group
whose channels cannot be removed exactly is frozen with the reason.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from prunus.errors import ConfigError
from prunus.models.eager import check_eager
from prunus.models.info import get_info
from prunus.structure._cut import CutPlan, apply_plan
from prunus.structure._labels import UnionFind, tensors
from prunus.structure._trace import KNOWN, Trace, channel_dim, eval_mode, forward, random_other, trace
from prunus.structure.parametrized import is_parametrized, mask_, snapshot
from prunus.structure.roles import Role

__all__ = [
    "FilterFn",
    "Graph",
    "GroupState",
    "StructureError",
    "build_graph",
    "channel_dim",
    "check_filter_fn",
    "default_filter",
]

#: `filter_fn(module, name) -> bool`: True when pruning may cut the output channels of `module`
FilterFn = Callable[[nn.Module, str], bool]

# reasons that follow from what the user chose (the outputs, an ignored module): no warning
_CHOSEN = ("its channels are a model output", "it passes through ignored module")


class StructureError(ConfigError):
    """A structural edit is impossible or unsafe; the message names the group or module and the fix."""


def _default_ignored(model: nn.Module) -> tuple[str, ...]:
    declared = get_info(model).ignored
    if declared:
        return declared
    # no declaration: protect the input conv and the classifier, as every zoo model does
    convs = [n for n, m in model.named_modules() if isinstance(m, nn.modules.conv._ConvNd)]
    linears = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    return tuple(convs[:1]) + tuple(linears[-1:])


def default_filter(model: nn.Module) -> FilterFn:
    """The layer filter used when none is given: every layer except the model's stem and classifier.

    The stem and classifier are the ones declared in the model's `ModelInfo` (set by
    `create_model`); a model without a declaration gets its first conv and its last Linear.

    Example:
        >>> import prunus
        >>> model = prunus.create_model("resnet20")
        >>> keep = default_filter(model)
        >>> keep(model.conv1, "conv1"), keep(model.layer1[0].conv1, "layer1.0.conv1"), keep(model.fc, "fc")
        (False, True, False)
    """
    fixed = frozenset(_default_ignored(model))
    return lambda module, name: name not in fixed


def check_filter_fn(filter_fn: object, owner: str = "filter_fn") -> FilterFn | None:
    """`filter_fn` itself when it is None or callable; otherwise a `ConfigError` (e.g. a name from YAML)."""
    if filter_fn is not None and not callable(filter_fn):
        raise ConfigError(f"{owner} must be a callable filter_fn(module, name) -> bool, got {filter_fn!r}")
    return filter_fn  # type: ignore[return-value]


def _resolve_ignored(
    model: nn.Module, ignored_layers: Iterable[str | nn.Module] | None, filter_fn: FilterFn | None = None
) -> frozenset[str]:
    names = {m: n for n, m in model.named_modules()}
    if ignored_layers is None and filter_fn is None:
        ignored_layers = _default_ignored(model)  # = default_filter(model), by name
    result = set()
    if filter_fn is not None:
        # asked of every module that owns parameters: writers, and modules the engine cannot see into
        for name, module in model.named_modules():
            if any(True for _ in module.parameters(recurse=False)) and not filter_fn(module, name):
                result.add(name)
    if ignored_layers is None:
        return frozenset(result)
    for item in ignored_layers:
        if isinstance(item, nn.Module):
            if item not in names:
                raise StructureError(f"ignored layer {type(item).__name__} is not a submodule of the model")
            result.add(names[item])
        else:
            try:
                model.get_submodule(str(item))
            except AttributeError:
                raise StructureError(f"ignored layer {item!r} is not a module of the model") from None
            result.add(str(item))
    return frozenset(result)


def _opaque(model: nn.Module, ignored: frozenset[str]) -> frozenset[str]:
    """Ignored user modules with parameters of their own: the tracer does not look inside them."""
    return frozenset(
        name
        for name, m in model.named_modules()
        if name in ignored and not isinstance(m, KNOWN) and any(True for _ in m.parameters(recurse=False))
    )


@dataclass
class GroupState:
    """One group's channels (class ids, in channel order) and what constrains their removal."""

    key: str
    classes: list[int]
    writers: list[str]
    reason: str | None = None
    warn: bool = False
    unit_of: dict[int, int] = field(default_factory=dict)
    segments: list[frozenset[int]] = field(default_factory=list)
    blocks: int = 1
    risky: bool = False
    residual: bool = False


def input_shapes(example_inputs: Any) -> Any:
    """The per-sample shape(s) of `example_inputs`: a tuple, a tuple of tuples, or a dict of tuples."""
    if isinstance(example_inputs, torch.Tensor):
        return tuple(int(d) for d in example_inputs.shape[1:]) if example_inputs.dim() >= 2 else None
    if isinstance(example_inputs, dict):
        shapes = {k: input_shapes(v) for k, v in example_inputs.items()}
        return None if any(s is None for s in shapes.values()) else shapes
    if isinstance(example_inputs, (list, tuple)):
        shapes = [input_shapes(v) for v in example_inputs]
        if len(shapes) == 1:
            return shapes[0]
        return None if any(s is None for s in shapes) else tuple(shapes)
    return None


class Graph:
    """A traced model: its groups and the state every cut updates (see the module docstring)."""

    def __init__(self, model: nn.Module, example_inputs: Any, result: Trace, ignored: frozenset[str]) -> None:
        self.model = model
        self.example_inputs = example_inputs
        #: one sample's shape(s), recorded on the model when it is cut (`ModelInfo.input_shape`)
        #: because replaying the cuts when loading needs an input to trace
        self.input_shape = input_shapes(example_inputs)
        self.version = 0
        self.built_version = 0  # the model's history length when traced (`build_groups` sets both)
        self.modules = dict(model.named_modules())
        self._order = {name: i for i, name in enumerate(self.modules)}
        roots = result.uf.table()
        find = roots.__getitem__  # every label's root, looked up once
        self._num_labels = len(roots)  # class ids are labels: below this
        #: axis (module, tensor, dim) -> (role, the class of each position; -1: none). numpy arrays:
        #: a large model has ~10^5 positions, and every query below is one vectorised pass
        self.axes: dict[tuple[str, str, int], tuple[Role, np.ndarray]] = _class_axes(result, roots)
        self.bindings = _bindings(result, find)
        self.rescales = dict(result.rescales)  # normalisations over channels -> their weight exponent
        self.folds: dict[int, set[str]] = {}  # class -> readers its masked constant is folded into
        for label, readers in result.folds.items():
            self.folds.setdefault(find(label), set()).update(readers)
        self._axis_rank = {key: i for i, key in enumerate(self.axes)}
        self._axis_keys = list(self.axes)  # rank -> axis (axes added later are appended)
        self._where: _ClassIndex | None = None  # class -> the axes it has positions in (`_axes_holding`)
        self.groups: dict[str, GroupState] = {}
        self._slices: tuple[int, dict[str, list]] | None = None
        #: the MACs `prunus.count` would charge each layer, recorded by the trace's pass (None where
        #: that pass was no single-sample pass, or a layer returned no tensor): see `traced_counts`
        self.traced_macs = result.macs if _single_sample(example_inputs) else None
        self._build(result, roots, ignored)

    # ------------------------------------------------------------------------------ construction
    def _build(self, result: Trace, table: list[int], ignored: frozenset[str]) -> None:
        find = table.__getitem__
        order = self._order
        writers = sorted(result.writers, key=lambda n: order.get(n, len(order)))
        # a writer's labels are consecutive: its rows' classes are one slice of the root table
        rows = {n: table[result.writers[n][0] : result.writers[n][0] + result.writers[n][1]] for n in writers}
        # Groups are the writers joined by a shared class (a residual add) or a unit: a union-find over
        # the few hundred writers, not over every channel.
        # class -> the first writer (index) with a row in it; inserted by (writer, row): channel order
        owner: dict[int, int] = {}
        joined: set[tuple[int, int]] = set()
        for w, n in enumerate(writers):
            for c in rows[n]:
                o = owner.get(c)
                if o is None:
                    owner[c] = w
                elif o != w:
                    joined.add((o, w))
        comp = UnionFind()
        comp.make(len(writers))
        for o, w in joined:
            comp.union(o, w)
        units = [(table[a], table[b]) for a, b in result.units]
        for a, b in units:
            if a in owner and b in owner:
                comp.union(owner[a], owner[b])
        root_w = [comp.find(w) for w in range(len(writers))]
        members: dict[int, list[int]] = {}
        for c, o in owner.items():  # groups and their channels come out in channel order
            members.setdefault(root_w[o], []).append(c)
        risky = {find(v) for v in result.risky}
        summed = {find(v) for v in result.summed}
        frozen: dict[int, str] = {}
        for label, why in result.frozen.items():
            frozen.setdefault(find(label), why)
        root_of = {c: r for r, cs in members.items() for c in cs}
        units_of: dict[int, list[tuple[int, int]]] = {}  # each group's own units and segments, bucketed once
        for a, b in units:
            if a in root_of and root_of.get(b) == root_of[a]:
                units_of.setdefault(root_of[a], []).append((a, b))
        segments_of: dict[int, list[list[int]]] = {}
        for seg in result.segments:
            classes_in = [c for c in {find(v) for v in seg} if c in root_of]
            for r in {root_of[c] for c in classes_in}:
                segments_of.setdefault(r, []).append([c for c in classes_in if root_of[c] == r])
        writers_of: dict[int, list[str]] = {}
        for n in writers:
            if rows[n]:
                writers_of.setdefault(root_of[rows[n][0]], []).append(n)  # a writer's rows share one group
        for classes in members.values():
            names = writers_of[root_of[classes[0]]]
            state = GroupState(names[0], classes, names, risky=any(c in risky for c in classes))
            state.residual = any(c in summed for c in classes)
            width = max(len(rows[n]) for n in names)  # a one-channel writer has nothing to prune: no warning
            root = root_of[classes[0]]
            self._constrain(state, units_of.get(root, []), segments_of.get(root, []))
            bad_writer = next((n for n in names if n in ignored), None)
            why = next((frozen[c] for c in classes if c in frozen), None)
            if bad_writer is not None:
                state.reason = f"it is written by ignored layer {bad_writer!r}"
            elif why is not None:  # the user's own choices (an ignored module, the outputs) need no warning
                state.reason, state.warn = why, not why.startswith(_CHOSEN) and width > 1
            elif state.reason is not None:
                state.warn = width > 1
            self.groups[state.key] = state

    def _constrain(self, state: GroupState, units: list[tuple[int, int]], segments: list[list[int]]) -> None:
        """Units (channels that go together) and segments (unit sets that must keep one) of a group."""
        members = set(state.classes)
        pairs = [(a, b) for a, b in units if a in members and b in members]
        if not pairs:  # most groups: every channel is its own unit
            state.unit_of = {c: i for i, c in enumerate(state.classes)}
        else:
            uf = UnionFind()
            uf.make(len(state.classes))
            idx = {c: i for i, c in enumerate(state.classes)}
            for a, b in pairs:
                uf.union(idx[a], idx[b])
            roots: dict[int, int] = {}
            for c in state.classes:
                state.unit_of[c] = roots.setdefault(uf.find(idx[c]), len(roots))
        sizes = _unit_sizes(state)
        if len(set(sizes.values())) > 1:
            _pack_units(state, sizes)
            sizes = _unit_sizes(state)
        state.blocks = max(sizes.values())
        if len(set(sizes.values())) > 1:
            state.reason = f"its channels must go in units of unequal sizes {sorted(set(sizes.values()))}"
        elif len(sizes) == 1 and len(state.classes) > 1:
            state.reason = f"its {len(state.classes)} channels are tied together and can only go all at once"
        seen: set[frozenset[int]] = set()
        every = frozenset(state.unit_of.values())
        for seg in segments:
            units_in = frozenset(state.unit_of[c] for c in seg if c in members)
            if units_in and units_in != every and units_in not in seen:  # the whole group keeps one anyway
                seen.add(units_in)
                state.segments.append(units_in)
        if len(state.segments) > 1:  # a segment holding another is kept by it: only the innermost count
            state.segments = [s for s in state.segments if not any(o < s for o in state.segments)]

    # ---------------------------------------------------------------------------------- queries
    def has_group(self, key: str) -> bool:
        return key in self.groups

    def num_channels(self, key: str) -> int:
        return len(self.groups[key].classes)

    def slices(self, key: str) -> list[tuple[str, str, Role, int, tuple[int, ...], tuple[int, ...]]]:
        """(module, tensor, role, dim, positions, channels) of every tensor the group `key` touches."""
        if self._slices is None or self._slices[0] != self.version:
            self._slices = (self.version, self._all_slices())
        return self._slices[1].get(key, [])

    def _all_slices(self) -> dict[str, list[tuple[str, str, Role, int, tuple[int, ...], tuple[int, ...]]]]:
        """Every group's slices, in one pass over the axes (module order).

        Vectorised: class -> (group, channel) are two arrays indexed by class id, so an axis is mapped
        in one numpy gather instead of a dict lookup per position (this ran once per prune on every
        position of every tensor, a fifth of a small model's prune time).
        """
        keys = list(self.groups)
        group_of = np.full(self._num_labels + 1, -1, dtype=np.int64)  # the last entry: "no class" (-1)
        channel_of = np.zeros(self._num_labels + 1, dtype=np.int64)
        for g, state in enumerate(self.groups.values()):
            classes = np.asarray(state.classes, dtype=np.int64)
            group_of[classes], channel_of[classes] = g, np.arange(len(classes))
        out: dict[str, list] = {}
        for (module, tensor, dim), (role, lst) in sorted(self.axes.items(), key=lambda kv: self._order[kv[0][0]]):
            if not tensor or not lst.size:
                continue
            groups = group_of[lst]
            at = np.flatnonzero(groups >= 0)
            if not at.size:
                continue
            present = groups[at]
            if present[0] == present[-1] and (present == present[0]).all():  # one group (most axes)
                order = [int(present[0])]
            else:  # groups in the order of their first position on this axis
                order = [int(g) for g in present[np.sort(np.unique(present, return_index=True)[1])]]
            for g in order:
                pos = at if len(order) == 1 else at[present == g]
                out.setdefault(keys[g], []).append(
                    (module, tensor, role, dim, tuple(pos.tolist()), tuple(channel_of[lst[pos]].tolist()))
                )
        return out

    def units(self, key: str) -> list[list[int]]:
        """The group's units as lists of channel indices, ordered by their first channel."""
        state = self.groups[key]
        by_unit: dict[int, list[int]] = {}
        for i, c in enumerate(state.classes):
            by_unit.setdefault(state.unit_of[c], []).append(i)
        return sorted(by_unit.values(), key=lambda u: u[0])

    def segments(self, key: str) -> list[list[int]]:
        """Per segment, the indices (into `units(key)`) of its units; one of them must stay."""
        state = self.groups[key]
        order = {}
        for i, c in enumerate(state.classes):
            order.setdefault(state.unit_of[c], len(order))
        ranked = {u: r for r, u in enumerate(sorted(order, key=order.__getitem__))}
        return [
            sorted(ranked[u] for u in seg if u in ranked) for seg in state.segments if any(u in ranked for u in seg)
        ]

    # ------------------------------------------------------------------------------------- cuts
    def plan(self, classes: set[int]) -> CutPlan:
        """What removing `classes` (from any groups) does to the model's tensors and attributes."""
        plan = CutPlan()
        for key, role, pos in self.positions(classes):
            module, tensor, dim = key
            if tensor:
                plan.tensors.append((module, tensor, dim, role, pos))
            else:
                plan.widths[module] = len(pos)
                if module in self.rescales:
                    width = len(self.axes[key][1])
                    plan.rescales[module] = (self.rescales[module], width, width - len(pos))
        for module, attr, kind, parts in self.bindings:
            counts = [sum(1 for c in p if c is None or c not in classes) for p in parts]
            if any(len(p) != n for p, n in zip(parts, counts, strict=True)):
                plan.attrs[(module, attr)] = counts[0] if kind is int else kind(counts)
        return plan

    def positions(self, classes: set[int]) -> list[tuple[tuple[str, str, int], Role, list[int]]]:
        """(axis, role, positions of `classes` along it) for every axis holding one of `classes`, in axis order.

        Only the axes `classes` appear in are scanned (a trial cut of one group of a large model
        touches a few of its hundreds of axes).
        """
        if not classes:
            return []
        wanted = _as_array(classes)
        member = self._member(wanted)
        found = []
        for key in self._axes_holding(wanted):
            role, lst = self.axes[key]
            pos = np.flatnonzero(member[lst]).tolist()
            if pos:
                found.append((key, role, pos))
        return found

    def _live_axes(self) -> list[tuple[str, str, int]]:
        """Every axis, once, in axis order (a bias taken back by a trial and added again is listed twice
        in `_axis_keys`: its current rank is the one `_axis_rank` holds)."""
        return [key for rank, key in enumerate(self._axis_keys) if self._axis_rank.get(key) == rank]

    def _axes_holding(self, classes: np.ndarray) -> list[tuple[str, str, int]]:
        """The axes that may hold a position of `classes`, in axis order.

        Many classes (a whole prune's cut) are looked for in every axis: one gather each. A few (a
        trial cut, one group of a replayed history) are looked up in the class index, built on the
        first such call: a model that is only pruned once never builds it.
        """
        if classes.size * 8 >= self._num_labels:
            return self._live_axes()
        if self._where is None:
            live = self._live_axes()
            self._where = _ClassIndex({key: self.axes[key] for key in live}, [self._axis_rank[key] for key in live])
        keys: dict[tuple[str, str, int], None] = {}  # a bias taken back and added again has two ranks
        for rank in self._where.axes_of(classes):
            key = self._axis_keys[rank]
            if key in self.axes:  # not an axis taken back (a trial cut's bias)
                keys[key] = None
        return list(keys)

    def _member(self, classes: np.ndarray) -> np.ndarray:
        """A lookup table: True at each of `classes`; its last entry (what label -1 reads) is False."""
        member = np.zeros(self._num_labels + 1, dtype=bool)
        member[classes] = True
        return member

    def classes_of(self, key: str, idxs: Sequence[int]) -> set[int]:
        state = self.groups[key]
        return {state.classes[i] for i in idxs}

    def cut(self, key: str, idxs: Sequence[int], *, fold: bool = False) -> None:
        """Remove channels `idxs` of group `key` from the model and from this graph (no validation).

        `fold`: removing (not merging) channels whose masked value is a nonzero constant where a
        reader takes it: their contribution goes into the reader's bias first (`fold_constants`).
        """
        self.cut_many([(key, idxs)], fold=fold)

    def cut_many(self, cuts: Sequence[tuple[str, Sequence[int]]], *, fold: bool = False) -> None:
        """`cut` of several groups at once: one fold, one pass over the tensors, one update of the
        bookkeeping (removing disjoint channels commutes, so this equals cutting them one by one; the
        folded constants are read with every removed channel masked, which is what the cut computes)."""
        gone: set[int] = set()
        for key, idxs in cuts:
            gone |= self.classes_of(key, idxs)
        if not gone:
            return
        if fold:
            self.fold_constants(gone)
        apply_plan(self.model, self.plan(gone), modules=self.modules)
        self.forget(gone)

    def _ensure_bias(self, reader: str, undo: list[Callable[[], None]] | None) -> None:
        """Give `reader` a zero bias (an exact no-op) that follows its output channels from now on."""
        module = self.modules[reader]
        if module.bias is not None:
            return
        weight = module.weight
        module.bias = nn.Parameter(torch.zeros(weight.shape[0], dtype=weight.dtype, device=weight.device))
        key = (reader, "bias", 0)
        labels = self.axes[(reader, "weight", 0)][1].copy()
        self.axes[key] = (Role.BIAS, labels)
        rank = self._axis_rank[key] = len(self._axis_keys)
        self._axis_keys.append(key)
        if self._where is not None:
            self._where.add(rank, labels)
        self._slices = None

        def take_back() -> None:
            module.register_parameter("bias", None)
            del self.axes[key], self._axis_rank[key]
            if self._where is not None:
                self._where.discard(rank)
            self._slices = None

        if undo is not None:
            undo.append(take_back)

    @contextlib.contextmanager
    def masked(self, classes: set[int]) -> Iterator[None]:
        """The model with `classes` masked (their weights zeroed, as `soft_mask_` does), then restored."""
        saved = []
        restores: list[Callable[[], None]] = []
        try:
            with torch.no_grad():
                for (module, tensor, dim), role, pos in self.positions(classes):
                    if tensor and role.is_masked and is_parametrized(self.modules[module], tensor):
                        restores.append(snapshot(self.modules[module], tensor))  # zeroing its value would be lost
                        mask_(self.modules[module], tensor, dim, pos)
                    elif tensor and role.is_masked:
                        t = getattr(self.modules[module], tensor)
                        idx = torch.tensor(pos, dtype=torch.long, device=t.device)
                        saved.append((t, dim, idx, t.index_select(dim, idx).clone()))
                        t.index_fill_(dim, idx, 0.0)
            yield
        finally:
            with torch.no_grad():
                for t, dim, idx, values in saved:
                    t.index_copy_(dim, idx, values)
                for restore in reversed(restores):
                    restore()

    def fold_constants(
        self,
        classes: set[int],
        undo: list[Callable[[], None]] | None = None,
        *,
        values: bool = True,
        probe: Any = None,
        outputs: list[Any] | None = None,
    ) -> None:
        """Add to each reader's bias what `classes`, masked, feed it: the exact change removing them makes.

        A channel masked to zero can still reach a reader as a constant (StarReLU's or a learnable
        affine's scalar bias after the activation). A Linear or unpadded conv turns a constant input
        channel into a constant per output, so removing the channel and adding that constant to the
        bias computes what the masked model computes. The value is read by running the masked model
        (eval mode) on the example input and on a random one; it must be the same everywhere.
        A reader without a bias gets one (zeros plus the constant), which later cuts of its own output
        channels slice like any bias.

        Args:
            classes: The channels about to be removed.
            undo: Collects what puts the model and this graph back (the trial cut).
            values: False only adds the biases (replaying a history: the values come from the saved weights).
            probe: The second input the values are read on (default: a seeded random draw like the example).
            outputs: Receives the masked model's output on `probe`, when the model ran (a trial cut
                compares it with the cut model's: one forward pass fewer).

        Raises:
            StructureError: the value the reader gets is not one constant (it depends on the input or
                the position): then the channels cannot be removed exactly.
        """
        readers = sorted({r for c in classes for r in self.folds.get(c, ())}, key=self._order.__getitem__)
        if not readers:
            return
        for r in readers:
            self._ensure_bias(r, undo)
        if not values:
            return
        seen: dict[str, list[torch.Tensor]] = {r: [] for r in readers}
        hooks = [
            self.modules[r].register_forward_pre_hook(lambda m, args, r=r: seen[r].append(args[0].detach().clone()))
            for r in readers
        ]
        if probe is None:
            probe = random_other(self.example_inputs, 1)
        try:
            with eval_mode(self.model), self.masked(classes), torch.no_grad():
                runs = [forward(self.model, inputs) for inputs in (self.example_inputs, probe)]
                if outputs is not None:
                    outputs.append(runs[1])
        finally:
            for h in hooks:
                h.remove()
        member = self._member(_as_array(classes))
        for r in readers:
            module = self.modules[r]
            _, labels = self.axes[(r, "weight", 1)]
            pos = np.flatnonzero(member[labels]).tolist()
            if not pos or not seen[r]:
                continue
            conv = isinstance(module, nn.modules.conv._ConvNd)
            rows = [x.movedim(1 if conv else -1, -1).reshape(-1, x.shape[1 if conv else -1])[:, pos] for x in seen[r]]
            value = rows[0][0]
            scale = 1e-5 * (1.0 + float(value.abs().max()))
            if not all(bool(((row - value).abs() <= scale).all()) for row in rows):
                raise StructureError(
                    f"its masked channels reach {r!r} as values that depend on the input or the position, not one "
                    "constant to fold into its bias"
                )
            with torch.no_grad():
                w = module.weight[:, pos]
                delta = (w.flatten(2).sum(2) if conv else w) @ value.to(w.dtype)
                bias = module.bias
                if is_parametrized(module, "bias"):  # computed: assigned through its right inverse
                    if undo is not None:
                        undo.append(snapshot(module, "bias"))
                    module.bias = bias + delta
                    continue
                if undo is not None:
                    old = bias.detach().clone()
                    undo.append(lambda bias=bias, old=old: bias.data.copy_(old))
                bias.add_(delta)

    def forget(self, gone: set[int]) -> None:
        """Drop `gone` from the bookkeeping after the model was cut."""
        drop = _as_array(gone)
        member = self._member(drop)
        for key in self._axes_holding(drop):
            role, lst = self.axes[key]
            self.axes[key] = (role, lst[~member[lst]])
        self.bindings = [(m, a, k, [[c for c in p if c is None or c not in gone] for p in parts])
                         for m, a, k, parts in self.bindings]  # fmt: skip
        for state in self.groups.values():
            if not gone.isdisjoint(state.classes):  # in C: this runs for every group on every cut
                state.classes = [c for c in state.classes if c not in gone]
        self.version += 1


def _unit_sizes(state: GroupState) -> dict[int, int]:
    sizes: dict[int, int] = {}
    for u in state.unit_of.values():
        sizes[u] = sizes.get(u, 0) + 1
    return sizes


def _pack_units(state: GroupState, sizes: dict[int, int]) -> None:
    """Join the smaller units of a group into units as large as its largest (removing several units is exact).

    Planners cut a group in whole units of one size. Where units differ (an attention's fused qkv
    conv: q_i and k_i go as a pair, each v channel alone), removing several small units together is
    still exact, so they are packed, in channel order and largest first, into bins of the largest
    size (the split pieces' "keep one" rule is then read on the packed units). Only when every size
    divides the largest; where the small units do not fill their last bin, the sizes stay unequal and
    the group whole.
    """
    big = max(sizes.values())
    if any(big % n for n in sizes.values()):
        return
    first: dict[int, int] = {}
    for i, c in enumerate(state.classes):
        first.setdefault(state.unit_of[c], i)
    merged: dict[int, int] = {}  # unit -> the first unit of its bin
    head, fill = -1, 0
    for u in sorted((u for u, n in sizes.items() if n < big), key=lambda u: (-sizes[u], first[u])):
        if fill == 0:  # sizes fall and each divides the one before, so a bin fills exactly
            head = u
        merged[u] = head
        fill = (fill + sizes[u]) % big
    relabel: dict[int, int] = {}
    for c in state.classes:
        root = merged.get(state.unit_of[c], state.unit_of[c])
        state.unit_of[c] = relabel.setdefault(root, len(relabel))


def _class_axes(result: Trace, roots: list[int]) -> dict[tuple[str, str, int], tuple[Role, np.ndarray]]:
    """The trace's axes with every label replaced by its class (its root), in one gather."""
    if not result.axes:
        return {}
    lengths = [len(labels) for _, labels in result.axes.values()]
    flat = np.fromiter(itertools.chain.from_iterable(labels for _, labels in result.axes.values()), dtype=np.int64)
    table = np.asarray([*roots, -1], dtype=np.int64)  # label -1 (none) reads the last entry: -1
    classes = np.split(table[flat], np.cumsum(lengths)[:-1])
    return {key: (role, cls) for (key, (role, _)), cls in zip(result.axes.items(), classes, strict=True)}


def _as_array(classes: Iterable[int]) -> np.ndarray:
    return np.fromiter(classes, dtype=np.int64)


class _ClassIndex:
    """class -> the axes (by rank) holding a position of it: sorted (class, axis) pairs, searched.

    Built once from the traced axes in a few array operations (a dict of sets held one entry per
    position and cost a fifth of building a graph); axes added later (a bias a fold creates) sit in
    a small side table. Entries are never pruned when channels go: a query may name an axis that no
    longer holds the class, and the caller finds no position there.
    """

    def __init__(self, axes: dict[tuple[str, str, int], tuple[Role, np.ndarray]], ranks: list[int]) -> None:
        arrays = [lst for _, lst in axes.values()]
        flat = np.concatenate(arrays) if arrays else np.zeros(0, dtype=np.int64)
        rank = np.repeat(np.asarray(ranks, dtype=np.int64), [len(a) for a in arrays])
        keep = flat >= 0
        span = max(ranks, default=0) + 1
        pairs = np.sort(flat[keep] * span + rank[keep])  # by class, then axis (np.unique hashes: slower)
        pairs = pairs[np.concatenate(([True], pairs[1:] != pairs[:-1]))] if pairs.size else pairs
        self.classes, self.ranks = pairs // span, pairs % span
        self.extra: dict[int, np.ndarray] = {}  # rank -> its classes (axes added after the trace)

    def add(self, rank: int, labels: np.ndarray) -> None:
        self.extra[rank] = np.unique(labels[labels >= 0])

    def discard(self, rank: int) -> None:
        self.extra.pop(rank, None)

    def axes_of(self, classes: np.ndarray) -> list[int]:
        """Ranks of the axes holding any of `classes`, ascending."""
        lo = np.searchsorted(self.classes, classes, "left")
        hi = np.searchsorted(self.classes, classes, "right")
        n = hi - lo
        total = int(n.sum())
        found = set()
        if total:
            starts = np.repeat(lo - np.cumsum(n) + n, n)  # each hit's range start, minus hits before it
            found = set(self.ranks[np.arange(total) + starts].tolist())
        for rank, cls in self.extra.items():
            if np.isin(cls, classes).any():
                found.add(rank)
        return sorted(found)


def _single_sample(example_inputs: Any) -> bool:
    """Whether every input tensor holds one sample (what `prunus.count` runs the model on)."""
    return all(t.dim() == 0 or t.shape[0] <= 1 for t in tensors(example_inputs))


def _bindings(result: Trace, find: Callable[[int], int]) -> list[tuple[str, str, type, list[list[int | None]]]]:
    """Attribute bindings, in class ids; an attribute bound to two different things is not rewritten."""
    seen: dict[tuple[str, str], tuple[type, list[list[int | None]]] | None] = {}
    for b in result.bindings:
        parts = [[find(v) if v >= 0 else None for v in p] for p in b.parts]
        key = (b.module, b.attr)
        if key in seen and seen[key] != (b.kind, parts):
            seen[key] = None
        elif key not in seen:
            seen[key] = (b.kind, parts)
    return [(m, a, v[0], v[1]) for (m, a), v in seen.items() if v is not None]


def build_graph(
    model: nn.Module,
    example_inputs: Any,
    ignored_layers: Iterable[str | nn.Module] | None = None,
    *,
    filter_fn: FilterFn | None = None,
) -> Graph:
    """Trace `model` once on `example_inputs` (train/eval modes are restored afterwards).

    A layer's output channels are cut only if `filter_fn(module, name)` is true and its name is not
    in `ignored_layers`; with neither given, `default_filter(model)` applies.

    Raises:
        StructureError: the model cannot run on the example inputs, or an ignored layer is unknown.
    """
    check_eager(model, "tracing its channels (prune, the methods, MACs counts)")
    ignored = _resolve_ignored(model, ignored_layers, check_filter_fn(filter_fn))
    try:
        result = trace(model, example_inputs, _opaque(model, ignored))
    except Exception as exc:  # the user's model and inputs: say which step failed, keep the cause
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise StructureError(f"cannot trace the model on the example inputs: {first}") from exc
    return Graph(model, example_inputs, result, ignored)
