"""Channel clustering for C-SGD: deterministic k-means with no empty cluster, and `even` blocks.

A clustering of n channels into k clusters is a list of k non-empty, disjoint lists of channel
indices covering 0..n-1, in canonical order: each cluster ascending, clusters ordered by their
first (smallest) member. The first member is the one `prunus.structure.merge_` keeps, so the
canonical order makes "which channel survives" a pure function of the clustering.

Example:
    >>> even_clusters(7, 3)
    [[0, 1, 2], [3, 4], [5, 6]]
    >>> kmeans(torch.tensor([[0.0], [10.0], [0.1], [10.1]]), 2)
    [[0, 2], [1, 3]]
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from prunus.errors import ConfigError
from prunus.structure import CLUSTERED_ROLES, ChannelGroup, Role, build_groups
from prunus.structure.parametrized import is_parametrized

__all__ = [
    "CLUSTERED_ROLES",
    "CLUSTER_METHODS",
    "canonical",
    "cluster_ids",
    "even_clusters",
    "group_widths",
    "kmeans",
    "target_width",
    "unsupported_reason",
]

CLUSTER_METHODS = ("kmeans", "even")


def canonical(clusters: Sequence[Sequence[int]]) -> list[list[int]]:
    """Sort members inside each cluster and clusters by their first member."""
    return sorted((sorted(int(i) for i in c) for c in clusters), key=lambda c: c[0])


def cluster_ids(clusters: Sequence[Sequence[int]], n: int) -> torch.Tensor:
    """(n,) int64 tensor: the cluster number of every channel (clusters must cover 0..n-1 once)."""
    ids = torch.full((n,), -1, dtype=torch.long)
    for c, members in enumerate(clusters):
        ids[torch.as_tensor(list(members), dtype=torch.long)] = c
    if (ids < 0).any() or sum(len(m) for m in clusters) != n:
        raise ValueError(f"clusters do not partition {n} channels exactly once")
    return ids


def even_clusters(n: int, k: int) -> list[list[int]]:
    """k blocks of consecutive indices whose sizes differ by at most one (larger blocks first)."""
    if not 1 <= k <= n:
        raise ValueError(f"cannot split {n} channels into {k} clusters")
    size, extra = divmod(n, k)
    out, start = [], 0
    for c in range(k):
        stop = start + size + (1 if c < extra else 0)
        out.append(list(range(start, stop)))
        start = stop
    return out


def _init_centers(x: torch.Tensor, k: int, gen: torch.Generator) -> torch.Tensor:
    """k-means++ seeding; when every remaining point coincides with a center, take the lowest unused index."""
    n = x.shape[0]
    chosen = [int(torch.randint(n, (1,), generator=gen))]
    d2 = (x - x[chosen[0]]).pow(2).sum(1)
    for _ in range(1, k):
        total = float(d2.sum())
        if total > 0:
            nxt = int(torch.multinomial(d2 / total, 1, generator=gen))
        else:
            nxt = next(i for i in range(n) if i not in chosen)
        chosen.append(nxt)
        d2 = torch.minimum(d2, (x - x[nxt]).pow(2).sum(1))
    return x[chosen].clone()


def _fill_empty(x: torch.Tensor, assign: torch.Tensor, centers: torch.Tensor) -> torch.Tensor:
    """Give every empty cluster the point farthest from its own center (taken from a cluster of >= 2)."""
    k = centers.shape[0]
    while True:
        counts = torch.bincount(assign, minlength=k)
        empty = (counts == 0).nonzero().flatten()
        if empty.numel() == 0:
            return assign
        dist = (x - centers[assign]).pow(2).sum(1)
        # only points whose cluster keeps a member after the move are candidates
        dist = torch.where(counts[assign] > 1, dist, torch.full_like(dist, -1.0))
        far = int(torch.argmax(dist))  # first maximum: deterministic
        target = int(empty[0])
        assign = assign.clone()
        assign[far] = target
        centers[target] = x[far]


def kmeans(points: torch.Tensor, k: int, *, seed: int = 0, iters: int = 100) -> list[list[int]]:
    """Cluster the rows of `points` (n, d) into exactly `k` non-empty clusters (Lloyd + k-means++).

    Deterministic for a given seed (float64, seeded generator, first-index tie-breaking). Empty
    clusters, which Lloyd's iteration can produce with duplicate or outlying points, are re-seeded
    with the point farthest from its center, so the result always has k clusters.

    Args:
        points: One row per channel.
        k: Number of clusters, 1 <= k <= n.
        seed: Seed of the k-means++ initialisation.
        iters: Maximum Lloyd iterations (it stops earlier when assignments settle).

    Returns:
        The clusters in canonical order (see module docstring).

    Example:
        >>> kmeans(torch.randn(10, 4), 3, seed=1)  # doctest: +SKIP
        [[0, 4, 7], [1, 2, 5, 9], [3, 6, 8]]
    """
    x = points.detach().reshape(points.shape[0], -1).to("cpu", torch.float64)
    n = x.shape[0]
    if not 1 <= k <= n:
        raise ValueError(f"cannot split {n} channels into {k} clusters")
    if k == n:
        return [[i] for i in range(n)]
    gen = torch.Generator().manual_seed(int(seed))
    centers = _init_centers(x, k, gen)
    assign = torch.full((n,), -1, dtype=torch.long)
    for _ in range(iters):
        new = _fill_empty(x, torch.cdist(x, centers).argmin(1), centers)
        if torch.equal(new, assign):
            break
        assign = new
        sums = torch.zeros_like(centers).index_add_(0, assign, x)
        centers = sums / torch.bincount(assign, minlength=k).unsqueeze(1).to(x.dtype)
    return canonical([(assign == c).nonzero().flatten().tolist() for c in range(k)])


def target_width(n: int, spec: float | int, key: str) -> int:
    """Channels to keep in a group of `n`: an int is a count, a float a ratio (rounded half up).

    Raises:
        ConfigError: the count is 0 or above `n`, or the ratio leaves no channel.
    """
    if isinstance(spec, bool):
        raise ConfigError(f"width of group {key!r} must be a ratio in (0, 1] or a channel count, got {spec!r}")
    if isinstance(spec, int):
        if not 1 <= spec <= n:
            raise ConfigError(f"width {spec} for group {key!r} must lie in [1, {n}] (the group has {n} channels)")
        return spec
    k = math.floor(n * float(spec) + 0.5)
    if k < 1:
        raise ConfigError(
            f"width ratio {spec} leaves no channel of group {key!r} ({n} channels); use a ratio >= {0.5 / n:.3g}"
        )
    return min(k, n)


def group_widths(model: nn.Module, example_inputs: Any, ignored_layers: Iterable[str] | None = None) -> dict[str, int]:
    """Channel count of every group of `model` C-SGD can narrow: the `widths` that squeeze a wider model to it.

    Example:
        >>> x = torch.randn(1, 1, 28, 28)
        >>> narrow = group_widths(create_model("resnet20", in_channels=1), x)  # doctest: +SKIP
        >>> wide = create_model("resnet20", in_channels=1, width_mult=1.5)  # doctest: +SKIP
        >>> method = CentripetalSGD(widths=narrow)  # train `wide` with it  # doctest: +SKIP
    """
    groups = build_groups(model, example_inputs, ignored_layers)
    return {g.key: g.num_channels for g in groups if unsupported_reason(g, model) is None}


def unsupported_reason(group: ChannelGroup, model: nn.Module) -> str | None:
    """Why C-SGD cannot cluster and merge this group exactly, or None."""
    if not group.prunable:
        return group.reason
    if any(s.role is Role.IN_GROUPED for s in group.slices):
        return "it feeds a grouped conv, which merging does not support"
    if group.blocks > 1 or group.segments:
        return "its channels go in units (GroupNorm, an equal split) or feed split pieces: merging does not do that"
    if any(s.role == Role.PARAM for s in group.slices):
        return "it carries a bare per-channel parameter (e.g. a layer scale), which merging does not support"
    computed = [s.module for s in group.slices if is_parametrized(model.get_submodule(s.module), s.tensor or None)]
    if computed:  # the centripetal rule moves a parameter's gradient; a parametrized weight has none of its own
        return f"{computed[0]}'s weight is parametrized (e.g. weight_norm), which clustering does not support"
    n = group.num_channels
    for s in group.slices:
        if s.role.is_clustered and s.dim != 0:  # the centripetal rule pulls rows (dim 0) together
            return f"{s.module}.{s.tensor} holds its channels along dim {s.dim} (a transposed conv's filters)"
        if s.role.is_clustered:
            rows = s.get(model).shape[0]
            if s.dim != 0 or sorted(s.index) != list(range(rows)) or sorted(s.channel) != list(range(n)):
                return f"{s.module}.{s.tensor} does not carry each of its channels exactly once (concat/split)"
    return None


def round_widths(
    start: Mapping[str, int], final: Mapping[str, int], current: Mapping[str, int], r: int, rounds: int
) -> dict[str, int]:
    """Channels per group after round `r` of `rounds`: n0 * (k/n0)^(r/R), rounded, never wider than
    `current` and never narrower than `final` (so round R lands exactly on the target).

    Example:
        >>> round_widths({"a": 16}, {"a": 4}, {"a": 16}, 1, 2), round_widths({"a": 16}, {"a": 4}, {"a": 8}, 2, 2)
        ({'a': 8}, {'a': 4})
    """
    step = {key: math.floor(start[key] * (final[key] / start[key]) ** (r / rounds) + 0.5) for key in start}
    return {key: min(current[key], max(final[key], k)) for key, k in step.items()}
