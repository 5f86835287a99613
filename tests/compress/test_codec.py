"""Quantizers and the ANS codec: exact round trips, bounds, bad input."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from prunus.compress.baselines import huffman_bits, huffman_lengths
from prunus.compress.codec import decode_layer, encode_layer, order0_bits
from prunus.compress.quantize import choose, dequantize, quantize, quantize_weight
from prunus.errors import ConfigError, CorruptFileError


def _values(kind: str, n: int, gen: torch.Generator) -> torch.Tensor:
    if kind == "normal":
        return torch.randn(n, generator=gen)
    if kind == "laplace":
        return torch.distributions.Laplace(0.0, 0.1).sample((n,))
    if kind == "constant":
        return torch.full((n,), 0.37)
    return torch.randint(-3, 4, (n,), generator=gen).float() * 1e-3  # few distinct values


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(0, 3000),
    keep=st.floats(0.0, 1.0),
    bits=st.integers(2, 8),
    kind=st.sampled_from(["kmeans", "uniform"]),
    dist=st.sampled_from(["normal", "laplace", "constant", "few"]),
    seed=st.integers(0, 2**31 - 1),
)
def test_encode_decode_is_bit_exact(n, keep, bits, kind, dist, seed):
    gen = torch.Generator().manual_seed(seed)
    mask = torch.rand(n, generator=gen) < keep
    values = _values(dist, int(mask.sum()), gen)
    q = choose(values, bits, kind)
    idx = quantize(values, q)
    assert q.codebook.numel() <= 2**bits
    assert idx.numel() == 0 or int(idx.max()) < q.codebook.numel()
    data, counts = encode_layer(mask, idx, q.codebook.numel())
    mask2, idx2 = decode_layer(data, counts, n)
    assert torch.equal(mask2, mask)
    assert torch.equal(idx2, idx)
    # the rebuilt weights equal the quantized ones bit for bit
    assert torch.equal(dequantize(idx2, q), dequantize(idx, q))
    # ANS is within a few words of the order-0 bound (32-bit words, fixed-point model)
    bound = order0_bits(n, counts)
    assert 8 * len(data) <= bound * 1.01 + 96


def test_stream_close_to_bound_on_a_large_layer():
    gen = torch.Generator().manual_seed(0)
    mask = torch.rand(200_000, generator=gen) < 0.08
    q = choose(torch.randn(int(mask.sum()), generator=gen), 4, "kmeans")
    idx = quantize(torch.randn(int(mask.sum()), generator=gen), q)
    data, counts = encode_layer(mask, idx, q.codebook.numel())
    assert 8 * len(data) / order0_bits(mask.numel(), counts) < 1.002


def test_order0_bound_formula():
    # n * H_b(p) + k * H(q): 8 weights, 2 kept with distinct indices -> 8*H_b(1/4) + 2*1
    counts = [6, 1, 1]
    hb = -(0.25 * math.log2(0.25) + 0.75 * math.log2(0.75))
    assert order0_bits(8, counts) == pytest.approx(8 * hb + 2)


def test_decode_rejects_lies():
    mask = torch.tensor([True, False, True, True])
    data, counts = encode_layer(mask, torch.tensor([0, 1, 1]), 2)
    with pytest.raises(CorruptFileError, match="add up"):
        decode_layer(data, counts, 5)
    with pytest.raises(CorruptFileError, match="32-bit words"):
        decode_layer(data[:-1], counts, 4)
    with pytest.raises(CorruptFileError, match="counts stored"):
        decode_layer(data, [2, 1, 1], 4)
    with pytest.raises(CorruptFileError):
        decode_layer(data + b"\x01\x00\x00\x00", counts, 4)


def test_kmeans_beats_uniform_on_peaked_weights():
    w = torch.distributions.Laplace(0.0, 0.05).sample((5000,))
    err = {
        k: float(((dequantize(quantize(w, q), q) - w) ** 2).mean())
        for k in ("kmeans", "uniform")
        for q in [choose(w, 3, k)]
    }
    assert err["kmeans"] < err["uniform"]


def test_codebook_is_float16_and_pruned_stay_zero():
    w = torch.randn(4, 5)
    mask = w.abs() > 0.5
    q, wq = quantize_weight(w, mask, 3)
    assert torch.equal(q.codebook, q.codebook.half().float())
    assert bool((wq[~mask] == 0).all())
    assert wq[mask].unique().numel() <= 8


@pytest.mark.parametrize(("bits", "kind"), [(1, "kmeans"), (9, "uniform"), (4, "lloyd"), (True, "kmeans")])
def test_bad_quantizer_settings(bits, kind):
    with pytest.raises(ConfigError, match="bits|kind"):
        choose(torch.ones(3), bits, kind)


def test_huffman_matches_known_code():
    # counts 5, 2, 1, 1 -> lengths 1, 2, 3, 3
    assert huffman_lengths({0: 5, 1: 2, 2: 1, 3: 1}) == {0: 1, 1: 2, 2: 3, 3: 3}
    assert huffman_bits([0] * 5 + [1] * 2 + [2, 3]) == 5 + 4 + 6
    assert np.isclose(huffman_bits([7] * 10), 10)
