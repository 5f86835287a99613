"""Rules for layers: convs and linears (writers and consumers), and the functional normalisations.

Convs and linears are traced as whole modules (`Tracer.pre_hook` / `post_hook`): a consumer
records which channel each input column belongs to, a writer gives its output rows fresh labels;
a depthwise conv passes its input's channels through. A conv or linear subclass with a forward of
its own is probed on a copy (`_probe`). BatchNorm, GroupNorm, InstanceNorm, LayerNorm, PReLU and a
functional depthwise conv are read through their `torch.nn.functional` calls, so custom layers
built on those calls are handled the same way.

A normalisation by a statistic over the channels (RMSNorm, ConvNeXt-V2's global response norm) is
exact to prune once its eps and weight are rescaled: a mean over C channels of which C - C' are
masked to zero is C'/C times the mean over the C' kept ones. Such a layer (a module of its own
with a float `eps`, a per-channel weight and bias, and nothing else learned) is recognised by
`stat_norm`, which cuts half the channels of a copy and finds the rescale that reproduces the
masked layer; the cut then applies it (`_cut.apply_plan`).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from prunus.structure import _ops
from prunus.structure._cut import rescale_stat_norm
from prunus.structure._labels import expand, fresh, tensors, varying_dims
from prunus.structure.parametrized import bake_, why_not_editable
from prunus.structure.roles import Role

#: the `_trace.Tracer` whose state the rules read and record (not imported: it imports the rules)
Tracer = Any

__all__ = ["FUNCTIONAL", "KNOWN", "OPAQUE", "WRITERS", "StatNorm", "channel_dim", "leaf", "stat_norm"]

# modules whose forward the tracer does not look into: writers, and modules it does not support
WRITERS = (nn.modules.conv._ConvNd, nn.Linear)
OPAQUE = (nn.MultiheadAttention, nn.RNNBase, nn.Embedding, nn.EmbeddingBag, nn.Bilinear)
#: module types whose parameters are read through known calls (never treated as bare parameters)
KNOWN = WRITERS + OPAQUE + (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm, nn.PReLU)
_BASE_FORWARDS = {nn.Conv1d.forward, nn.Conv2d.forward, nn.Conv3d.forward, nn.Linear.forward,
                  nn.ConvTranspose1d.forward, nn.ConvTranspose2d.forward, nn.ConvTranspose3d.forward}  # fmt: skip
_NORM_ROLES = {"weight": Role.BN_WEIGHT, "bias": Role.BN_BIAS, "running_mean": Role.BN_MEAN, "running_var": Role.BN_VAR}


def channel_dim(p: torch.Tensor) -> int | None:
    """The one dimension of a per-channel tensor (shape (C,), (C, 1, 1), (1, C, 1, 1)), else None."""
    dims = [d for d, size in enumerate(p.shape) if size > 1]
    return dims[0] if len(dims) == 1 else None


def _can_fold_into(m: nn.Module) -> bool:
    """A reader whose output a constant input channel shifts by a constant: a Linear, or a plain conv
    (groups 1) without padding, so every output position sees the whole kernel (its bias takes the
    shift; `Graph.fold_constants` adds one where there is none)."""
    if _is_custom(m):
        return False
    if isinstance(m, nn.Linear):
        return True
    if m.transposed:  # a constant input meets a different kernel tap at each output position
        return False
    padding = m.padding if isinstance(m.padding, tuple) else (m.padding,)
    return m.groups == 1 and (padding == ("valid",) or all(p == 0 for p in padding))


def _is_custom(m: nn.Module) -> bool:
    """A conv/linear subclass whose forward is its own, or that holds tensors of its own."""
    own = set(m._parameters) | set(m._buffers)
    return type(m).forward not in _BASE_FORWARDS or bool(own - {"weight", "bias"})


def leaf(tr: Tracer, m: nn.Module, args: tuple, kwargs: dict, out: Any) -> None:
    name = tr.names[m]
    x = args[0] if args else next(iter(kwargs.values()), None)
    if name in tr.stat_norms:
        _stat_norm_rule(tr, m, name, x, out, tr.stat_norms[name])
        return
    transposed = _unsupported_transposed(m)
    if name in tr.opaque or isinstance(m, OPAQUE) or transposed:
        if name in tr.opaque:
            why = f"it passes through ignored module {name!r}"
        else:
            why = f"{type(m).__name__} {name!r} is not supported" + (f" ({transposed})" if transposed else "")
        for t in tensors(list(args)) + tensors(kwargs):
            if tr.labelled(t):
                tr.freeze(tr.get(t)[0], why)
        for t in tensors(out):
            tr.clear(t)
        return
    if not isinstance(x, torch.Tensor) or not isinstance(out, torch.Tensor):
        tr.unknown(type(m).__name__, args, kwargs, out)
        return
    _writer(tr, m, name, x, out)


def _unsupported_transposed(m: nn.Module) -> str | None:
    """Why a transposed conv cannot be traced as a writer, or None (not one, or a plain groups=1 one).

    A plain ConvTranspose reads its input channels on weight dim 0 and writes its output channels on
    dim 1; grouped ones interleave both inside each group, and a subclass with a forward of its own
    would need a probe that cuts the transposed dims: neither is traced, their channels stay.
    """
    if not getattr(m, "transposed", False):
        return None
    if m.groups != 1:
        return "grouped"
    if _is_custom(m):
        return "a forward or tensors of its own"
    return None


@dataclass
class _Probe:
    out_ok: bool = True
    in_ok: bool = True
    zero: bool = True
    extras: list[tuple[str, int]] = field(default_factory=list)
    opaque: str | None = None


def _writer(tr: Tracer, m: nn.Module, name: str, x: torch.Tensor, out: torch.Tensor) -> None:
    """A conv or linear: consumer of its input's channels, writer of fresh output channels."""
    conv = isinstance(m, nn.modules.conv._ConvNd)
    cdim = 1 if conv else x.dim() - 1
    cin, cout = (m.in_channels, m.out_channels) if conv else (m.in_features, m.out_features)
    g = m.groups if conv else 1
    # the weight dims of the output rows and input columns: a ConvTranspose stores (in, out, *kernel)
    w_out, w_in = (1, 0) if conv and m.transposed else (0, 1)
    depthwise = conv and g > 1 and g == cin == cout
    unsafe = why_not_editable(m)  # a parametrized weight no cut can be written through: no probe either
    probe = _probe(tr, m, x, out) if _is_custom(m) and not unsafe else _Probe()
    kind = f"{type(m).__name__} {name!r}"
    col: list[int] | None = None
    if tr.labelled(x):
        L, Z = tr.get(x)
        if varying_dims(L) - {cdim}:
            why = (
                f"{kind} reads positions of different channels along one input channel (after a pixel_shuffle, "
                "or ECA attention's conv over the channels)"
            )
            tr.freeze(L, why)
            if not depthwise:  # its output positions follow those channels, not its rows: none can go
                tr.freeze_ids(range(tr.writer(name, cout), tr.writer(name, cout) + cout), why)
            tr.clear(out)
            return
        else:
            shape = [cin if d == cdim else 1 for d in range(x.dim())]
            col = expand(L, shape).reshape(-1).tolist()
            zcol = expand(Z, shape).reshape(-1).tolist()
            bad = [c for c, z in zip(col, zcol, strict=True) if c >= 0 and not z]
            if bad and _can_fold_into(m):
                tr.fold_ids(bad, name)
            else:
                tr.freeze_ids(bad, f"its masked channels are not zero where {name!r} reads them (e.g. after a sigmoid)")
            if not probe.in_ok:
                tr.freeze_ids(col, f"{kind} changes its other outputs when an input channel goes (e.g. it "
                              "standardises its weight over its inputs)")  # fmt: skip
            if probe.opaque:
                tr.freeze_ids(col, probe.opaque)
            if not depthwise and g == 1:
                tr.axis((name, "weight", w_in), Role.IN, col)
            elif not depthwise:
                s = cin // g
                if s == 1:
                    tr.freeze_ids(col, f"grouped conv {name!r} has one input channel per group")
                else:
                    tr.axis((name, "weight", 1), Role.IN_GROUPED, col)
                    for b in range(1, g):
                        for o in range(s):
                            tr.unit(col[o], col[b * s + o])
    odim = out.dim()
    if depthwise:  # the channels pass through: its rows follow the input's channels
        if col is None:
            tr.clear(out)
            return
        rows = col
        tr.axis((name, "weight", 0), Role.DW, rows)
        if m.bias is not None:
            tr.axis((name, "bias", 0), Role.DW_BIAS, rows)
        lab = torch.tensor(rows, dtype=torch.long).reshape([cout if d == 1 else 1 for d in range(odim)])
    else:
        base = tr.writer(name, cout)
        rows = list(range(base, base + cout))
        # its rows may be one piece of a wider group (a MixedConv's convs concatenated, then added to a
        # residual stream): it keeps one of them, or it is left with 0 output channels
        tr.segment(rows)
        tr.axis((name, "weight", w_out), Role.OUT, rows)
        if m.bias is not None:
            tr.axis((name, "bias", 0), Role.BIAS, rows)
        if g > 1:
            so = cout // g
            if so == 1:
                tr.freeze_ids(rows, f"grouped conv {name!r} has one output channel per group")
            for b in range(1, g):
                for o in range(so):
                    tr.unit(rows[o], rows[b * so + o])
        lab = fresh(base, cout, odim, 1 if conv else odim - 1)
    for attr, d in probe.extras:
        tr.axis((name, attr, d), Role.PARAM, rows)
    if _is_custom(m):  # the probe cut one row and one column: the trial cut checks the rest
        tr.risky(rows)
        tr.risky(col or [])
    if not probe.out_ok:
        tr.freeze_ids(rows, f"{kind} changes its other outputs when an output channel goes")
    if probe.opaque:
        tr.freeze_ids(rows, probe.opaque)
    if unsafe:  # its rows and the input channels it reads stay: no cut through it is exact
        tr.freeze_ids(rows, f"{kind} {unsafe}")
        tr.freeze_ids(col or [], f"{kind} {unsafe}")
    tr.set(out, lab, torch.full([1] * odim, probe.zero, dtype=torch.bool))


