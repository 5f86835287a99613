"""Lossless coding of one layer's mask and codebook indices with ANS (`constriction`).

Each weight becomes one symbol: 0 = pruned, `i + 1` = survivor with codebook index `i`. The
symbols of a layer are coded with one static categorical model whose frequencies are the layer's
own symbol counts (stored with the stream). The joint symbol's entropy is exactly the order-0
bound of the mask plus the values, `H(joint) = H_b(p) + p * H(q)` per weight, so one stream per
layer reaches `n * H_b(p) + k * H(q)` bits up to ANS's fixed-point rounding and the final word.

Example:
    >>> import torch
    >>> mask = torch.tensor([True, False, False, True, True])
    >>> idx = torch.tensor([2, 0, 2])
    >>> data, counts = encode_layer(mask, idx, levels=3)
    >>> m, i = decode_layer(data, counts, n=5)
    >>> m.tolist(), i.tolist()
    ([True, False, False, True, True], [2, 0, 2])
"""

from __future__ import annotations

import math

import numpy as np
import torch

from prunus.errors import FormatError, require

__all__ = ["decode_layer", "encode_layer", "joint_symbols", "order0_bits"]


def joint_symbols(mask: torch.Tensor, indices: torch.Tensor) -> np.ndarray:
    """Flat int32 symbols: 0 where `mask` is False, `indices + 1` at the survivors (in flat order)."""
    flat = mask.reshape(-1)
    sym = torch.zeros(flat.numel(), dtype=torch.int32)
    sym[flat] = indices.reshape(-1).to(torch.int32) + 1
    return sym.numpy()


def _model(counts: np.ndarray):
    constriction = require("constriction", "compress", "entropy coding (.prn files)")

    probs = counts.astype(np.float64)
    return constriction.stream.model.Categorical(probs / probs.sum(), perfect=False)


def encode_layer(mask: torch.Tensor, indices: torch.Tensor, levels: int) -> tuple[bytes, list[int]]:
    """ANS-code one layer; returns the little-endian byte stream and the symbol counts (levels + 1).

    Args:
        mask: bool, True = kept, any shape (coded in flat order).
        indices: codebook index of each survivor in flat order (`mask.sum()` values, < `levels`).
        levels: codebook size.
    """
    constriction = require("constriction", "compress", "entropy coding (.prn files)")

    sym = joint_symbols(mask, indices)
    counts = np.bincount(sym, minlength=levels + 1).astype(np.int64)
    if counts.size != levels + 1:
        raise ValueError(f"an index is >= the codebook size {levels}")
    if sym.size == 0:
        return b"", counts.tolist()
    coder = constriction.stream.stack.AnsCoder()
    coder.encode_reverse(sym, _model(counts))
    return coder.get_compressed().astype("<u4").tobytes(), counts.tolist()


def decode_layer(data: bytes, counts: list[int], n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Inverse of `encode_layer`: (flat bool mask of `n`, int64 indices of the survivors).

    Raises `FormatError` when the stream does not decode to exactly `n` symbols whose
    counts match `counts` (a corrupt stream, lying counts or a stream with bytes left over).
    """
    constriction = require("constriction", "compress", "entropy coding (.prn files)")

    counts_arr = np.asarray(counts, dtype=np.int64)
    if counts_arr.ndim != 1 or counts_arr.size < 2 or (counts_arr < 0).any() or int(counts_arr.sum()) != n:
        raise FormatError(f"symbol counts do not add up to the layer's {n} weights")
    if n == 0:
        return torch.zeros(0, dtype=torch.bool), torch.zeros(0, dtype=torch.long)
    if len(data) % 4:
        raise FormatError(f"an ANS stream of {len(data)} bytes is not a whole number of 32-bit words")
    words = np.frombuffer(data, dtype="<u4").astype(np.uint32)
    try:
        coder = constriction.stream.stack.AnsCoder(words)
        sym = coder.decode(_model(counts_arr), n)
        leftover = not coder.is_empty()
    except (ValueError, RuntimeError, AssertionError, OverflowError) as exc:
        raise FormatError(f"the ANS stream does not decode ({exc})") from None
    if leftover or not np.array_equal(np.bincount(sym, minlength=counts_arr.size)[: counts_arr.size], counts_arr):
        raise FormatError("the ANS stream does not decode to the symbol counts stored with it")
    t = torch.from_numpy(sym.astype(np.int64))
    mask = t > 0
    return mask, t[mask] - 1


def order0_bits(n: int, counts: list[int]) -> float:
    """Order-0 bound of one layer in bits: `n * H_b(p) + k * H(q)` (= n * H(joint symbols))."""
    total = 0.0
    for c in counts:
        if c:
            total -= c * math.log2(c / n)
    return total
