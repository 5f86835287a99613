"""One forward pass that finds which tensor positions belong to which removable channel.

The model runs once under a `TorchFunctionMode` and per-module hooks. Convs and linears are the
writers: each output row gets a fresh label (`_labels.py`). Every other op moves the labels as
`_ops.py` says; BN, GroupNorm, InstanceNorm, LayerNorm and PReLU are read through their
functional calls (so a custom norm calling `F.batch_norm` is handled the same way). Consumers
(a conv or linear reading labelled channels) and per-channel tensors (BN entries, depthwise rows,
layer scales) record the labels of their positions in an *axis*. Where channels cannot be
removed exactly, their labels are *frozen* with a reason that names the op and the module.

The result (`Trace`) holds the union-find of labels, the axes, the writers, the frozen labels, the
*units* (labels that must go together: grouped-conv offsets, GroupNorm groups, equal split
pieces), the *segments* (label sets of which one must stay: each piece of a split) and the
*bindings* (module attributes holding a split size or slice bound, rewritten when channels go).

A normalisation over the channels (RMSNorm, GRN) is probed before it runs (`_layers.stat_norm`)
and, when a rescale of its eps and weight makes it exact, taken as one step the channels pass.

A conv or linear subclass with its own forward (a weight-standardised conv with a gain) is
*probed*: one output row and one input column are cut on a copy and compared with the original;
what does not match is frozen (standardising a weight over its inputs changes every output when
an input goes, so such a conv's inputs stay).
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from prunus.measure.counting import COUNTED, call_macs
from prunus.structure import _ops
from prunus.structure._labels import NONE, UnionFind, expand, fresh, tensors, unlabelled, varying_dims
from prunus.structure._layers import FUNCTIONAL, KNOWN, OPAQUE, WRITERS, StatNorm, channel_dim, leaf, stat_norm
from prunus.structure.roles import Role

__all__ = ["KNOWN", "Binding", "Trace", "channel_dim", "forward", "trace"]


@dataclass(frozen=True)
class Binding:
    """A module attribute holding a size the forward uses (a split's sections, a slice bound).

    Its new value is the number of surviving positions in each part (an int for one part, else a
    list or tuple like the original).
    """

    module: str
    attr: str
    parts: tuple[tuple[int, ...], ...]
    kind: type


@dataclass
class Trace:
    """What one traced forward pass found (see the module docstring)."""

    uf: UnionFind
    axes: dict[tuple[str, str, int], tuple[Role, list[int]]] = field(default_factory=dict)
    widths: dict[str, list[int]] = field(default_factory=dict)
    writers: dict[str, tuple[int, int]] = field(default_factory=dict)
    frozen: dict[int, str] = field(default_factory=dict)
    units: list[tuple[int, int]] = field(default_factory=list)
    segments: list[tuple[int, ...]] = field(default_factory=list)
    bindings: list[Binding] = field(default_factory=list)
    risky: set[int] = field(default_factory=set)
    #: labels of channels that an element-wise add sums with another tensor of the same shape: a
    #: residual connection (a bias or an SE gate broadcasts: not one)
    summed: set[int] = field(default_factory=set)
    #: label -> readers (Linear / unpadded conv with a bias) its masked, nonzero value can be folded into
    folds: dict[int, set[str]] = field(default_factory=dict)
    #: normalisation over channels (module name) -> the exponent its weight is rescaled with on a cut
    rescales: dict[str, float] = field(default_factory=dict)
    #: conv / linear module name -> MACs of its calls in this pass, as `prunus.count` charges them
    #: (None when a call returned no tensor: `count` is then asked instead)
    macs: dict[str, int] | None = field(default_factory=dict)


class _Mode(TorchFunctionMode):
    def __init__(self, tracer: Tracer) -> None:
        super().__init__()
        self.tracer = tracer

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        tr = self.tracer
        if tr.quiet or tr.leaf:
            return out
        name = getattr(func, "__name__", "") or ""
        if args and (isinstance(out, torch.Size) or (name == "size" and isinstance(out, int))):
            # `b, c, h, w = x.shape`, `x.size(1)`: a width the code may reuse elsewhere (`x.ndim`, an
            # int read by `__get__` too, or `x.size(2)` of a spatial dim is no channel width)
            tr.read_size(args[0], _ops.arg(args, kwargs, 1, "dim", None) if isinstance(out, int) else None)
        if name != "__setitem__" and not tensors(out):
            return out
        tr.quiet += 1
        try:
            handler = tr.functional.get(name) or _ops.HANDLERS.get(name)
            if handler is None:
                tr.unknown(name, args, kwargs, out)
            else:
                handler(tr, name, func, args, kwargs, out)
        except Exception as exc:  # a case a rule did not foresee: keep those channels, say why
            tr.unknown(name, args, kwargs, out, f" ({type(exc).__name__}: {str(exc)[:80]})")
        finally:
            tr.quiet -= 1
        return out


class Tracer:
    """The state of one trace; `_ops` rules call its methods. Use `trace()`."""

    def __init__(self, model: nn.Module, opaque: frozenset[str]) -> None:
        self.model = model
        self.opaque = opaque  # ignored custom modules: every channel they touch stays
        self.result = Trace(UnionFind())
        self.uf = self.result.uf
        named = list(model.named_modules())
        self.names = {m: n for n, m in named}
        self.owned: dict[int, tuple[str, str, nn.Module]] = {}
        for n, m in named:
            for a, t in [*m._parameters.items(), *m._buffers.items()]:
                if t is not None:
                    self.owned.setdefault(id(t), (n, a, m))
        self._store: dict[int, tuple[Any, torch.Tensor, torch.Tensor, bool]] = {}
        self.stack: list[nn.Module] = []
        self.leaf = 0
        self.quiet = 0
        self.functional = FUNCTIONAL
        self.stat_norms: dict[str, StatNorm] = {}

    # ------------------------------------------------------------------------------ label store
    def get(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Compressed (labels, zeros) of tensor `t` (unlabelled if the trace has not seen it)."""
        entry = self._store.get(id(t))
        if entry is not None and entry[0]() is t:
            return entry[1], entry[2]
        if id(t) in self.owned:
            return self._bare(t)
        return unlabelled(t.dim()), torch.zeros([1] * t.dim(), dtype=torch.bool)

    def full(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        L, Z = self.get(t)
        return expand(L, t.shape), expand(Z, t.shape)

    def labelled(self, t: Any) -> bool:
        if not isinstance(t, torch.Tensor):
            return False
        entry = self._store.get(id(t))
        if entry is not None and entry[0]() is t:
            return entry[3]
        return id(t) in self.owned and bool((self.get(t)[0] >= 0).any())

    def set(self, t: torch.Tensor, L: torch.Tensor, Z: torch.Tensor) -> None:
        if L.dim() != t.dim():
            raise ValueError(f"labels of rank {L.dim()} for a tensor of rank {t.dim()}")
        key = id(t)
        has = bool((L >= 0).any())
        self._store[key] = (weakref.ref(t, lambda _, k=key: self._store.pop(k, None)), L, Z, has)

    def clear(self, t: torch.Tensor) -> None:
        self._store.pop(id(t), None)

    def _bare(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """A parameter or buffer a user module uses directly: one label per channel along its one long dim."""
        module_name, attr, module = self.owned[id(t)]
        d = channel_dim(t)
        if isinstance(module, KNOWN) or d is None or any(module_name == o or module_name.startswith(o + ".")
                                                         for o in self.opaque):  # fmt: skip
            L, Z = unlabelled(t.dim()), torch.zeros([1] * t.dim(), dtype=torch.bool)
        else:
            base = self.uf.make(t.shape[d])
            L = fresh(base, t.shape[d], t.dim(), d)
            Z = torch.ones([1] * t.dim(), dtype=torch.bool)  # a mask zeroes it
            self.axis((module_name, attr, d), Role.PARAM, L.reshape(-1).tolist())
        self.set(t, L, Z)
        return L, Z

    # --------------------------------------------------------------------------- what rules record
    def where(self) -> str:
        """The module whose forward is running, for messages."""
        if not self.stack or self.stack[-1] is self.model:
            return f"the forward of {type(self.model).__name__}"
        m = self.stack[-1]
        return f"{type(m).__name__} {self.names[m]!r}"

    def freeze(self, labels: torch.Tensor, reason: str) -> None:
        self.freeze_ids(labels.reshape(-1).unique().tolist(), reason)

    def freeze_ids(self, labels: Sequence[int], reason: str) -> None:
        for lab in labels:
            if lab != NONE:
                self.result.frozen.setdefault(int(lab), reason)

    def unit(self, a: int, b: int, why: str = "") -> None:
        """Labels `a` and `b` go together; one of them alone (the other unremovable) freezes it."""
        if a >= 0 and b >= 0:
            if a != b:
                self.result.units.append((a, b))
        elif a >= 0 or b >= 0:
            self.freeze_ids([max(a, b)], why or f"{self.where()} ties them to channels that cannot be removed")

    def read_size(self, x: Any, dim: int | None = None) -> None:
        """The code read the shape of `x` (or its size along `dim`): the channels of `x` go to the trial
        cut, since that width may size another tensor (timm's LambdaLayer reshapes its value path with
        its input's C). A size read along a dim the channels do not vary along is no channel width."""
        if not isinstance(x, torch.Tensor) or self.quiet or not self.labelled(x):
            return
        L = self.get(x)[0]
        if dim is not None and x.dim() and dim % x.dim() not in varying_dims(L):
            return
        self.risky(L)

    def fold_ids(self, labels: Sequence[int], reader: str) -> None:
        """Masked, these labels reach `reader` nonzero (a scalar bias after the activation): removing them
        must add their constant contribution to the reader's bias (`Graph.fold_constants`). The trial
        cut checks that the value is a constant indeed."""
        for lab in labels:
            if lab != NONE:
                self.result.folds.setdefault(int(lab), set()).add(reader)
        self.risky(labels)

    def risky(self, labels: Any) -> None:
        """These labels pass an op that addresses channels by size or position, or a user layer: the
        trial cut (`_verify.py`) checks their group, since a size may be written in the code."""
        values = labels.reshape(-1).unique().tolist() if isinstance(labels, torch.Tensor) else labels
        self.result.risky.update(int(v) for v in values if v != NONE)

    def segment(self, labels: Sequence[int]) -> None:
        """At least one of `labels` must stay (only when every position of the piece is removable)."""
        if labels and all(lab >= 0 for lab in labels):
            self.result.segments.append(tuple(labels))

    def bind(self, value: Any, parts: Sequence[Sequence[int]], kind: type) -> bool:
        """Remember which attribute of the running module holds `value`, a size computed from `parts`.

        Only an attribute that alone holds exactly that value is bound; False when there is none (the
        size may be computed from the input's shape, which follows the cut by itself; the trial cut
        tells).
        """
        owner = self.stack[-1] if self.stack else self.model
        hits = [k for k, v in vars(owner).items() if not k.startswith("_") and _same(v, value)]
        if len(hits) != 1:
            return False
        attr = hits[0]
        self.result.bindings.append(
            Binding(self.names[owner], attr, tuple(tuple(p) for p in parts), type(getattr(owner, attr)))
        )
        return True

    def axis(self, key: tuple[str, str, int], role: Role, labels: Sequence[int]) -> None:
        """Positions along dim `key[2]` of tensor `key[1]` of module `key[0]` carry `labels`."""
        labels = list(labels)  # a copy: a reused module's axis is edited in place below
        if key not in self.result.axes:
            self.result.axes[key] = (role, labels)
            return
        old = self.result.axes[key][1]
        if len(old) != len(labels):
            self.freeze_ids(old + labels, f"{key[0]!r} is used with inputs of different widths")
            return
        for i, (a, b) in enumerate(zip(old, labels, strict=True)):
            if a >= 0 and b >= 0:
                self.uf.union(a, b)
            elif a >= 0 or b >= 0:  # the module is reused on channels that cannot be removed
                self.freeze_ids([max(a, b)], f"{key[0]!r} also runs on channels that cannot be removed")
                old[i] = max(a, b)

    def check_grid(self, t: torch.Tensor, op: str) -> None:
        """Labels spread over several dims (after a view or stack) must go in whole slices along one of them."""
        L, _ = self.get(t)
        varying = sorted(varying_dims(L))
        if len(varying) < 2:
            return
        d = max(varying, key=lambda i: (t.shape[i], i))  # cut along the longest (the channels)
        rows = expand(L, [t.shape[i] if i in varying else 1 for i in range(t.dim())]).movedim(d, 0)
        rows = rows.reshape(rows.shape[0], -1)
        rep = rows.amax(1, keepdim=True).expand_as(rows)
        partial = (rows < 0) & (rep >= 0)
        if bool(partial.any()):
            self.freeze(rep[partial], f"{op} in {self.where()} mixes channels with positions that cannot be removed")
        keep = (rows >= 0) & (rows != rep)
        for a, b in torch.stack([rep[keep], rows[keep]], 1).unique(dim=0).tolist():
            self.result.units.append((a, b))

    def unknown(self, name: str, args: tuple, kwargs: dict, out: Any, extra: str = "") -> None:
        """An op no rule covers: the channels it touches stay, and its outputs belong to none."""
        for t in tensors(list(args)) + tensors(kwargs):
            if self.labelled(t):
                self.freeze(self.get(t)[0], f"{name or 'an op'} in {self.where()} is not supported{extra}")
        for t in tensors(out):
            self.clear(t)

    def writer(self, name: str, n: int) -> int:
        """The first label of module `name`'s `n` output rows (the same on every call)."""
        if name not in self.result.writers:
            self.result.writers[name] = (self.uf.make(n), n)
        return self.result.writers[name][0]

    # ------------------------------------------------------------------------------------ hooks
    def pre_hook(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        if self.quiet:
            return
        self.stack.append(module)
        if self.leaf:
            self.leaf += 1
        elif isinstance(module, WRITERS + OPAQUE) or self.names.get(module) in self.opaque:
            self.leaf = 1
        elif not isinstance(module, KNOWN) and hasattr(module, "eps"):
            self.quiet += 1  # the probe's own ops are not traced
            try:
                found = stat_norm(self, module, args, kwargs)
            finally:
                self.quiet -= 1
            if found is not None:
                name = self.names[module]
                self.stat_norms[name] = found
                self.result.rescales[name] = found.exponent
                self.leaf = 1

    def post_hook(self, module: nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
        if self.quiet:
            return
        if isinstance(module, COUNTED) and self.result.macs is not None:
            self._count(module, args, kwargs, output)
        self.stack.pop()
        if not self.leaf:
            return
        self.leaf -= 1
        if self.leaf:
            return
        self.stack.append(module)
        self.quiet += 1
        try:
            leaf(self, module, args, kwargs, output)
        except Exception as exc:
            self.unknown(type(module).__name__, args, kwargs, output, f" ({type(exc).__name__}: {str(exc)[:80]})")
        finally:
            self.quiet -= 1
            self.stack.pop()

    def _count(self, module: nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
        """Charge one call of a counted layer, as `prunus.count`'s hook does (the pass is the model's own)."""
        macs = self.result.macs
        assert macs is not None
        if not isinstance(output, torch.Tensor):
            self.result.macs = None
            return
        name = self.names[module]
        self.quiet += 1  # numel() below is no op of the model
        try:
            macs[name] = macs.get(name, 0) + call_macs(module, output, (*args, *kwargs.values()))
        except TypeError:  # a transposed conv called without an input tensor: count's own pass decides
            self.result.macs = None
        finally:
            self.quiet -= 1


def _same(value: Any, target: Any) -> bool:
    if isinstance(target, int):
        return type(value) is int and value == target
    return isinstance(value, (list, tuple)) and list(value) == list(target) and all(type(v) is int for v in value)


# ------------------------------------------------------------------------------------ the trace
def random_like(x: Any, gen: torch.Generator) -> Any:
    """`x` (a tensor, or a dict / list / tuple of them) with its float tensors redrawn from N(0, 1)."""
    if isinstance(x, torch.Tensor):
        if not x.is_floating_point():
            return x
        return torch.randn(x.shape, generator=gen, dtype=torch.float32).to(dtype=x.dtype, device=x.device)
    if isinstance(x, dict):
        return {k: random_like(v, gen) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return type(x)(random_like(v, gen) for v in x)
    return x


def random_other(x: Any, seed: int) -> Any:
    """`random_like(x)` from a generator seeded `seed`, redrawn while it equals `x` itself.

    The checks that run a model on "another input" (trial cuts, constant folding) must not get the
    example back: one drawn with `torch.manual_seed(seed); torch.randn(...)`, as users often write
    it, is exactly the first draw.
    """
    gen = torch.Generator().manual_seed(seed)
    while True:
        y = random_like(x, gen)
        if not _equal_inputs(x, y):
            return y


def _equal_inputs(x: Any, y: Any) -> bool:
    floats = [(a, b) for a, b in zip(tensors(x), tensors(y), strict=True) if a.is_floating_point()]
    return bool(floats) and all(torch.equal(a, b) for a, b in floats)


def forward(model: nn.Module, inputs: Any) -> Any:
    if isinstance(inputs, dict):
        return model(**inputs)
    if isinstance(inputs, (tuple, list)):
        return model(*inputs)
    return model(inputs)


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """`model` in eval mode, then the modules that were training put back (and only those: setting a
    flag on every module of a large model, per trial cut, cost more than the cut itself).

    Example:
        >>> with eval_mode(model):  # doctest: +SKIP
        ...     out = model(x)
    """
    training = [m for m in model.modules() if m.training]
    if training:
        model.eval()
    try:
        yield
    finally:
        for m in training:
            m.training = True


def trace(model: nn.Module, example_inputs: Any, opaque: frozenset[str] = frozenset()) -> Trace:
    """Run `model` once on `example_inputs` in eval mode, without gradients, and return what it found.

    The model's train/eval flags are restored. Channels reaching a model output are frozen.
    Exceptions from the model itself propagate (the caller turns them into a `StructureError`).
    """
    tr = Tracer(model, opaque)
    handles = []
    for m in model.modules():
        handles.append(m.register_forward_pre_hook(tr.pre_hook, with_kwargs=True))
        handles.append(m.register_forward_hook(tr.post_hook, with_kwargs=True, always_call=True))
    try:
        with eval_mode(model):
            with torch.no_grad(), _Mode(tr):
                out = forward(model, example_inputs)
            for t in tensors(out):
                if tr.labelled(t):
                    tr.freeze(tr.get(t)[0], "its channels are a model output")
    finally:
        for h in handles:
            h.remove()
    return tr.result
