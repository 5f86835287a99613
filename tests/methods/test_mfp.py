"""MFP: the meta-attribute decides the criterion, choices are logged, resume is exact, errors are clear."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from prunus.data import DataConfig, build_loaders, training_slice_loader
from prunus.engine import Method, TrainConfig, Trainer
from prunus.errors import ConfigError
from prunus.methods import create_method
from prunus.methods._pruning import num_to_prune, select_channels
from prunus.methods.mfp import (
    DEFAULT_CANDIDATES,
    META_ATTRIBUTES,
    MetaAttributePruning,
    MetaContext,
    holdout_loss,
    norm_spread,
    recalibrate_bn_,
)
from prunus.models import create_model
from prunus.models.info import update_info
from prunus.structure import build_groups, soft_mask_


def _data(n: int = 64, batch: int = 16, val: int = 16):
    cfg = DataConfig(name="synthetic", num_samples=n, val_size=val, batch_size=batch, eval_batch_size=64)
    return build_loaders(cfg, seed=0)


def _model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return create_model("resnet20", num_classes=10, in_channels=1, width_mult=0.25)


def _fit(mfp, epochs=2, data=None, run_dir=None, model=None):
    data = data or _data()
    cfg = TrainConfig(epochs=epochs, lr=0.05, checkpoint=run_dir is not None)
    trainer = Trainer(model or _model(), data, cfg, methods=[mfp], run_dir=run_dir, progress=False)
    return trainer, trainer.fit()


class Spy:
    """A meta-attribute that records what it was shown and delegates to the loss."""

    def __init__(self) -> None:
        self.masks: list[dict[str, dict[str, list[int]]]] = []  # per switch: criterion -> its masks
        self.holdout = None

    def __call__(self, neighbour, ctx):
        self.holdout = ctx.holdout
        if not self.masks or ctx.criterion in self.masks[-1]:
            self.masks.append({})
        self.masks[-1][ctx.criterion] = copy.deepcopy(ctx.masks)
        return holdout_loss(neighbour, ctx)


def test_choice_is_the_argmin_of_the_logged_scores_and_training_continues_under_its_masks():
    spy = Spy()
    mfp = create_method("mfp", rate=0.5, switch_interval=1, meta_attribute=spy, holdout_size=12, remove_at_end=False)
    masks_after = {}

    class Snapshot(Method):
        name = "snapshot"

        def on_epoch_end(self, trainer):
            masks_after[trainer.epoch] = copy.deepcopy(mfp.masks)

    trainer = Trainer(_model(), _data(), TrainConfig(epochs=2, lr=0.05), methods=[mfp, Snapshot()], progress=False)
    trainer.fit()
    first = trainer.history[0]
    scores = first["mfp_scores"]
    assert list(scores) == list(DEFAULT_CANDIDATES)
    assert len(set(scores.values())) > 1, "candidates must lead to different neighbours here"
    for record in trainer.history:
        assert record["mfp_choice"] == min(record["mfp_scores"], key=record["mfp_scores"].get)
        assert set(record["mfp_diff_from_live"]) == set(DEFAULT_CANDIDATES)
        assert len(record["mfp_mask_diff"]) == 6  # every pair of the four candidates
    assert first["mfp_mask_diff"]["l1|dist-l2"] > 0
    # training continues under exactly the chosen candidate's masks
    for epoch, record in enumerate(trainer.history):
        assert masks_after[epoch] == {k: v for k, v in spy.masks[epoch][record["mfp_choice"]].items() if v}
    assert sum(trainer.history[-1]["mfp_wins"].values()) == 2 == mfp.switches
    # the held-out images are the validation split's first ones, unaugmented: never training or test images
    assert spy.holdout.data.name.startswith("synthetic/val")
    assert len(spy.holdout.data) == 12
    assert spy.holdout.augment is None


def test_user_meta_attribute_that_prefers_a_criterion_wins():
    mfp = create_method("mfp", rate=0.4, switch_interval=1, meta_attribute=lambda net, ctx: ctx.criterion != "dist-l1")
    trainer, result = _fit(mfp, epochs=3)
    assert [r["mfp_choice"] for r in trainer.history] == ["dist-l1"] * 3
    assert trainer.history[-1]["mfp_wins"] == {"l1": 0, "l2": 0, "dist-l1": 3, "dist-l2": 0}
    assert result["mfp_channels_removed"] > 0


def test_switch_schedule_and_reapply_between_switches():
    mfp = create_method("mfp", rate=0.4, switch_interval=2, meta_attribute=lambda net, ctx: ctx.criterion != "l2")
    trainer, _ = _fit(mfp, epochs=3)
    switched = ["mfp_choice" in r for r in trainer.history]
    assert switched == [True, False, True]  # end of epochs 0, 2, 4, ...
    assert all(r["mfp_updated"] and r["mfp_criterion"] == "l2" for r in trainer.history)
    # masked filters' norm is logged as SFP logs it: alive (soft) until the final mask zeroes them
    assert [r["mfp_masked_norm"] > 0 for r in trainer.history] == [True, True, False]


def _spread_net(norms: list[float]) -> tuple[nn.Module, list]:
    model = nn.Sequential(nn.Conv2d(1, 2, 1), nn.Conv2d(2, len(norms), 1, bias=False), nn.ReLU())
    model.append(nn.Conv2d(len(norms), 3, 1))
    update_info(model, stem="0", classifier="3")
    with torch.no_grad():
        w = torch.zeros(len(norms), 2, 1, 1)
        w[:, 0, 0, 0] = torch.tensor(norms)
        model[1].weight.copy_(w)
    groups = [g for g in build_groups(model, torch.randn(1, 1, 4, 4)) if g.prunable]
    return model, groups


@pytest.mark.parametrize(
    ("norms", "winner"),
    [
        ([0.0, 0.01, 1.0, 2.0, 3.0, 4.0], "l1"),  # wide spread, minimum near zero: norms are informative
        ([1.0, 1.1, 0.9, 1.05, 0.95, 1.0], "dist-l1"),  # all alike: use the distance criteria
    ],
)
def test_norm_spread_follows_fpgm_conditions(norms, winner):
    model, groups = _spread_net(norms)
    scores = {c: norm_spread(model, MetaContext(c, {}, model, tuple(groups), None, 0)) for c in DEFAULT_CANDIDATES}
    assert min(DEFAULT_CANDIDATES, key=lambda c: (scores[c], DEFAULT_CANDIDATES.index(c))) == winner
    assert set(scores.values()) == {0.0, 1.0}


def test_norm_spread_meta_attribute_in_training_is_consistent():
    mfp = create_method("mfp", rate=0.4, switch_interval=1, meta_attribute="norm-spread")
    trainer, _ = _fit(mfp, epochs=2)
    for r in trainer.history:
        s = r["mfp_scores"]
        assert r["mfp_choice"] == min(s, key=lambda c: (s[c], DEFAULT_CANDIDATES.index(c)))
        assert s["l1"] == s["l2"] == 1 - s["dist-l1"]


def test_neighbour_zeroes_the_candidate_channels_only():
    model = _model()
    groups = [g for g in build_groups(model, torch.randn(1, 1, 28, 28)) if g.prunable]
    for crit in ("l1", "dist-l2"):
        neighbour = copy.deepcopy(model)
        plan = {g.key: select_channels(model, g, crit, num_to_prune(g.num_channels, 0.4)) for g in groups}
        for g in groups:
            soft_mask_(neighbour, g, plan[g.key])
        changed = sum(int((a != b).any()) for a, b in zip(model.parameters(), neighbour.parameters(), strict=True))
        assert changed > 0
        assert all(torch.equal(a, b) for a, b in zip(model.buffers(), neighbour.buffers(), strict=True))


def test_resume_continues_identically(tmp_path):
    data = _data()
    full_mfp = create_method("mfp", rate=0.4, switch_interval=2, holdout_size=32)
    full, _ = _fit(full_mfp, epochs=3, data=data, run_dir=tmp_path / "a")
    cfg = TrainConfig(epochs=3, lr=0.05)
    first = Trainer(_model(), data, cfg, methods=[create_method("mfp", rate=0.4, switch_interval=2, holdout_size=32)],
                    run_dir=tmp_path / "b", progress=False)  # fmt: skip
    first._run_epoch()
    first._run_epoch()
    resumed_mfp = create_method("mfp", rate=0.4, switch_interval=2, holdout_size=32)
    resumed = Trainer(_model(seed=9), data, cfg, methods=[resumed_mfp], run_dir=tmp_path / "b", resume=True,
                      progress=False)  # fmt: skip
    assert resumed_mfp.state_dict() == first.methods[0].state_dict()
    resumed.fit()
    assert resumed_mfp.state_dict() == full_mfp.state_dict()
    assert [r.get("mfp_choice") for r in resumed.history] == [r.get("mfp_choice") for r in full.history]
    for (k, a), b in zip(full.model.state_dict().items(), resumed.model.state_dict().values(), strict=True):
        assert torch.equal(a, b), k


def test_state_dict_round_trip():
    mfp = MetaAttributePruning(candidates=["l2", "fpgm"])
    mfp.load_state_dict({"masks": {"a": [1]}, "updates": 2, "removed": False, "criterion": "fpgm",
                         "wins": {"l2": 1, "fpgm": 2}, "switches": 3})  # fmt: skip
    other = MetaAttributePruning(candidates=["l2", "fpgm"])
    other.load_state_dict(mfp.state_dict())
    assert other.state_dict() == mfp.state_dict()
    assert other.criterion == "fpgm"
    assert other.wins == {"l2": 1, "fpgm": 2}


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"switch_interval": 0}, "switch_interval=0 is not valid; expected an integer >= 1"),
        ({"rate": 1.0}, "rate=1.0 is out of range"),
        ({"candidates": ["l1", "l7"]}, "candidates='l7' is not valid; choose one of: bn-scale"),
        ({"candidates": []}, "candidates must be a non-empty list"),
        ({"candidates": "l1"}, "candidates must be a non-empty list"),
        ({"candidates": ["l1", "l1"]}, "candidates must be distinct"),
        ({"meta_attribute": "accuracy"}, "meta_attribute='accuracy' is not valid; choose one of: loss, norm-spread"),
        ({"holdout_size": 0}, "holdout_size=0 is not valid"),
        ({"criterion": "l1"}, "method 'mfp' has no argument"),
    ],
)
def test_bad_arguments_fail_at_construction(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        create_method("mfp", **kwargs)


def test_builtin_meta_attributes_are_listed():
    assert sorted(META_ATTRIBUTES) == ["loss", "norm-spread"]


def test_exact_tie_keeps_the_current_criterion_and_is_logged():
    mfp = create_method("mfp", rate=0.4, switch_interval=1, meta_attribute=lambda net, ctx: 1.0)
    trainer, _ = _fit(mfp, epochs=2)
    for record in trainer.history:
        assert record["mfp_choice"] == "l1"  # the criterion in use at the start
        assert record["mfp_kept"] is True
        assert record["mfp_tie"] == list(DEFAULT_CANDIDATES)
    # epoch 0: dist-l1 best; epoch 1: l2 and dist-l1 tie, and dist-l1 (in use) is kept although l2 comes first
    prefer = [
        {"l1": 1.0, "l2": 0.9, "dist-l1": 0.3, "dist-l2": 2.0},
        {"l1": 1.0, "l2": 0.5, "dist-l1": 0.5, "dist-l2": 2.0},
    ]
    mfp = create_method(
        "mfp", rate=0.4, switch_interval=1, meta_attribute=lambda net, ctx: prefer[ctx.epoch][ctx.criterion]
    )
    trainer, _ = _fit(mfp, epochs=2)
    first, second = trainer.history
    assert (first["mfp_choice"], first["mfp_kept"], first["mfp_tie"]) == ("dist-l1", False, [])
    assert (second["mfp_choice"], second["mfp_kept"], second["mfp_tie"]) == ("dist-l1", True, ["l2", "dist-l1"])


def test_every_neighbour_is_scored_with_recalibrated_bn_statistics():
    seen = {}

    def spy(net, ctx):
        bn, live = net.layer1[0].bn1, ctx.model.layer1[0].bn1
        seen.setdefault(ctx.criterion, []).append(float((bn.running_mean - live.running_mean).abs().max()))
        return 0.0

    _fit(create_method("mfp", rate=0.4, switch_interval=1, meta_attribute=spy), epochs=1)
    assert min(v for vals in seen.values() for v in vals) > 1e-4  # re-estimated, not the live statistics
    seen.clear()
    _fit(create_method("mfp", rate=0.4, switch_interval=1, meta_attribute=spy, recalibration_images=0), epochs=1)
    assert max(v for vals in seen.values() for v in vals) == 0.0


def test_loss_meta_attribute_is_the_eval_mode_loss_on_the_held_out_images():
    data = _data()
    model = _model().train()
    holdout = training_slice_loader(data.val, 16, 8)
    got = holdout_loss(model, MetaContext("l1", {}, model, (), holdout, 0))
    assert model.training  # mode restored
    model.eval()
    with torch.no_grad():
        losses = [nn.functional.cross_entropy(model(x), y, reduction="sum") for x, y in holdout]
    hand = float(sum(losses)) / 16
    assert got == pytest.approx(hand, rel=1e-6)
    model.train()
    with torch.no_grad():  # train mode (batch statistics) gives another number: the check above has teeth
        train_mode = float(sum(nn.functional.cross_entropy(model(x), y, reduction="sum") for x, y in holdout)) / 16
    assert abs(train_mode - hand) > 1e-3


def test_loss_meta_attribute_without_validation_split_is_refused():
    with pytest.raises(ConfigError, match=r"no validation split; set val_size > 0"):
        _fit(create_method("mfp", rate=0.4), data=_data(val=0))
    _fit(create_method("mfp", rate=0.4, meta_attribute="norm-spread"), epochs=1, data=_data(val=0))


def test_recalibrated_bn_statistics_are_those_of_the_images():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 3, 3), nn.BatchNorm2d(3)).eval()
    x = torch.randn(12, 1, 6, 6) * 2 + 1
    batches = [(x[:8], None), (x[8:], None)]
    recalibrate_bn_(model, batches)
    z = model[0](x).detach()
    # the average of the per-batch statistics (unbiased variance), as BN's cumulative average keeps them
    means = [z[:8].mean((0, 2, 3)), z[8:].mean((0, 2, 3))]
    variances = [z[:8].var((0, 2, 3), unbiased=True), z[8:].var((0, 2, 3), unbiased=True)]
    torch.testing.assert_close(model[1].running_mean, (means[0] + means[1]) / 2)
    torch.testing.assert_close(model[1].running_var, (variances[0] + variances[1]) / 2)
    assert not model.training
    assert model[1].momentum == 0.1


class _Follow(nn.Module):
    """One prunable group of five 1x1 filters [0.5, 1, 1.5, 2.5, 3]: l1/l2 mask channel 0, the distance
    criteria channel 2 (the median); which one matters is set by the classifier's columns."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, 1, 1, bias=False)
        self.a = nn.Conv2d(1, 5, 1, bias=False)
        self.fc = nn.Linear(5, 2)
        update_info(self, stem="stem", classifier="fc")
        with torch.no_grad():
            self.stem.weight.fill_(1.0)
            self.a.weight.copy_(torch.tensor([0.5, 1.0, 1.5, 2.5, 3.0]).view(5, 1, 1, 1))
        self.informative(2)

    @torch.no_grad()
    def informative(self, channel: int) -> None:
        self.fc.weight.zero_()
        self.fc.bias.zero_()
        self.fc.weight[:, channel] = torch.tensor([-4.0, 4.0])

    def forward(self, x):
        return self.fc(torch.relu(self.a(self.stem(x))).mean((2, 3)))


