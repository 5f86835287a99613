"""Exact MACs and parameter counts of a model after cutting given numbers of channels, without cutting.

Each prunable group removes its channels in a fixed order (lowest score first, whole units such as
grouped-conv offsets, see `prunus.structure.removal_order`), so a plan is just "k channels from
group g".
Every tensor dimension a group touches then shrinks by the positions of those k channels, and

- a conv / Linear's MACs (as `prunus.count` charges them: out elements x in/groups x kernel volume)
  scale by (out kept / out) x (in kept / in); a depthwise conv's in/groups stays 1, so it scales
  with its out channels only;
- a parameter's element count scales by (kept / size) along every dimension cut.

Tests check both against a real count of the cut model for every zoo model.

Example:
    >>> costs = CostModel(model, groups, scores, prunus.count(model, (1, 28, 28)))  # doctest: +SKIP
    >>> costs.macs({"layer1.0.conv1": 8}) < costs.dense.macs  # doctest: +SKIP
    True
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch import nn

from prunus.measure import Counts
from prunus.structure import ChannelGroup, removal_order

__all__ = ["CostModel"]


class CostModel:
    """MACs and parameters after removing the first k channels of each group's removal order.

    Args:
        model: The dense model the groups were built on.
        groups: Prunable groups.
        scores: Group key -> one score per channel (lower goes first).
        dense: `prunus.count` of the model.
    """

    def __init__(
        self, model: nn.Module, groups: Sequence[ChannelGroup], scores: Mapping[str, torch.Tensor], dense: Counts
    ) -> None:
        self.dense = dense
        self.groups = list(groups)
        self.order = {g.key: removal_order(g, scores[g.key]) for g in groups}
        self.shapes: dict[str, tuple[int, int, bool]] = {}
        modules = dict(model.named_modules())  # one walk; get_submodule per name walked the path each time
        for name in dense.layers:
            m = modules[name]
            if isinstance(m, nn.modules.conv._ConvNd):  # ConvTranspose too: its MACs scale with in x out alike
                depthwise = m.groups > 1 and m.groups == m.in_channels and not m.transposed
                self.shapes[name] = (m.out_channels, m.in_channels, depthwise)
            elif isinstance(m, nn.Linear):
                self.shapes[name] = (m.out_features, m.in_features, False)
        # Per group: (target, cumulative positions over the removal order); a target is
        # (module, "out" | "in") for MACs and (module, tensor, dim) for parameters.
        self._macs_cuts: dict[str, list[tuple[tuple[str, str], list[int]]]] = {}
        self._param_cuts: dict[str, list[tuple[tuple[str, str, int], list[int]]]] = {}
        params = {n: p for n, p in model.named_parameters()}
        for g in groups:
            macs, prm = [], []
            order = np.asarray(self.order[g.key], dtype=np.int64)
            one_each = list(range(g.num_channels + 1))
            for s in g.slices:
                if len(s.channel) == g.num_channels and len(set(s.channel)) == g.num_channels:
                    cum = one_each  # one position per channel (most slices): k channels remove k positions
                else:
                    # positions per channel (a Linear after flatten holds a block per channel), summed over the order
                    per_channel = np.bincount(np.asarray(s.channel, dtype=np.int64), minlength=g.num_channels)
                    cum = [0, *np.cumsum(per_channel[order]).tolist()]
                if s.tensor == "weight" and s.module in self.shapes and s.role in ("out", "dw", "in", "in_grouped"):
                    macs.append(((s.module, "out" if s.role in ("out", "dw") else "in"), cum))
                full = f"{s.module}.{s.tensor}" if s.module else s.tensor
                if full in params:
                    prm.append(((s.module, s.tensor, s.dim), cum))
            self._macs_cuts[g.key] = macs
            self._param_cuts[g.key] = prm
        # parameter tensors: full name -> (numel, {dim: size of the dimension the slices index})
        self._params: dict[tuple[str, str], tuple[int, dict[int, int]]] = {}
        for full, p in params.items():
            module, _, tensor = full.rpartition(".")
            self._params[(module, tensor)] = (p.numel(), {})
        for cuts in self._param_cuts.values():
            for (module, tensor, dim), _ in cuts:
                m = modules[module]
                grouped_in = isinstance(m, nn.modules.conv._ConvNd) and m.groups > 1 and dim == 1
                size = m.in_channels if grouped_in else getattr(m, tensor).shape[dim]
                self._params[(module, tensor)][1][dim] = size

    def channels(self, key: str, k: int) -> list[int]:
        """The `k` channels of group `key` that go first, sorted (a valid set for `remove_`)."""
        return sorted(self.order[key][:k])

    def layer_cuts(self, key: str) -> list[tuple[tuple[str, str], list[int]]]:
        """((layer, "out" | "in"), cumulative channels removed over the removal order) for group `key`."""
        return self._macs_cuts[key]

    def cuttable_layers(self) -> set[str]:
        """Names of the conv/Linear layers some group can cut (on its input or its output side)."""
        return {layer for cuts in self._macs_cuts.values() for (layer, _side), _ in cuts}

    def removed(self, cut: Mapping[str, int]) -> dict[tuple[str, str], int]:
        """(layer, "out" | "in") -> channels that layer loses on that side under `cut`."""
        removed: dict[tuple[str, str], int] = {}
        for key, k in cut.items():
            if k:
                for target, cum in self._macs_cuts[key]:
                    removed[target] = removed.get(target, 0) + cum[k]
        return removed

    def macs(self, cut: Mapping[str, int]) -> int:
        """MACs after removing `cut[key]` channels from each group (missing keys: none)."""
        removed = self.removed(cut)
        total = 0.0
        for name, layer in self.dense.layers.items():
            if name not in self.shapes:
                total += layer.macs
                continue
            out, inp, depthwise = self.shapes[name]
            factor = (out - removed.get((name, "out"), 0)) / out
            if not depthwise:
                factor *= (inp - removed.get((name, "in"), 0)) / inp
            total += layer.macs * factor
        return round(total)

    def params(self, cut: Mapping[str, int]) -> int:
        """Parameters after removing `cut[key]` channels from each group."""
        removed: dict[tuple[str, str, int], int] = {}
        for key, k in cut.items():
            if k:
                for target, cum in self._param_cuts[key]:
                    removed[target] = removed.get(target, 0) + cum[k]
        total = 0.0
        for (module, tensor), (numel, sizes) in self._params.items():
            factor = 1.0
            for dim, size in sizes.items():
                factor *= (size - removed.get((module, tensor, dim), 0)) / size
            total += numel * factor
        return round(total)
