"""Channel labels: which removable channel every element of a traced tensor belongs to.

The tracer (`_trace.py`) gives every tensor of one forward pass a label tensor of the same rank:
element (b, c, h, w) holds the id of the channel it belongs to, or `NONE` (-1) when it belongs to
none (a model input, a constant, a mix of channels). Ids start as the output rows of convs and
linears; whenever two ids must be removed together (a residual add, BN entries, a consumer's
input column) they are joined in a `UnionFind`, and the class of an id is its root.

Label tensors are stored compressed: a dimension along which every label is the same is kept at
size 1 (a conv output's labels are (1, C, 1, 1) whatever its batch and spatial size), and expanded
without copying when an op needs the full shape. The same holds for the "zero" masks (see
`_trace.py`): True where the element is exactly 0 once its channel is masked.

Example:
    >>> uf = UnionFind()
    >>> a, b = uf.make(3), uf.make(3)
    >>> uf.union_arrays(torch.arange(a, a + 3), torch.arange(b, b + 3))
    >>> uf.find(b + 1) == uf.find(a + 1), uf.find(a) == uf.find(a + 1)
    (True, False)
    >>> compress(torch.arange(3).view(1, 3, 1).expand(2, 3, 4)).shape
    torch.Size([1, 3, 1])
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import torch

__all__ = ["NONE", "UnionFind", "compress", "expand", "fresh", "tensors", "unlabelled", "varying_dims"]

#: the label of an element that belongs to no removable channel
NONE = -1


class UnionFind:
    """Disjoint sets over dense integer ids, with path halving; a set's root is its smallest id.

    `union_arrays` (a residual add joins thousands of pairs) only records its pairs; they are joined
    in a few vectorised passes the next time a root is asked for (`find`, `union`, `table`), so a
    trace pays no Python call per channel. The roots are the same either way (always the smallest id).
    """

    def __init__(self) -> None:
        self.parent: list[int] = []
        self._pending: list[tuple[np.ndarray, np.ndarray]] = []

    def make(self, n: int) -> int:
        """Allocate `n` new singleton ids; returns the first."""
        base = len(self.parent)
        self.parent.extend(range(base, base + n))
        return base

    def find(self, a: int) -> int:
        self._join_pending()  # the pairs `union_arrays` recorded count from here on
        parent = self.parent
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    def union(self, a: int, b: int) -> int:
        """Join the sets of `a` and `b`; the smaller root survives (deterministic). Returns it."""
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return ra
        if rb < ra:
            ra, rb = rb, ra
        self.parent[rb] = ra
        return ra

    def union_all(self, ids: Iterable[int]) -> int | None:
        """Join every id of `ids` (NONE entries skipped); returns the root, or None when there were none."""
        root = None
        for i in ids:
            if i != NONE:
                root = i if root is None else self.union(root, i)
        return None if root is None else self.find(root)

    def union_arrays(self, a: torch.Tensor, b: torch.Tensor) -> None:
        """Join a[i] with b[i] wherever both are labelled (a and b broadcast to one shape)."""
        if a is b or (a.shape == b.shape and torch.equal(a, b)):
            return
        a, b = torch.broadcast_tensors(a, b)
        both = (a >= 0) & (b >= 0) & (a != b)
        if not bool(both.any()):
            return
        self._pending.append((a[both].numpy().copy(), b[both].numpy().copy()))

    def table(self) -> list[int]:
        """The root of every id, by index (for mapping many ids at once)."""
        self._join_pending()
        return _roots(np.asarray(self.parent, dtype=np.int64)).tolist()

    def _join_pending(self) -> None:
        """Join every recorded pair at once: hook each pair's larger root under its smaller, compress, repeat."""
        if not self._pending:
            return
        x = np.concatenate([p[0] for p in self._pending])
        y = np.concatenate([p[1] for p in self._pending])
        self._pending = []
        roots = _roots(np.asarray(self.parent, dtype=np.int64))
        while True:
            rx, ry = roots[x], roots[y]
            apart = rx != ry
            if not apart.any():
                break
            rx, ry = rx[apart], ry[apart]
            np.minimum.at(roots, np.maximum(rx, ry), np.minimum(rx, ry))
            roots = _roots(roots)
            x, y = x[apart], y[apart]
        self.parent = roots.tolist()


def _roots(parent: np.ndarray) -> np.ndarray:
    """Every id's root, by pointer jumping over the whole array (each round halves every path)."""
    while True:
        up = parent[parent]
        if np.array_equal(up, parent):
            return parent
        parent = up


def compress(t: torch.Tensor) -> torch.Tensor:
    """The smallest tensor that expands back to `t`: each dimension constant along it becomes size 1."""
    for d in reversed(range(t.dim())):
        if t.shape[d] > 1:
            first = t.narrow(d, 0, 1)
            if torch.equal(t, first.expand_as(t)):
                t = first
    return t.contiguous()


def expand(t: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """A compressed label or zero tensor at full `shape` (a view: nothing is copied)."""
    return t.expand(tuple(shape))


def fresh(base: int, n: int, ndim: int, dim: int) -> torch.Tensor:
    """Labels base..base+n-1 along `dim` of an `ndim`-dimensional tensor (compressed)."""
    shape = [1] * ndim
    shape[dim] = n
    return torch.arange(base, base + n, dtype=torch.long).reshape(shape)


def unlabelled(ndim: int) -> torch.Tensor:
    """The labels of a tensor that belongs to no channel (compressed)."""
    return torch.full([1] * ndim, NONE, dtype=torch.long)


def varying_dims(t: torch.Tensor) -> set[int]:
    """Dimensions of a compressed tensor along which it is not constant."""
    return {d for d in range(t.dim()) if t.shape[d] > 1}


def tensors(obj: Any) -> list[torch.Tensor]:
    """Every tensor in `obj` (a tensor, or lists, tuples and dicts of them), in order."""
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, dict):
        return [t for v in obj.values() for t in tensors(v)]
    if isinstance(obj, (list, tuple)):
        return [t for o in obj for t in tensors(o)]
    return []