def _probe(tr: Tracer, m: nn.Module, x: torch.Tensor, y: torch.Tensor) -> _Probe:
    """Cut one output row / input column of a custom conv or linear on a copy and compare (see module docstring)."""
    conv = isinstance(m, nn.modules.conv._ConvNd)
    cout = m.out_channels if conv else m.out_features
    cin = m.in_channels if conv else m.in_features
    probe = _Probe()
    for attr, t in [*m._parameters.items(), *m._buffers.items()]:
        if attr in ("weight", "bias") or t is None:
            continue
        d = channel_dim(t)
        if d is not None and t.shape[d] == cout:
            probe.extras.append((attr, d))
        elif t.numel() > 1:
            probe.opaque = (
                f"{type(m).__name__} {tr.names[m]!r} holds {attr!r}, which is not one value per output channel"
            )
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(x.shape, generator=gen, dtype=x.dtype).to(x.device) if x.is_floating_point() else x
    cdim = 1 if conv else x.dim() - 1
    tensors = [("weight", 0), ("bias", 0), *probe.extras]
    m = _generic_copy(m, [attr for attr, _ in tensors], gen)

    def edit(keep_rows: list[int] | None, zero_row: int | None, keep_cols: list[int] | None) -> nn.Module:
        # `m` is already a hook-free copy and every tensor cut below is replaced on `c`: a shallow copy
        # with its own tensor tables is enough (three deep copies per probed layer were most of its cost)
        c = copy.copy(m)
        c._parameters, c._buffers = dict(m._parameters), dict(m._buffers)
        for attr, d in tensors:
            t = getattr(c, attr, None)
            if t is None:
                continue
            new = t.detach().clone()
            if keep_rows is not None:
                new = new.index_select(d, torch.tensor(keep_rows, device=t.device))
            if zero_row is not None:
                new.index_fill_(d, torch.tensor([zero_row], device=t.device), 0.0)
            if keep_cols is not None and attr == "weight":
                new = new.index_select(1, torch.tensor(keep_cols, device=t.device))
            _replace(c, attr, new)
        n_out, n_in = c.weight.shape[0], c.weight.shape[1] * (c.groups if conv else 1)
        if conv:
            c.out_channels, c.in_channels = n_out, n_in
        else:
            c.out_features, c.in_features = n_out, n_in
        return c

    try:
        with torch.no_grad():
            ref = m(x)
            scale = 1e-5 * (1.0 + float(ref.abs().max()))
            if cout > 1:
                j = cout // 2
                keep = [i for i in range(cout) if i != j]
                got = edit(keep, None, None)(x)
                want = ref.index_select(cdim, torch.tensor(keep, device=ref.device))
                probe.out_ok = got.shape == want.shape and bool(((got - want).abs() <= scale).all())
                zeroed = edit(None, j, None)(x)
                probe.zero = bool((zeroed.select(cdim, j).abs() <= scale).all())
            if cin > 1 and (not conv or m.groups == 1):
                i = cin // 2
                keep = [k for k in range(cin) if k != i]
                xz = x.clone()
                xz.select(cdim, i).zero_()
                got = edit(None, None, keep)(x.index_select(cdim, torch.tensor(keep, device=x.device)))
                want = m(xz)
                probe.in_ok = got.shape == want.shape and bool(((got - want).abs() <= scale).all())
    except Exception:  # a module we cannot even cut on a copy: keep its channels
        probe.out_ok = probe.in_ok = probe.zero = False
    return probe


