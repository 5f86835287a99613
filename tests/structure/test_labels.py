"""The label union-find: deferred array unions give the roots a plain union-find gives."""

from __future__ import annotations

import random

import pytest
import torch

from prunus.structure._labels import UnionFind


def _reference_root(parent: list[int], a: int) -> int:
    while parent[a] != a:
        a = parent[a]
    return a


def _reference_union(parent: list[int], a: int, b: int) -> None:
    ra, rb = _reference_root(parent, a), _reference_root(parent, b)
    if ra != rb:
        parent[max(ra, rb)] = min(ra, rb)


@pytest.mark.parametrize("seed", range(20))
def test_deferred_array_unions_match_one_union_per_pair(seed):
    rng = random.Random(seed)
    gen = torch.Generator().manual_seed(seed)
    uf, ref = UnionFind(), []
    for _ in range(rng.randint(3, 12)):
        op = rng.random()
        if op < 0.3 or not ref:  # new ids between unions, as a trace allocates writer rows
            n = rng.randint(1, 30)
            base = uf.make(n)
            ref.extend(range(base, base + n))
        elif op < 0.8:  # pairs with unlabelled (-1) entries and repeats, shapes that broadcast
            a = torch.randint(-1, len(ref), (rng.randint(1, 40),), generator=gen)
            b = torch.randint(-1, len(ref), (1,) if rng.random() < 0.2 else a.shape, generator=gen)
            uf.union_arrays(a, b)
            for x, y in zip(*(t.tolist() for t in torch.broadcast_tensors(a, b)), strict=True):
                if x >= 0 and y >= 0:
                    _reference_union(ref, x, y)
        else:  # a single union in between flushes what was recorded
            x, y = rng.randrange(len(ref)), rng.randrange(len(ref))
            assert uf.union(x, y) == min(_reference_root(ref, x), _reference_root(ref, y))
            _reference_union(ref, x, y)
    expected = [_reference_root(ref, i) for i in range(len(ref))]
    assert uf.table() == expected
    assert [uf.find(i) for i in range(len(ref))] == expected  # roots are every set's smallest id


def test_a_long_chain_joins_completely():
    uf = UnionFind()
    uf.make(1000)
    uf.union_arrays(torch.arange(1, 1000), torch.arange(0, 999))  # i joined to i - 1: one set, root 0
    assert set(uf.table()) == {0}


def test_another_input_is_never_the_example_drawn_with_the_same_seed():
    """Trial cuts and constant folding run the model on "another input": a user's example drawn as
    `torch.manual_seed(0); torch.randn(...)` is exactly the first draw of a generator seeded 0."""
    from prunus.structure._trace import random_other

    torch.manual_seed(0)
    example = (torch.randn(2, 3, 8, 8), torch.arange(4))
    other = random_other(example, 0)
    assert not torch.equal(other[0], example[0])
    assert other[0].shape == example[0].shape
    assert torch.equal(other[1], example[1])  # integer inputs (indices, lengths) are kept as given
    fresh = random_other(torch.zeros(2, 3), 0)  # an example that is no draw: the first draw is used
    assert torch.equal(fresh, torch.randn(2, 3, generator=torch.Generator().manual_seed(0)))
