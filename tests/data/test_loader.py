"""TensorLoader: determinism, coverage, DDP sharding, batched crop/flip, normalisation."""

from __future__ import annotations

import pytest
import torch

from prunus.data import Augment, AugmentParams, ImageTensors, TensorLoader, channel_stats
from prunus.errors import ConfigError


def _data(n=23, c=1, h=6, w=5, seed=0) -> ImageTensors:
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(1, 256, (n, c, h, w), dtype=torch.uint8, generator=g)  # no zeros: padding is visible
    return ImageTensors(images, torch.arange(n) % 3, ["a", "b", "c"], name="toy")


def _labels(loader: TensorLoader) -> list[int]:
    return [v for _, y in loader for v in y.tolist()]


def _raw(loader: TensorLoader, x: torch.Tensor) -> torch.Tensor:
    """Undo the normalisation: back to uint8 pixel values."""
    mean = torch.tensor(loader.data.mean).view(1, -1, 1, 1)
    std = torch.tensor(loader.data.std).view(1, -1, 1, 1)
    return ((x * std + mean) * 255).round().to(torch.uint8)


def test_same_seed_and_epoch_give_identical_batches():
    data = _data()
    a = TensorLoader(data, 4, shuffle=True, augment=Augment(2, True), seed=7)
    b = TensorLoader(data, 4, shuffle=True, augment=Augment(2, True), seed=7)
    a.set_epoch(3)
    b.set_epoch(3)
    batches_a, batches_b = list(a), list(b)
    assert len(batches_a) == len(a) == 6
    for (xa, ya), (xb, yb) in zip(batches_a, batches_b, strict=True):
        assert torch.equal(xa, xb)
        assert torch.equal(ya, yb)
    assert torch.equal(list(a)[2][0], batches_a[2][0])  # re-iterating the same epoch repeats it
    b.set_epoch(4)
    assert not torch.equal(a.indices(), b.indices())
    c = TensorLoader(data, 4, shuffle=True, seed=8)
    c.set_epoch(3)
    assert not torch.equal(a.indices(), c.indices())


def test_every_sample_exactly_once_per_epoch_and_drop_last():
    data = _data(n=23)
    loader = TensorLoader(data, 5, shuffle=True, seed=1)
    loader.set_epoch(2)
    order = loader.indices()
    assert sorted(order.tolist()) == list(range(23))
    assert _labels(loader) == (order % 3).tolist()
    assert [len(y) for _, y in loader] == [5, 5, 5, 5, 3]
    dropping = TensorLoader(data, 5, shuffle=True, seed=1, drop_last=True)
    assert len(dropping) == 4
    assert [len(y) for _, y in dropping] == [5, 5, 5, 5]
    plain = TensorLoader(data, 10)
    assert plain.indices().tolist() == list(range(23))
    assert _labels(plain) == [i % 3 for i in range(23)]


def test_ddp_ranks_partition_one_permutation():
    data = _data(n=23)
    ranks = [TensorLoader(data, 4, shuffle=True, seed=5, rank=r, world_size=2) for r in range(2)]
    for r in ranks:
        r.set_epoch(1)
    single = TensorLoader(data, 4, shuffle=True, seed=5)
    single.set_epoch(1)
    perm = single.indices()
    shards = [r.indices() for r in ranks]
    assert [len(s) for s in shards] == [12, 12]
    assert [r.num_samples for r in ranks] == [12, 12]
    assert [len(r) for r in ranks] == [3, 3]  # same number of batches on every rank
    padded = torch.cat([perm, perm[:1]])  # 24 = 2 * ceil(23 / 2): wraps around by one sample
    assert torch.equal(shards[0], padded[0::2])
    assert torch.equal(shards[1], padded[1::2])
    assert set(shards[0].tolist()) | set(shards[1].tolist()) == set(range(23))
    assert len(set(shards[0].tolist()) & set(shards[1].tolist())) == 1  # only the padding sample repeats
    with pytest.raises(ConfigError, match=r"rank=2 must lie in \[0, world_size=2\)"):
        TensorLoader(data, 4, rank=2, world_size=2)