@dataclass(frozen=True)
class StatNorm:
    """How a normalisation over the channels is pruned (see the module docstring).

    Cutting C - C' of its C channels multiplies its `eps` by C/C' and its weight by (C/C')**exponent
    (1/2 when the statistic is a mean of squares under a square root, RMSNorm; 1 when it is a mean
    of norms, GRN). `zero`: a masked channel comes out as zero.
    """

    dim: int
    exponent: float
    zero: bool


#: the rescale exponents `stat_norm` tries, in order
_EXPONENTS = (0.5, 1.0)


def _stat_norm_candidate(m: nn.Module, x: Any, dim: int) -> bool:
    """A module of its own holding a float `eps` and at most a weight and a bias of one value per channel."""
    if isinstance(m, KNOWN) or type(m).forward is nn.Module.forward:
        return False
    if not (isinstance(getattr(m, "eps", None), float) or (hasattr(m, "eps") and m.eps is None)):
        return False
    c = x.shape[dim]
    for sub_name, t in [*m.named_parameters(), *m.named_buffers()]:
        if sub_name not in ("weight", "bias") or t.dim() != 1 or t.shape[0] != c:
            return False
    return c > 1


def stat_norm(tr: Tracer, m: nn.Module, args: tuple, kwargs: dict) -> StatNorm | None:
    """The rescale that prunes module `m` exactly, if it normalises by a statistic over its input's channels.

    Called before `m` runs on a labelled input whose channels lie along one dim. On a copy with random
    weight and bias, half the channels are masked (input and parameters zeroed) and the output is
    compared with the copy cut to the other half, for each exponent; the first that matches wins.
    None when `m` is not such a layer (it is then traced as usual).
    """
    if kwargs or len(args) != 1 or not isinstance(args[0], torch.Tensor) or not args[0].is_floating_point():
        return None
    x = args[0]
    if not tr.labelled(x):
        return None
    varying = varying_dims(tr.get(x)[0])
    if len(varying) != 1:
        return None
    dim = next(iter(varying))
    if not _stat_norm_candidate(m, x, dim):
        return None
    c = x.shape[dim]
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(x.shape, generator=gen).to(dtype=x.dtype, device=x.device)
    gone, keep = torch.arange(1, c, 2, device=x.device), torch.arange(0, c, 2, device=x.device)
    ratio = c / len(keep)
    try:
        with torch.no_grad():
            masked = _bare_copy(m).eval()
            for t in [*masked.parameters(), *masked.buffers()]:
                t.copy_(torch.randn(t.shape, generator=gen).to(t.dtype) + 0.5)  # GRN's weight starts at 0
            base = _bare_copy(masked)
            xz = x.clone()
            xz.index_fill_(dim, gone, 0.0)
            for t in [*masked.parameters(), *masked.buffers()]:
                t.index_fill_(0, gone.to(t.device), 0.0)
            ref = masked(xz)
            if not isinstance(ref, torch.Tensor) or ref.shape != x.shape:
                return None
            scale = 1e-5 * (1.0 + float(ref.abs().max()))
            zero = bool((ref.index_select(dim, gone).abs() <= scale).all())
            want = ref.index_select(dim, keep)
            for exponent in _EXPONENTS:
                cut = _bare_copy(base)
                rescale_stat_norm(cut, keep, ratio, exponent)
                got = cut(x.index_select(dim, keep))
                if got.shape == want.shape and bool(((got - want).abs() <= scale).all()):
                    return StatNorm(dim, exponent, zero)
    except Exception:  # a module we cannot cut on a copy is traced as usual
        return None
    return None


