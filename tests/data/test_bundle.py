"""DataConfig validation, build_loaders splits/sharding/stats, and the synthetic dataset."""

from __future__ import annotations

import pytest
import torch

from prunus.data import DEFAULT_EVAL_BATCH_SIZE, DataConfig, build_loaders, load_dataset, make_synthetic, split_indices
from prunus.errors import ConfigError


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"name": "imagenet"}, r"DataConfig.name='imagenet' is not valid; choose one of: cifar10, .*fashion-mnist"),
        ({"val_size": -1}, r"DataConfig.val_size=-1 is not valid; expected an integer from 0 to 10000000 or null"),
        ({"subset": 0}, r"DataConfig.subset=0 is not valid; expected an integer from 1 to 10000000 or null"),
        ({"crop_padding": -2}, r"DataConfig.crop_padding=-2 is not valid"),
        ({"batch_size": 0}, r"DataConfig.batch_size=0 is not valid; expected an integer from 1 to 65536"),
        ({"eval_batch_size": 2.5}, r"DataConfig.eval_batch_size=2.5 is not valid"),
        ({"batch_size": True}, r"DataConfig.batch_size=True is not valid"),
        (
            {"num_classes": 5},
            r"DataConfig.num_classes does not apply to dataset 'fashion-mnist'; it is used by: synthetic",
        ),
        (
            {"image_size": 32},
            r"image_size does not apply to dataset 'fashion-mnist'; it is used by: imagefolder, synthetic",
        ),
        (
            {"name": "synthetic", "num_classes": 1},
            r"DataConfig.num_classes=1 is not valid; expected an integer from 2 to 100000 or null",
        ),
    ],
)
def test_bad_config_values(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        DataConfig(**kwargs)


def test_config_dict_round_trip_and_unknown_key():
    cfg = DataConfig.from_dict({"name": "synthetic", "subset": 100, "num_samples": 300})
    assert cfg.subset == 100
    assert cfg.options() == {"num_samples": 300}
    assert DataConfig.from_dict(cfg.to_dict()) == cfg
    assert cfg.merge({"batch_size": 64, "subset": None}).batch_size == 64
    with pytest.raises(ConfigError, match=r"unknown DataConfig field\(s\): bacth_size"):
        DataConfig.from_dict({"bacth_size": 3})


def test_split_indices_disjoint_nested_and_seeded():
    train, val = split_indices(1000, 100, None, seed=0)
    assert len(train) == 900
    assert len(val) == 100
    assert set(train.tolist()).isdisjoint(val.tolist())
    assert len(set(train.tolist()) | set(val.tolist())) == 1000
    small, val_small = split_indices(1000, 100, 50, seed=0)
    assert torch.equal(val_small, val)  # validation does not depend on the subset
    assert set(small.tolist()) <= set(train.tolist())
    assert len(small) == 50
    bigger, _ = split_indices(1000, 100, 200, seed=0)
    assert set(small.tolist()) <= set(bigger.tolist())  # subsets are nested
    _, other_val = split_indices(1000, 100, None, seed=1)
    assert not torch.equal(other_val, val)
    with pytest.raises(ConfigError, match="val_size=1000 leaves no training images; the training split has 1000"):
        split_indices(1000, 1000, None, seed=0)
    with pytest.raises(ConfigError, match="subset=901 is larger than the 900 training images left"):
        split_indices(1000, 100, 901, seed=0)


def test_build_loaders_sizes_stats_and_eval_loaders():
    cfg = DataConfig(name="synthetic", num_samples=200, val_size=40, subset=100, batch_size=32, eval_batch_size=64)
    bundle = build_loaders(cfg, seed=3, world_size=2, rank=1)
    assert (bundle.num_classes, bundle.in_channels, bundle.input_shape) == (10, 1, (1, 28, 28))
    assert bundle.train.num_samples == 50
    assert len(bundle.train) == 2
    assert bundle.val.num_samples == 40
    assert bundle.test.num_samples == 50
    assert not bundle.val.shuffle
    assert bundle.val.augment is None
    assert bundle.test.augment is None
    assert bundle.train.augment.crop_padding == 2
    assert bundle.train.augment.flip
    full = load_dataset("synthetic", "train", num_samples=200)
    assert bundle.mean == full.mean
    assert bundle.test.data.mean == full.mean
    assert bundle.val.data.std == full.std
    train_imgs = {bytes(img.numpy().tobytes()) for img in bundle.train.data.images}
    val_imgs = {bytes(img.numpy().tobytes()) for img in bundle.val.data.images}
    assert len(train_imgs) == 100
    assert train_imgs.isdisjoint(val_imgs)
    no_val = build_loaders(DataConfig(name="synthetic", num_samples=50, val_size=0, augment=False, image_size=12))
    assert no_val.val is None
    assert no_val.train.augment is None
    assert no_val.train.num_samples == 50
    assert (
        build_loaders(
            DataConfig(name="synthetic", num_samples=50, val_size=0, image_size=32)
        ).train.augment.crop_padding
        == 4
    )


def test_eval_loaders_batch_by_eval_batch_size_and_the_default_is_shared_with_the_eval_cli():
    bundle = build_loaders(DataConfig(name="synthetic", num_samples=200, val_size=40, batch_size=32, eval_batch_size=7))
    assert (bundle.train.batch_size, bundle.val.batch_size, bundle.test.batch_size) == (32, 7, 7)
    assert [len(y) for _, y in bundle.val][:2] == [7, 7]
    assert DataConfig().eval_batch_size == DEFAULT_EVAL_BATCH_SIZE == 32
    from prunus.cli import build_parser

    args = build_parser().parse_args(["eval", "some/model"])
    assert args.batch_size == DEFAULT_EVAL_BATCH_SIZE


def test_synthetic_is_deterministic_balanced_and_split_specific():
    a = make_synthetic(90, num_classes=3, image_size=8, channels=2, seed=4)
    b = make_synthetic(90, num_classes=3, image_size=8, channels=2, seed=4)
    test = make_synthetic(90, num_classes=3, image_size=8, channels=2, seed=4, split="test")
    assert torch.equal(a.images, b.images)
    assert torch.equal(a.labels, b.labels)
    assert a.images.shape == (90, 2, 8, 8)
    assert a.labels.bincount().tolist() == [30, 30, 30]
    assert not torch.equal(a.images, test.images)
    assert len(load_dataset("synthetic", "test", num_samples=90)) == 22


def test_synthetic_is_learnable_by_a_tiny_net():
    torch.manual_seed(0)
    bundle = build_loaders(
        DataConfig(name="synthetic", num_samples=600, num_classes=10, image_size=12, val_size=0, batch_size=50)
    )
    model = torch.nn.Sequential(
        torch.nn.Conv2d(1, 8, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(4),
        torch.nn.Flatten(),
        torch.nn.Linear(128, 10),
    )
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for epoch in range(4):
        bundle.train.set_epoch(epoch)
        for x, y in bundle.train:
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
    with torch.no_grad():
        correct = sum(int((model(x).argmax(1) == y).sum()) for x, y in bundle.test)
    accuracy = correct / bundle.test.num_samples
    assert accuracy > 0.5  # chance is 0.1


def test_default_validation_size_follows_the_protocol_and_scales_down_for_small_sets():
    from prunus.data.bundle import default_val_size

    assert default_val_size(60_000) == 5000  # benchmarks.md: 55k train + 5k validation
    assert default_val_size(50_000) == 5000
    assert default_val_size(2000) == 200
    bundle = build_loaders(DataConfig(name="synthetic", num_samples=300, batch_size=32))
    assert bundle.val.num_samples == 30
    assert bundle.train.num_samples == 270