def test_crop_and_flip_apply_exact_geometry():
    x = torch.arange(1, 1 + 2 * 2 * 4 * 5, dtype=torch.uint8).view(2, 2, 4, 5)
    aug = Augment(crop_padding=2, flip=True)
    centred = AugmentParams(torch.tensor([2, 2]), torch.tensor([2, 2]), torch.tensor([False, True]))
    out = aug.apply(x, centred)
    assert torch.equal(out[0], x[0])  # centred crop, no flip: identity
    assert torch.equal(out[1], torch.flip(x[1], dims=[-1]))  # centred crop + flip = torch.flip
    shifted = AugmentParams(torch.tensor([0, 4]), torch.tensor([3, 0]), torch.tensor([False, False]))
    out = aug.apply(x, shifted)
    # sample 0: window starts 2 rows above and 1 column right of the image -> shifted down by 2, left by 1
    assert torch.equal(out[0, :, 2:, :4], x[0, :, :2, 1:])
    assert int(out[0, :, :2].sum()) == 0
    assert int(out[0, :, :, 4].sum()) == 0
    # sample 1: window starts 2 rows below and 2 columns left -> shifted up by 2, right by 2
    assert torch.equal(out[1, :, :2, 2:], x[1, :, 2:, :3])
    assert int(out[1, :, 2:].sum()) == 0
    assert int(out[1, :, :, :2].sum()) == 0


def test_augmented_loader_changes_pixels_but_keeps_content():
    data = _data(n=64, c=2, h=8, w=8)
    loader = TensorLoader(data, 64, shuffle=False, augment=Augment(crop_padding=2, flip=True), seed=0)
    x, y = next(iter(loader))
    assert x.shape == (64, 2, 8, 8)
    assert x.dtype == torch.float32
    assert y.tolist() == data.labels.tolist()
    raw = _raw(loader, x)
    changed = (raw != data.images).flatten(1).any(dim=1)
    assert int(changed.sum()) >= 50  # 1 in 50 samples draws the identity (centred, unflipped)
    # every output is some crop/flip of its own input: try all 5 x 5 offsets x 2 flips on every image
    aug, n = Augment(2, True), 64
    matches = []
    for dy in range(5):
        for dx in range(5):
            for flip in (False, True):
                params = AugmentParams(torch.full((n,), dy), torch.full((n,), dx), torch.full((n,), flip))
                out = aug.apply(data.images, params)
                matches.append(((out == raw).flatten(1).all(dim=1), flip))
    assert bool(torch.stack([m for m, _ in matches]).any(dim=0).all())
    flipped = torch.stack([m for m, f in matches if f]).any(dim=0).float().mean().item()
    assert 0.25 < flipped < 0.75  # about half the samples were flipped


def test_normalisation_uses_dataset_stats():
    data = _data(n=40, c=3, h=4, w=4)
    mean, std = channel_stats(data.images)
    pixels = data.images.double().permute(1, 0, 2, 3).reshape(3, -1) / 255
    assert torch.allclose(torch.tensor(mean, dtype=torch.float64), pixels.mean(1), atol=1e-9)
    assert torch.allclose(torch.tensor(std, dtype=torch.float64), pixels.std(1, unbiased=False), atol=1e-9)
    assert data.mean == pytest.approx(mean)
    x = torch.cat([b for b, _ in TensorLoader(data, 16)])
    per_channel = x.permute(1, 0, 2, 3).reshape(3, -1)
    assert torch.allclose(per_channel.mean(1), torch.zeros(3), atol=1e-5)
    assert torch.allclose(per_channel.std(1, unbiased=False), torch.ones(3), atol=1e-4)
    fixed = data.with_stats((0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    x0, _ = next(iter(TensorLoader(fixed, 1)))
    assert torch.allclose(x0, (data.images[:1].float() / 255 - 0.5) / 0.25, atol=1e-5)


def test_loader_and_augment_validation():
    data = _data()
    with pytest.raises(ConfigError, match="batch_size=0 must be an integer >= 1"):
        TensorLoader(data, 0)
    with pytest.raises(ConfigError, match="crop_padding=-1 must be an integer >= 0"):
        Augment(crop_padding=-1)
    assert TensorLoader(data, 4, augment=Augment(0, False)).augment is None  # a no-op augmentation is skipped
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 2\), got \[0, 2\]"):
        ImageTensors(data.images[:3], torch.tensor([0, 1, 2]), ["a", "b"])


def test_augmentation_draws_change_with_the_epoch_for_the_same_samples():
    data = _data()
    loader = TensorLoader(data, 23, shuffle=False, augment=Augment(2, True), seed=3)
    batches = []
    for epoch in (0, 1, 0):
        loader.set_epoch(epoch)
        batches.append(next(iter(loader))[0])
    assert torch.equal(loader.indices(0), loader.indices(1))  # same samples, same order...
    changed = (batches[0] != batches[1]).flatten(1).any(1)
    assert changed.float().mean() > 0.5  # ...but most of them cropped or flipped differently
    assert torch.equal(batches[0], batches[2])  # and an epoch's draws are reproducible