def _stat_norm_rule(tr: Tracer, m: nn.Module, name: str, x: Any, out: Any, info: StatNorm) -> None:
    """A normalisation over the channels: they pass through; its weight and bias follow them."""
    if not isinstance(x, torch.Tensor) or not isinstance(out, torch.Tensor) or out.shape != x.shape:
        tr.unknown(type(m).__name__, (x,), {}, out)
        return
    L, Z = tr.get(x)
    col = expand(L, [x.shape[d] if d == info.dim else 1 for d in range(x.dim())]).reshape(-1).tolist()
    tr.axis((name, "", 0), Role.BN_WEIGHT, col)  # the width whose change sets the rescale
    for attr in ("weight", "bias"):
        if isinstance(getattr(m, attr, None), torch.Tensor):
            tr.axis((name, attr, 0), Role.PARAM, col)
    tr.risky(col)  # the probe cut one half of a copy: the trial cut checks the model
    tr.set(out, L, Z if info.zero else torch.zeros_like(Z))


def _generic_copy(m: nn.Module, attrs: list[str], gen: torch.Generator) -> nn.Module:
    """A copy of `m` whose constant tensors among `attrs` get distinct values, for the probe to see through them.

    A gain initialised to zero (the last conv of each timm NFNet block) makes the layer's output zero
    whatever its weight, so every cut would look exact; once trained, the cut would change the other
    outputs (a weight standardised over its inputs, cut to one input, then fails outright).
    """
    c = bake_(_bare_copy(m))  # the probe looks at the layer's forward; its parametrization is checked apart
    for attr in attrs:
        t = getattr(c, attr, None)
        if t is None or not t.is_floating_point() or t.numel() == 0:
            continue
        t = t.detach()
        if bool((t == t.reshape(-1)[0]).all()):
            _replace(c, attr, t + 0.5 + torch.rand(t.shape, generator=gen, dtype=t.dtype).to(t.device))
    return c


