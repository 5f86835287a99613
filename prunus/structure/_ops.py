"""How each torch op moves channel labels: the rules the tracer applies to every call it sees.

Every rule reads the labels (`L`) and zero masks (`Z`, True where an element is exactly 0 once its
channel is masked) of the op's inputs from the tracer and sets those of its outputs:

- shape ops (view, cat, split, getitem, transpose, stack, ...) are replayed on the label tensors
  themselves, so labels land exactly where the data went; ops that address channels by a size
  or an index also record what must stay consistent when channels go (`_split`, `_getitem`);
- element-wise ops join the labels that meet at one position (a residual add couples both
  writers); an operand that does not shrink with the channels (a model input, a constant of
  full width) freezes them;
- ops that mix positions along some dims (reductions, softmax, pooling, normalisations) join the
  labels inside each mixed fiber, or freeze them when the mixing runs across the channels
  themselves (a mean over channels changes when one goes);
- anything else that touches labels freezes them: unknown means not removable, never guessed.

Example:
    >>> ZERO_PRESERVING["relu"], ZERO_PRESERVING["sigmoid"]
    (True, False)
    >>> "view" in SHAPE_OPS and "cat" in SHAPE_OPS
    True
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from prunus.structure._labels import NONE, compress, expand, tensors, varying_dims

#: the `_trace.Tracer` whose state the rules read and record (not imported: it imports the rules)
Tracer = Any

__all__ = ["HANDLERS", "SHAPE_OPS", "ZERO_PRESERVING", "arg"]

# ops replayed on the labels; split/chunk/getitem/narrow are replayed too, then checked by their rule


def _names(text: str) -> list[str]:
    return text.split()


SHAPE_OPS = frozenset(
    _names(
        "view reshape flatten unflatten permute transpose t unsqueeze squeeze expand expand_as contiguous clone "
        "movedim moveaxis swapaxes swapdims flip repeat tile repeat_interleave pixel_shuffle pixel_unshuffle "
        "channel_shuffle native_channel_shuffle view_as reshape_as cat concat concatenate stack hstack vstack"
    )
)
# shape ops whose arguments give sizes (a channel count written in the code would not follow a cut)
_SIZED = frozenset(_names("view reshape unflatten expand repeat tile"))
# ops whose output is their input's data, relabelled as it is
IDENTITY = frozenset(_names("detach float double half bfloat16 to type type_as cpu cuda requires_grad_ alias"))
# ops that make a tensor shaped like their input from nothing but its shape
CREATION = frozenset(
    _names(
        "zeros_like ones_like empty_like full_like rand_like randn_like randint_like new_zeros new_ones "
        "new_empty new_full new_tensor"
    )
)
# element-wise unary ops: does f(0) == 0 (so a masked channel stays exactly zero)?
ZERO_PRESERVING = {
    **dict.fromkeys(
        _names(
            "relu relu_ relu6 leaky_relu leaky_relu_ gelu silu silu_ mish mish_ hardswish hardswish_ elu elu_ "
            "selu selu_ celu celu_ tanh tanh_ hardtanh hardtanh_ softsign tanhshrink hardshrink softshrink "
            "dropout dropout_ dropout1d dropout2d dropout3d alpha_dropout feature_alpha_dropout neg neg_ "
            "negative abs abs_ sign sin sin_ sqrt sqrt_ square erf expm1 log1p round floor ceil trunc "
            "nan_to_num __neg__ __abs__ identity"
        ),
        True,
    ),
    **dict.fromkeys(
        _names(
            "sigmoid sigmoid_ hardsigmoid hardsigmoid_ exp exp_ cos cos_ softplus logsigmoid reciprocal rsqrt "
            "log log_ erfc logical_not bitwise_not __invert__ __inv__"
        ),
        False,
    ),
}
# element-wise binary ops, by how a masked (zero) operand reaches the output
ADD_LIKE = frozenset(
    _names(
        "add add_ __add__ __radd__ __iadd__ sub sub_ __sub__ __rsub__ __isub__ rsub subtract maximum minimum "
        "fmax fmin where lerp lerp_"
    )
)
MUL_LIKE = frozenset(_names("mul mul_ __mul__ __rmul__ __imul__ multiply"))
DIV_LIKE = frozenset(_names("div div_ __truediv__ __itruediv__ true_divide divide floor_divide __floordiv__"))
RDIV_LIKE = frozenset(_names("__rtruediv__ __rdiv__ __rfloordiv__"))
CMP_LIKE = frozenset(
    _names(
        "eq ne gt ge lt le __eq__ __ne__ __gt__ __ge__ __lt__ __le__ logical_and logical_or masked_fill "
        "masked_fill_ copysign"
    )
)
# reductions: name -> (index of the dim argument, index of keepdim, zero of zeros is zero)
REDUCTIONS = {
    "sum": (1, 2, True), "nansum": (1, 2, True), "mean": (1, 2, True), "nanmean": (1, 2, True),
    "amax": (1, 2, True), "amin": (1, 2, True), "prod": (1, 2, True), "logsumexp": (1, 2, False),
    "norm": (2, 3, True), "linalg_vector_norm": (2, 3, True), "var": (1, 3, True), "std": (1, 3, True),
    "argmax": (1, 2, False), "argmin": (1, 2, False), "all": (1, 2, False), "any": (1, 2, False),
}  # fmt: skip
# same-shape ops mixing positions along one dim: name -> (index of dim, zero of zeros is zero)
SCANS = {"softmax": (1, False), "log_softmax": (1, False), "cumsum": (1, True), "cumprod": (1, True)}
POOLS = frozenset(
    [
        "avg_pool1d",
        "avg_pool2d",
        "avg_pool3d",
        "max_pool1d",
        "max_pool2d",
        "max_pool3d",
        "max_pool1d_with_indices",
        "max_pool2d_with_indices",
        "max_pool3d_with_indices",
        "adaptive_avg_pool1d",
        "adaptive_avg_pool2d",
        "adaptive_avg_pool3d",
        "adaptive_max_pool1d",
        "adaptive_max_pool2d",
        "adaptive_max_pool3d",
        "adaptive_max_pool1d_with_indices",
        "adaptive_max_pool2d_with_indices",
        "adaptive_max_pool3d_with_indices",
        "lp_pool1d",
        "lp_pool2d",
        "lp_pool3d",
        "interpolate",
        "upsample",
        "upsample_nearest",
        "upsample_bilinear",
    ]
)


def arg(args: tuple[Any, ...], kwargs: dict[str, Any], i: int, name: str, default: Any = None) -> Any:
    """Positional argument `i`, or keyword `name`, or `default`."""
    if len(args) > i:
        return args[i]
    return kwargs.get(name, default)


def _dims(dim: Any, ndim: int) -> list[int]:
    if dim is None:
        return list(range(ndim))
    dims = [dim] if isinstance(dim, int) else list(dim)
    return sorted({d % ndim for d in dims}) if ndim else []


# ---------------------------------------------------------------------------------------- shape ops
def _replay(tr: Tracer, func: Callable, args: tuple, kwargs: dict, data: list[int]) -> tuple[list, list]:
    """Call `func` on the labels and on the zero masks instead of the data at positions `data`."""

    def swap(kind: int) -> tuple[tuple, dict]:
        new = list(args)
        for i in data:
            if isinstance(new[i], (list, tuple)):
                new[i] = type(new[i])(_as(tr.full(t)[kind]) if isinstance(t, torch.Tensor) else t for t in new[i])
            else:
                new[i] = _as(tr.full(new[i])[kind])
        return tuple(new), kwargs

    a, k = swap(0)
    labels = tensors(func(*a, **k))
    a, k = swap(1)
    zeros = [z.bool() for z in tensors(func(*a, **k))]
    return labels, zeros


def _as(t: torch.Tensor) -> torch.Tensor:
    return t.to(torch.uint8) if t.dtype == torch.bool else t


def shape_op(tr: Tracer, name: str, func: Callable, args: tuple, kwargs: dict, out: Any) -> None:
    if name in ("cat", "concat", "concatenate", "stack", "hstack", "vstack") and not args:
        args, kwargs = (kwargs.pop("tensors"),), kwargs
    inputs = tensors(args[0]) if args else []
    if not any(tr.labelled(t) for t in inputs):
        return
    labels, zeros = _replay(tr, func, args, kwargs, [0])
    sizes = {a for a in (*args[1:], *kwargs.values()) if isinstance(a, int) and a > 1}
    sizes |= {a for v in (*args[1:], *kwargs.values()) if isinstance(v, (list, tuple)) for a in v if isinstance(a, int)}
    for t, lab, z in zip(tensors(out), labels, zeros, strict=True):
        L = compress(lab)
        tr.set(t, L, compress(z))
        tr.check_grid(t, name)
        if name in _SIZED and any(t.shape[d] in sizes for d in varying_dims(L)):
            tr.risky(L)  # a size given for the channel dim: written in the code, or taken from the input?


def pixel_shuffle(tr: Tracer, name: str, func: Callable, args: tuple, kwargs: dict, out: Any) -> None:
    """pixel_shuffle(x, r) moves each r*r input channels into the space of one output channel.

    When the input's labels run along its channels only (a conv's output), those r*r channels are
    one unit, cut together, and the output channel carries the first one's label: the conv after it
    loses the one input channel they became. The output channel is zero once masked only when all
    r*r are. Otherwise the labels are replayed like any shape op.
    """
    x = args[0] if args else kwargs.get("input")
    r = arg(args, kwargs, 1, "upscale_factor")
    if not (isinstance(x, torch.Tensor) and isinstance(out, torch.Tensor) and isinstance(r, int) and x.dim() >= 3):
        shape_op(tr, name, func, args, kwargs, out)
        return
    L, Z = tr.get(x)
    cdim = x.dim() - 3
    if not tr.labelled(x) or varying_dims(L) - {cdim}:
        shape_op(tr, name, func, args, kwargs, out)
        return
    full = [x.shape[cdim] if d == cdim else 1 for d in range(x.dim())]
    blocks = expand(L, full).reshape(-1, r * r)
    for row in blocks.tolist():
        for lab in row[1:]:  # a channel that cannot go (unlabelled) keeps its whole block
            tr.unit(row[0], lab, "pixel_shuffle moves it into one channel with a channel that cannot be removed")
    shape = [1] * out.dim()
    shape[cdim] = blocks.shape[0]
    tr.set(out, blocks[:, 0].reshape(shape), expand(Z, full).reshape(-1, r * r).all(1).reshape(shape))


def identity(tr: Tracer, name: str, func: Callable, args: tuple, kwargs: dict, out: Any) -> None:
    if isinstance(out, torch.Tensor) and args and isinstance(args[0], torch.Tensor):
        L, Z = tr.get(args[0])
        tr.set(out, L, Z)


def creation(tr: Tracer, name: str, func: Callable, args: tuple, kwargs: dict, out: Any) -> None:
    for t in tensors(out):
        tr.clear(t)


def _pieces(tr: Tracer, x: torch.Tensor, dim: int, name: str) -> list[int] | None:
    """Labels along `dim` of `x` when they vary only along it; None (and frozen) when they vary elsewhere too."""
    L, _ = tr.get(x)
    others = varying_dims(L) - {dim}
    if others:
        tr.freeze(L, f"{name} in {tr.where()} cuts a tensor whose channels are spread over several dimensions")
        return None
    return expand(L, [x.shape[d] if d == dim else 1 for d in range(x.dim())]).reshape(-1).tolist()


def split(tr: Tracer, name: str, func: Callable, args: tuple, kwargs: dict, out: Any) -> None:
    """split / chunk / tensor_split / unbind: replay, then keep the pieces consistent when channels go."""
    x = args[0]
    if not tr.labelled(x):
        return
    shape_op(tr, name, func, args, kwargs, out)
    dim = arg(args, kwargs, 1 if name == "unbind" else 2, "dim", 0) % x.dim()
    L, _ = tr.get(x)
    if dim not in varying_dims(L):
        return
    col = _pieces(tr, x, dim, name)
    if col is None:
        return
    tr.risky(col)
    parts, start = [], 0
    for t in tensors(out):
        n = t.shape[dim] if name != "unbind" else 1
        parts.append(col[start : start + n])
        start += n
    if name in ("unbind", "tensor_split"):
        tr.freeze_ids(col, f"{name} in {tr.where()} splits the channels into a fixed number of pieces")
        return
    sections = args[1] if len(args) > 1 else None
    for key in ("split_size_or_sections", "split_size", "split_sizes", "chunks", "sections"):
        sections = kwargs.get(key, sections)
    for p in parts:  # every piece must keep a channel, or the code downstream gets an empty tensor
        tr.segment(p)
    if name == "chunk" or isinstance(sections, int):
        for p in parts[1:]:  # equal pieces lose the same offsets, so they stay equal
            for a, b in zip(parts[0], p, strict=False):
                tr.unit(a, b)
        # the piece width, or the whole width it is computed from (`x.split(self.chs // 2)`)
        if name == "split" and not tr.bind(sections, [parts[0]], int):
            tr.bind(sections * len(parts), [col], int)
    else:
        tr.bind(list(sections), parts, type(sections))


def _index_items(index: Any, ndim: int) -> list[tuple[int, Any]]:
    """(input dim, item) for each item of a getitem index that consumes an input dimension."""
    items = list(index) if isinstance(index, tuple) else [index]
    consuming = sum(1 for i in items if i is not None and i is not Ellipsis)
    out, d = [], 0
    for item in items:
        if item is None:
            continue
        if item is Ellipsis:
            d += ndim - consuming
            continue
        out.append((d, item))
        d += 1
    return out


def getitem(tr: Tracer, name: str, func: Callable, args: tuple, kwargs: dict, out: Any) -> None:
    x, index = args[0], args[1]
    if not tr.labelled(x):
        return
    L, _ = tr.get(x)
    shape_op(tr, name, func, args, kwargs, out)
    varying = varying_dims(L)
    for d, item in _index_items(index, x.dim()):
        if d not in varying:
            continue
        col = _pieces(tr, x, d, "indexing")
        if col is None:
            return
        tr.risky(col)
        if not isinstance(item, slice) or item.indices(len(col))[2] != 1:
            tr.freeze_ids(col, f"indexing in {tr.where()} picks single channels by position")
            continue
        start, stop, _ = item.indices(len(col))
        tr.segment(col[start:stop])
        for raw, end in ((item.start, start), (item.stop, stop)):
            if isinstance(raw, int) and 0 < raw < len(col):
                tr.bind(raw, [col[:end]], int)


def narrow(tr: Tracer, name: str, func: Callable, args: tuple, kwargs: dict, out: Any) -> None:
    x = args[0]
    if not tr.labelled(x):
        return
    shape_op(tr, name, func, args, kwargs, out)
    dim, start, length = (arg(args, kwargs, i, n) for i, n in ((1, "dim"), (2, "start"), (3, "length")))
    dim %= x.dim()
    if dim not in varying_dims(tr.get(x)[0]):
        return
    col = _pieces(tr, x, dim, name)
    if col is None:
        return
    tr.risky(col)
    start = int(start) % len(col)
    tr.segment(col[start : start + length])
    if isinstance(args[2] if len(args) > 2 else kwargs.get("start"), int):
        tr.bind(start, [col[:start]], int)
    tr.bind(length, [col[start : start + length]], int)


def setitem(tr: Tracer, name: str, func: Callable, args: tuple, kwargs: dict, out: Any) -> None:
    x, index, value = args[0], args[1], args[2]
    if not (tr.labelled(x) or (isinstance(value, torch.Tensor) and tr.labelled(value))):
        return
    tr.risky(tr.get(x)[0])
    if isinstance(value, torch.Tensor):
        tr.risky(tr.get(value)[0])
    L, Z = (t.clone() for t in tr.full(x))
    if isinstance(value, torch.Tensor):
        vl, vz = tr.full(value)
        L[index], Z[index] = vl, vz
    else:
        L[index], Z[index] = NONE, value == 0
    tr.set(x, compress(L), compress(Z.bool()))


def pad(tr: Tracer, name: str, func: Callable, args: tuple, kwargs: dict, out: Any) -> None:
    x, amounts = args[0], list(arg(args, kwargs, 1, "pad"))
    mode, value = arg(args, kwargs, 2, "mode", "constant"), arg(args, kwargs, 3, "value", None)
    if not tr.labelled(x):
        return
    L, Z = tr.get(x)
    varying = varying_dims(L)
    padded = {x.dim() - 1 - i // 2 for i in range(len(amounts)) if amounts[i]}
    zero = mode == "constant" and not value
    if not padded & varying:  # spatial padding: each padded element stays in its channel
        tr.set(out, L, Z if zero or mode != "constant" else torch.zeros_like(Z))
        return
    if mode != "constant":
        tr.freeze(L, f"{mode} padding across channels in {tr.where()}")
        return
    tr.risky(L)
    widths = [a if x.dim() - 1 - i // 2 in varying else 0 for i, a in enumerate(amounts)]
    tr.set(
        out, compress(F.pad(L, widths, value=NONE)), compress(F.pad(Z.to(torch.uint8), widths, value=int(zero)).bool())
    )


# ---------------------------------------------------------------------------------- element-wise ops
def unary(tr: Tracer, name: str, func: Callable, args: tuple, kwargs: dict, out: Any) -> None:
    x = args[0] if args else kwargs.get("input")
    if not isinstance(x, torch.Tensor) or not isinstance(out, torch.Tensor) or not tr.labelled(x):
        return
    L, Z = tr.get(x)
    keeps = ZERO_PRESERVING.get(name, False)  # the ops with scalar arguments below decide by them
    if name in ("clamp", "clamp_", "clip", "clip_", "hardtanh", "hardtanh_"):
        lo, hi = arg(args, kwargs, 1, "min"), arg(args, kwargs, 2, "max")
        keeps = (lo is None or lo <= 0) and (hi is None or hi >= 0)
    if name in ("pow", "pow_", "__pow__", "__ipow__"):
        exponent = arg(args, kwargs, 1, "exponent")
        keeps = isinstance(exponent, (int, float)) and not isinstance(exponent, bool) and exponent > 0
    if name in ("threshold", "threshold_", "_threshold"):
        keeps = arg(args, kwargs, 1, "threshold") < 0 or arg(args, kwargs, 2, "value") == 0
    tr.set(out, L, Z if keeps else torch.zeros_like(Z))


def binary(tr: Tracer, name: str, func: Callable, args: tuple, kwargs: dict, out: Any) -> None:
    """Element-wise ops of several operands (broadcasting): join the labels that meet, track zeros."""
    if not isinstance(out, torch.Tensor):
        return
    if name == "where":
        operands = [arg(args, kwargs, 1, "input"), arg(args, kwargs, 2, "other"), args[0]]
    elif name in ("masked_fill", "masked_fill_"):
        operands = [args[0], args[1]]
    else:
        operands = [a for a in (*args, kwargs.get("other")) if isinstance(a, (torch.Tensor, int, float, bool))]
    if not any(isinstance(o, torch.Tensor) and tr.labelled(o) for o in operands):
        return
    ndim = out.dim()
    labels, zeros, full = [], [], []
    for o in operands:
        if isinstance(o, torch.Tensor):
            L, Z = tr.get(o)
            lead = [1] * (ndim - L.dim())
            labels.append(L.reshape(lead + list(L.shape)))
            zeros.append(Z.reshape(lead + list(Z.shape)))
            full.append([1] * len(lead) + list(o.shape))
        else:
            labels.append(torch.full((1,) * ndim, NONE, dtype=torch.long))
            zeros.append(torch.full((1,) * ndim, bool(o == 0)))
            full.append([1] * ndim)
    # work at the broadcast of the compressed shapes: (1, C, 1, 1), not the full activation
    shape = [max(t.shape[d] for t in labels + zeros) for d in range(ndim)]  # all are 1 or the one size
    # an operand broadcast along the dims another one's channels run along (a one-channel gate over
    # all channels) does not go with any of them: it is not joined, and its own channels stay
    has = [bool((lab >= 0).any()) for lab in labels]
    varies = [varying_dims(lab) if h else set() for lab, h in zip(labels, has, strict=True)]
    spread = {
        j
        for j in range(len(labels))
        for i in range(len(labels))
        if i != j and varies[i] and has[j] and any(full[j][d] == 1 for d in varies[i])
    }
    for j in spread:
        tr.freeze(labels[j], f"{name} in {tr.where()} spreads them over other channels")
    labels = [t.expand(shape) for t in labels]
    zeros = [t.expand(shape) for t in zeros]
    joined = [lab if j not in spread else torch.full_like(lab, NONE) for j, lab in enumerate(labels)]
    merged = joined[0]
    for lab in joined[1:]:
        tr.uf.union_arrays(merged, lab)
        merged = torch.where(merged >= 0, merged, lab)
    summed = [j for j in range(len(labels)) if has[j] and j not in spread]
    if name in ADD_LIKE and name != "where" and len(summed) > 1 and len({tuple(full[j]) for j in summed}) == 1:
        tr.result.summed.update(int(v) for v in merged[merged >= 0].unique().tolist())  # a residual add
    # an addend that does not shrink with the channels it meets (full along a channel dim, unlabelled
    # there: a model input, a padded shortcut) would keep positions the cut removes: those channels
    # stay. (A factor of full width is left to the trial cut: a mask built from the input's shape
    # follows the cut, a constant does not.)
    varying = varying_dims(compress(merged))
    stuck = torch.zeros(shape, dtype=torch.bool)
    for lab, size in zip(labels, full, strict=True):
        if any(size[d] > 1 for d in varying):
            stuck |= (lab < 0) & (merged >= 0)
    if bool(stuck.any()):
        if name in ADD_LIKE or name in CMP_LIKE:
            tr.freeze(merged[stuck], f"{name} in {tr.where()} adds them to a tensor that cannot shrink with them")
        else:
            tr.risky(merged[stuck])
    if name in MUL_LIKE:  # one zero factor is enough (labelled: zero once masked; unlabelled: always zero)
        z = zeros[0]
        for zz in zeros[1:]:
            z = z | zz
    elif name in DIV_LIKE or name in RDIV_LIKE:
        num, den = (0, 1) if name in DIV_LIKE else (1, 0)
        if len(labels) > 1 and bool(((labels[den] >= 0) & zeros[den]).any()):
            tr.freeze(labels[den][labels[den] >= 0], f"{name} in {tr.where()} divides by them")
        z = zeros[num] & (labels[num] >= 0) if len(labels) > 1 else zeros[0]
    elif name in CMP_LIKE:
        z = torch.zeros(shape, dtype=torch.bool)
    else:  # add-like: zero only when every operand is
        z = zeros[0]
        for zz in zeros[1 : 2 if name == "where" else None]:
            z = z & zz
    tr.set(out, compress(merged.contiguous()), compress(z.contiguous()))


def glu(tr: Tracer, name: str, func: Callable, args: tuple, kwargs: dict, out: Any) -> None:
    x = args[0]
    if not tr.labelled(x):
        return
    dim = arg(args, kwargs, 1, "dim", -1) % x.dim()
    a, b = tr.full(x)[0].chunk(2, dim)
    tr.uf.union_arrays(a, b)
    za, _ = tr.full(x)[1].chunk(2, dim)
    tr.set(out, compress(torch.where(a >= 0, a, b).contiguous()), compress(za.contiguous()))


# ------------------------------------------------------------------------------------- mixing ops
def mix(tr: Tracer, x: torch.Tensor, outs: list[torch.Tensor], dims: list[int], keepdim: bool, op: str,
        zero_kept: bool, exact_sum: bool = False) -> None:  # fmt: skip
    """Positions along `dims` of `x` are mixed into each output element (see the module docstring)."""
    L, Z = tr.get(x)
    varying, mixed = varying_dims(L), set(dims)
    if not outs:
        return
    reduce_shape = not keepdim and outs[0].dim() < x.dim()
    if not varying & mixed:  # spatial mixing: every output element stays in its channel
        lab, z = L, Z.all(dim=tuple(dims), keepdim=True) if dims else Z
        if reduce_shape:
            lab, z = lab.squeeze(tuple(dims)), z.squeeze(tuple(dims))
        tr.set(outs[0], lab, z if zero_kept else torch.zeros_like(z))
        for o in outs[1:]:
            tr.clear(o)
        return
    full, fz = tr.full(x)
    if varying <= mixed:  # every channel mixes with every other one
        if exact_sum and bool(fz[full >= 0].all()):
            for o in outs:
                tr.clear(o)  # a sum of masked zeros: exact, and the result belongs to no channel
            return
        tr.freeze(L, f"{op} in {tr.where()} mixes the channels with each other")
        for o in outs:
            tr.clear(o)
        return
    # labels also vary along other dims: each fiber along `dims` must go as one channel
    keep = [d for d in range(x.dim()) if d not in mixed]
    fib = full.permute(*keep, *sorted(mixed)).reshape(*[x.shape[d] for d in keep], -1)
    rep = fib.amax(-1, keepdim=True)
    partial = ((fib < 0).any(-1, keepdim=True) & (rep >= 0)).expand_as(fib)
    if bool(partial.any()):
        tr.freeze(fib[partial], f"{op} in {tr.where()} mixes channels with positions that cannot be removed")
    tr.uf.union_arrays(rep.expand_as(fib), fib)
    shape = [x.shape[d] if d not in mixed else 1 for d in range(x.dim())]
    rep = rep.reshape([x.shape[d] for d in keep] + [1] * len(mixed))
    inv = [0] * x.dim()
    for i, d in enumerate(keep + sorted(mixed)):
        inv[d] = i
    rep = rep.permute(*inv).reshape(shape)
    z = fz.all(dim=tuple(dims), keepdim=True)
    if outs[0].dim() == x.dim() and outs[0].shape == x.shape:  # same-shape mixing (softmax)
        lab, z = expand(rep, x.shape), expand(z, x.shape)
    else:
        lab = rep
        if reduce_shape:
            lab, z = lab.squeeze(tuple(dims)), z.squeeze(tuple(dims))
    tr.set(outs[0], compress(lab.contiguous()), compress((z if zero_kept else torch.zeros_like(z)).contiguous()))
    for o in outs[1:]:
        tr.clear(o)


def reduction(tr: Tracer, name: str, func: Callable, args: tuple, kwargs: dict, out: Any) -> None:
    x = args[0] if args else kwargs.get("input")
    if not isinstance(x, torch.Tensor) or not tr.labelled(x):
        return
    if name in ("max", "min"):
        other = arg(args, kwargs, 1, "dim")
        if isinstance(other, torch.Tensor):
            return binary(tr, "maximum", func, args, kwargs, out)
        i_dim, i_keep, zero_kept = 1, 2, True
    else:
        i_dim, i_keep, zero_kept = REDUCTIONS[name]
    dim = arg(args, kwargs, i_dim, "dim", kwargs.get("axis"))
    keepdim = bool(arg(args, kwargs, i_keep, "keepdim", False))
    if name in ("var", "std") and isinstance(dim, bool):  # var(x, unbiased) without dims
        dim = None
    outs = tensors(out)
    mix(tr, x, outs[:1] if name in ("max", "min") else outs, _dims(dim, x.dim()), keepdim, name, zero_kept,
        exact_sum=name in ("sum", "nansum"))  # fmt: skip


def scan(tr: Tracer, name: str, func: Callable, args: tuple, kwargs: dict, out: Any) -> None:
    x = args[0] if args else kwargs.get("input")
    if not isinstance(x, torch.Tensor) or not tr.labelled(x):
        return
    i_dim, zero_kept = SCANS.get(name, (2, True))
    dim = arg(args, kwargs, i_dim, "dim", 1 if name in ("normalize", "local_response_norm") else None)
    if dim is None:
        dim = -1
    dims = _dims(dim, x.dim()) if name != "local_response_norm" else [1]
    mix(tr, x, tensors(out), dims, True, name, zero_kept)


def pool(tr: Tracer, name: str, func: Callable, args: tuple, kwargs: dict, out: Any) -> None:
    x = args[0] if args else kwargs.get("input")
    if not isinstance(x, torch.Tensor) or not tr.labelled(x):
        return
    outs = tensors(out)
    mix(tr, x, outs[:1], list(range(2, x.dim())), True, name, True)
    for o in outs[1:]:
        tr.clear(o)


def matmul(tr: Tracer, name: str, func: Callable, args: tuple, kwargs: dict, out: Any) -> None:
    """(..., n, k) @ (..., k, m): exact when the channels run along n (or m) and the sum runs over positions.

    A global-context block pools each channel with a spatial attention map this way. A product
    that sums over channels (attention logits), or channels on both sides, keeps them.
    """
    if name == "__rmatmul__":
        args = (args[1], args[0])
    a, b = args[0], args[1]
    if not isinstance(out, torch.Tensor) or a.dim() < 2 or b.dim() < 2 or out.dim() < 2:
        return tr.unknown(name, args, kwargs, out)
    (la, za), (lb, zb) = tr.get(a), tr.get(b)
    va, vb = varying_dims(la), varying_dims(lb)
    if va == {a.dim() - 1} and vb == {b.dim() - 2} and a.shape[-1] == b.shape[-2]:
        return _contract(tr, name, a, b, out)
    free_a, free_b = {a.dim() - 2}, {b.dim() - 1}
    source = None
    if (la >= 0).any() and va <= free_a and va:
        source = "a"
    if (lb >= 0).any() and vb <= free_b and vb:
        source = None if source else "b"
    why = f"{name} in {tr.where()} sums over their channels or mixes them"
    for lab, role in ((la, "a"), (lb, "b")):
        if bool((lab >= 0).any()) and role != source:
            tr.freeze(lab, why)
    if source is None:
        tr.clear(out)
        return
    lab, z = (la, za) if source == "a" else (lb, zb)
    n = out.dim()
    keep = [n - 2] if source == "a" else [n - 1]
    shape = [out.shape[d] if d in keep else 1 for d in range(n)]
    vec = (expand(lab, a.shape if source == "a" else b.shape)).movedim(-2 if source == "a" else -1, 0)
    vec = vec.reshape(vec.shape[0], -1)[:, 0]
    zv = expand(z, a.shape if source == "a" else b.shape).movedim(-2 if source == "a" else -1, 0)
    zv = zv.reshape(zv.shape[0], -1).all(1)
    tr.set(out, vec.reshape(shape).contiguous(), zv.reshape(shape).contiguous())


def _along_sum(t: torch.Tensor, shape: torch.Size, dim: int) -> torch.Tensor:
    """A compressed label or zero tensor as rows along `dim` (the summed dim of a product)."""
    return expand(t, shape).movedim(dim, -1).reshape(-1, shape[dim])


def _contract(tr: Tracer, name: str, a: torch.Tensor, b: torch.Tensor, out: Any) -> None:
    """Channels along the summed dim of both factors (attention logits `q^T @ k`): position i of `a`
    and position i of `b` go together. Removing both drops the term a_i * b_i, which masking zeroes
    when either factor's masked value is zero, so the cut is exact; the product has no channels."""
    (la, za), (lb, zb) = tr.get(a), tr.get(b)
    k = a.shape[-1]
    labels_a, labels_b = _along_sum(la, a.shape, -1)[0].tolist(), _along_sum(lb, b.shape, -2)[0].tolist()
    zero_a, zero_b = _along_sum(za, a.shape, -1).all(0).tolist(), _along_sum(zb, b.shape, -2).all(0).tolist()
    why = f"{name} in {tr.where()} sums them with channels that cannot be removed"
    for i in range(k):
        if zero_a[i] or zero_b[i]:
            tr.unit(labels_a[i], labels_b[i], why)
        else:
            tr.freeze_ids([labels_a[i], labels_b[i]], f"{name} in {tr.where()} sums them, neither factor masked to 0")
    tr.risky([lab for lab in labels_a + labels_b if lab >= 0])  # the trial cut checks the heads' sizes
    if isinstance(out, torch.Tensor):
        tr.clear(out)


HANDLERS: dict[str, Callable[..., None]] = {
    **dict.fromkeys(SHAPE_OPS, shape_op),
    **dict.fromkeys(IDENTITY, identity),
    **dict.fromkeys(CREATION, creation),
    **dict.fromkeys(ZERO_PRESERVING, unary),
    **dict.fromkeys(_names("clamp clamp_ clip clip_ pow pow_ __pow__ __ipow__ threshold threshold_ _threshold"), unary),
    **dict.fromkeys(ADD_LIKE | MUL_LIKE | DIV_LIKE | RDIV_LIKE | CMP_LIKE, binary),
    **dict.fromkeys(REDUCTIONS, reduction),
    "max": reduction,
    "min": reduction,
    **dict.fromkeys([*SCANS, "normalize", "local_response_norm"], scan),
    **dict.fromkeys(POOLS, pool),
    **dict.fromkeys(_names("split split_with_sizes chunk tensor_split unbind"), split),
    "__getitem__": getitem,
    "narrow": narrow,
    "__setitem__": setitem,
    "pad": pad,
    "glu": glu,
    "pixel_shuffle": pixel_shuffle,
    **dict.fromkeys(_names("matmul bmm __matmul__ __rmatmul__"), matmul),
}
