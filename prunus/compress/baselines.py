"""Baselines reported next to a .prn: general-purpose compressors, Deep-Compression-style coding, magnitude pruning.

- `generic_bytes`: gzip (level 9), zstd (level 19) and brotli (quality 11) of the model's tensors as
  raw fp32 and fp16 bytes (what those tools achieve on the dense weights);
- `deep_compression_bits`: the same masks and codebook indices coded as in Han et al. (ICLR 2016):
  relative positions (gaps of 5 bits for Linear, 8 for Conv, a zero-valued filler entry when a gap
  overflows) and values, each Huffman-coded per layer, plus float16 codebooks and the Huffman
  tables (one byte per code length);
- `magnitude_masks` (in `search`) gives one-shot magnitude pruning at the same sparsity.

Example:
    >>> huffman_bits([0, 0, 0, 1])  # two symbols: one bit each
    4
"""

from __future__ import annotations

import gzip
import heapq
from collections import Counter
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch import nn

from prunus.compress.runner import CONVS
from prunus.errors import require

__all__ = ["deep_compression_bits", "generic_bytes", "huffman_bits", "huffman_lengths"]


def huffman_lengths(counts: Mapping[int, int]) -> dict[int, int]:
    """Huffman code length of every symbol with a non-zero count (a lone symbol gets 1 bit)."""
    items = [(c, i, (s,)) for i, (s, c) in enumerate(sorted(counts.items())) if c > 0]
    if len(items) == 1:
        return {items[0][2][0]: 1}
    lengths = {s: 0 for _, _, syms in items for s in syms}
    heapq.heapify(items)
    tie = len(items)
    while len(items) > 1:
        c1, _, s1 = heapq.heappop(items)
        c2, _, s2 = heapq.heappop(items)
        for s in s1 + s2:
            lengths[s] += 1
        heapq.heappush(items, (c1 + c2, tie, s1 + s2))
        tie += 1
    return lengths


def huffman_bits(symbols: Sequence[int]) -> int:
    """Bits of the Huffman coding of `symbols` (payload only, no table)."""
    counts = Counter(int(s) for s in symbols)
    if not counts:
        return 0
    lengths = huffman_lengths(counts)
    return sum(counts[s] * lengths[s] for s in counts)


def _dc_layer_bits(mask: torch.Tensor, indices: torch.Tensor, levels: int, gap_bits: int) -> int:
    """Deep Compression relative-index coding of one layer: Huffman(gaps) + Huffman(values) + tables."""
    positions = mask.reshape(-1).nonzero().squeeze(1).numpy()
    values = indices.numpy().astype(np.int64)
    limit = (1 << gap_bits) - 1
    gaps, vals = [], []
    prev = -1
    filler = levels  # the zero-valued filler entry's value symbol
    for pos, val in zip(positions.tolist(), values.tolist(), strict=True):
        gap = pos - prev - 1
        while gap > limit:  # the gap does not fit: store a zero weight `limit` positions on
            gaps.append(limit)
            vals.append(filler)
            gap -= limit + 1
        gaps.append(gap)
        vals.append(val)
        prev = pos
    tables = 8 * (len(set(gaps)) + len(set(vals)))
    return huffman_bits(gaps) + huffman_bits(vals) + tables + 16 * levels


def deep_compression_bits(model: nn.Module, coded: Mapping[str, object]) -> int:
    """Total bits of Deep-Compression-style coding of the coded layers (`CodedLayer`s by state-dict name)."""
    modules = dict(model.named_modules())
    total = 0
    for name, c in coded.items():
        module = modules.get(name.rsplit(".", 1)[0])
        gap_bits = 8 if isinstance(module, CONVS) else 5
        total += _dc_layer_bits(c.mask, c.indices, int(c.quantizer.codebook.numel()), gap_bits)  # type: ignore[attr-defined]
    return total


def generic_bytes(model: nn.Module) -> dict[str, int]:
    """Bytes of the state dict's raw fp32 and fp16 tensors under gzip -9, zstd -19 and brotli -q 11."""
    brotli = require("brotli", "compress", "the brotli baseline")
    zstandard = require("zstandard", "compress", "the zstd baseline")

    out = {}
    for dtype, tag in ((torch.float32, "fp32"), (torch.float16, "fp16")):
        raw = b"".join(
            v.detach().to(dtype).contiguous().numpy().tobytes()
            for v in model.state_dict().values()
            if v.is_floating_point()
        )
        out[f"raw_{tag}"] = len(raw)
        out[f"gzip_{tag}"] = len(gzip.compress(raw, compresslevel=9, mtime=0))
        out[f"zstd_{tag}"] = len(zstandard.ZstdCompressor(level=19).compress(raw))
        out[f"brotli_{tag}"] = len(brotli.compress(raw, quality=11))
    return out