def _bare_copy(m: nn.Module) -> nn.Module:
    """A deep copy of `m` without its hooks.

    The tracer's hooks are bound methods of the tracer, which holds the whole model: copying them
    copied the model (0.17 s of a 0.32 s prune of timm's starnet_s050, three copies of one head).
    """
    saved = {mod: {k: v for k, v in vars(mod).items() if "hooks" in k} for mod in m.modules()}
    try:
        for mod, hooks in saved.items():
            for k, v in hooks.items():
                setattr(mod, k, type(v)())
        return copy.deepcopy(m)
    finally:
        for mod, hooks in saved.items():
            for k, v in hooks.items():
                setattr(mod, k, v)


def _replace(module: nn.Module, attr: str, value: torch.Tensor) -> None:
    if attr in module._parameters:
        old = module._parameters[attr]
        module._parameters[attr] = nn.Parameter(value, requires_grad=old.requires_grad)
    else:
        module._buffers[attr] = value


# ------------------------------------------------------------------------------ functional rules
def _per_channel(tr: Tracer, x: torch.Tensor, op: str) -> list[int] | None:
    L, _ = tr.get(x)
    if varying_dims(L) - {1}:
        tr.freeze(L, f"{op} in {tr.where()} normalises positions of several channels together")
        return None
    return expand(L, [x.shape[1] if d == 1 else 1 for d in range(x.dim())]).reshape(-1).tolist()


