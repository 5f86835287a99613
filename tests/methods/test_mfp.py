"""MFP: the meta-attribute decides the criterion, choices are logged, resume is exact, errors are clear."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from prunus.data import DataConfig, build_loaders
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
)
from prunus.model_info import update_info
from prunus.models import create_model
from prunus.structure import build_groups, soft_mask_


def _data(n: int = 48, batch: int = 16):
    cfg = DataConfig(name="synthetic", num_samples=n, val_size=0, batch_size=batch, eval_batch_size=64)
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
        self.seen: list[tuple[str, torch.Tensor]] = []
        self.holdout = None

    def __call__(self, neighbour, ctx):
        self.holdout = ctx.holdout
        self.seen.append((ctx.criterion, {k: v.clone() for k, v in neighbour.state_dict().items()}))
        return holdout_loss(neighbour, ctx)


def test_choice_is_the_argmin_of_the_logged_scores_and_training_continues_from_it():
    spy = Spy()
    mfp = create_method("mfp", rate=0.5, switch_interval=1, meta_attribute=spy, holdout_size=40, remove_at_end=False)
    live_after = {}

    class Snapshot(Method):
        name = "snapshot"

        def on_epoch_end(self, trainer):
            live_after[trainer.epoch] = {k: v.clone() for k, v in trainer.model.state_dict().items()}

    trainer = Trainer(_model(), _data(), TrainConfig(epochs=2, lr=0.05), methods=[mfp, Snapshot()], progress=False)
    trainer.fit()
    first = trainer.history[0]
    scores = first["mfp_scores"]
    assert list(scores) == list(DEFAULT_CANDIDATES)
    assert len(set(scores.values())) > 1, "candidates must lead to different neighbours here"
    assert first["mfp_choice"] == min(scores, key=scores.get)
    # the live model continues from the chosen neighbour: identical weights
    chosen = dict(spy.seen[: len(DEFAULT_CANDIDATES)])[first["mfp_choice"]]
    for k, v in chosen.items():
        assert torch.equal(v, live_after[0][k]), k
    for record in trainer.history:
        assert record["mfp_choice"] == min(record["mfp_scores"], key=record["mfp_scores"].get)
    assert sum(trainer.history[-1]["mfp_wins"].values()) == 2 == mfp.switches
    # the slice is the training set's first images, unaugmented, not the test set
    assert spy.holdout.data.name.startswith("synthetic/train")
    assert len(spy.holdout.data) == 40
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