def _sign_data():
    """Constant images; the label is whether the normalised pixel value is positive."""
    from prunus.data import ImageTensors, TensorLoader
    from prunus.data.bundle import DataBundle

    def split(n, seed, name):
        p = torch.randint(0, 256, (n,), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)
        images = p.view(n, 1, 1, 1).expand(n, 1, 4, 4).contiguous()
        return ImageTensors(images, (p > 127).long(), ["neg", "pos"], (0.5,), (0.5,), name=name)

    train, val, test = split(64, 0, "sign/train"), split(64, 1, "sign/val"), split(32, 2, "sign/test")
    return DataBundle(
        TensorLoader(train, 16, shuffle=True), TensorLoader(val, 64), TensorLoader(test, 64), 2, 1, (1, 4, 4),
        "sign", ["neg", "pos"], (0.5,), (0.5,),
    )  # fmt: skip


def test_mfp_follows_the_best_criterion_when_it_changes_between_switches():
    model = _Follow()

    class Swap(Method):
        name = "swap"

        def on_epoch_start(self, trainer):
            if trainer.epoch == 1:  # now channel 0 carries the signal and channel 2 none
                trainer.model.informative(0)

    mfp = create_method("mfp", rate=0.2, switch_interval=1, remove_at_end=False)
    cfg = TrainConfig(epochs=2, lr=1e-9, weight_decay=0.0, checkpoint=False)
    trainer = Trainer(model, _sign_data(), cfg, methods=[Swap(), mfp], progress=False)
    trainer.fit()
    first, second = trainer.history
    assert first["mfp_mask_diff"]["l1|dist-l1"] == 2  # {0} vs {2}
    assert first["mfp_scores"]["l1"] < first["mfp_scores"]["dist-l1"]
    assert (first["mfp_choice"], first["mfp_tie"]) == ("l1", ["l1", "l2"])
    assert second["mfp_scores"]["dist-l1"] < second["mfp_scores"]["l1"]
    assert (second["mfp_choice"], second["mfp_kept"]) == ("dist-l1", False)
    assert second["mfp_diff_from_live"] == {"l1": 0, "l2": 0, "dist-l1": 2, "dist-l2": 2}
    assert mfp.masks == {"a": [2]}