def _member(tr: Tracer, t: Any, role: Role, col: list[int], op: str) -> bool:
    """Record tensor argument `t` (one value per channel) on the channels `col`; False if it is not a module's."""
    if t is None:
        return True
    info = tr.owned.get(id(t))
    if info is None or t.dim() != 1 or t.shape[0] != len(col):
        lab, _ = tr.get(t)
        if t.dim() == 1 and lab.numel() == len(col) and bool((lab >= 0).all()):
            tr.uf.union_arrays(lab, torch.tensor(col))
            return True
        tr.freeze_ids(col, f"{op} in {tr.where()} takes per-channel values the engine cannot cut")
        return False
    tr.axis((info[0], info[1], 0), role, col)
    return True


def _norm(tr: Tracer, name: str, func: Any, args: tuple, kwargs: dict, out: Any) -> None:
    x = args[0] if args else kwargs.get("input")
    if not isinstance(out, torch.Tensor) or not tr.labelled(x):
        return
    L, Z = tr.get(x)
    arg = _ops.arg
    if name == "layer_norm":
        n = len(arg(args, kwargs, 1, "normalized_shape"))
        _ops.mix(tr, x, [out], list(range(x.dim() - n, x.dim())), True, "layer_norm", False)
        return
    col = _per_channel(tr, x, name)
    if col is None:
        tr.clear(out)
        return
    owner = tr.stack[-1] if tr.stack else None
    if isinstance(owner, (nn.modules.batchnorm._NormBase, nn.GroupNorm)):
        tr.axis((tr.names[owner], "", 0), Role.BN_WEIGHT, col)  # the module's width (num_features)
    if name == "prelu":
        w = arg(args, kwargs, 1, "weight")
        if w.numel() > 1:
            _member(tr, w, Role.PRELU, col, name)
        tr.set(out, L, Z)
        return
    if name == "group_norm":
        groups = arg(args, kwargs, 1, "num_groups")
        tensors = {"weight": arg(args, kwargs, 2, "weight"), "bias": arg(args, kwargs, 3, "bias")}
        size = len(col) // groups
        if groups == 1:
            tr.freeze_ids(col, f"GroupNorm in {tr.where()} normalises all its {len(col)} channels together")
        for g in range(groups):
            for o in range(1, size):  # a GroupNorm group goes whole, or its statistics change
                tr.unit(col[g * size], col[g * size + o])
        zero = True
    else:
        keys = ("running_mean", "running_var", "weight", "bias")
        tensors = {k: arg(args, kwargs, i + 1, k) for i, k in enumerate(keys)}
        stats = name == "instance_norm" and arg(args, kwargs, 5, "use_input_stats", True)
        zero = tensors["weight"] is not None or bool(stats and tensors["bias"] is None)
    for key, t in tensors.items():
        zero &= _member(tr, t, _NORM_ROLES[key], col, name) or key.startswith("running")
    tr.set(out, L, torch.full(L.shape, zero, dtype=torch.bool))


def _fconv(tr: Tracer, name: str, func: Any, args: tuple, kwargs: dict, out: Any) -> None:
    """A functional conv outside a conv module: supported when it is depthwise (a blur pool's fixed filter)."""
    arg = _ops.arg
    x, w, b = args[0], arg(args, kwargs, 1, "weight"), arg(args, kwargs, 2, "bias")
    groups = arg(args, kwargs, 6, "groups", 1)
    if not tr.labelled(x):
        return
    c = x.shape[1]
    if not (groups == c and w.shape[0] == c and w.shape[1] == 1):
        tr.unknown(name, args, kwargs, out)
        return
    col = _per_channel(tr, x, name)
    if col is None:
        tr.clear(out)
        return
    ok = _member(tr, w, Role.DW, col, name) and _member(tr, b, Role.DW_BIAS, col, name)
    if isinstance(groups, int):
        tr.bind(groups, [col], int)
    tr.risky(col)
    L, _ = tr.get(x)
    tr.set(out, L, torch.full(L.shape, ok, dtype=torch.bool))


FUNCTIONAL = {
    **dict.fromkeys(("batch_norm", "instance_norm", "group_norm", "layer_norm", "prelu"), _norm),
    **dict.fromkeys(("conv1d", "conv2d", "conv3d"), _fconv),
}
