"""round_to in the training-time methods: SFP/FPGM/MFP final widths and C-SGD cluster counts."""

from __future__ import annotations

import pytest
import torch

from prunus.data import DataConfig, build_loaders
from prunus.engine import TrainConfig, Trainer
from prunus.errors import ConfigError
from prunus.methods import create_method
from prunus.models import create_model
from prunus.structure import build_groups

X = torch.randn(1, 1, 28, 28, generator=torch.Generator().manual_seed(0))


def _model():
    torch.manual_seed(0)
    return create_model("resnet20", num_classes=10, in_channels=1, width_mult=0.75)  # 12 / 24 / 48 channels


@pytest.mark.parametrize(("name", "kwargs"), [("sfp", {}), ("fpgm", {}), ("mfp", {"holdout_size": 16})])
def test_sfp_family_final_widths_are_multiples(name, kwargs):
    model = _model()
    before = {g.key: g.num_channels for g in build_groups(model, X) if g.prunable}
    method = create_method(name, rate=0.4, round_to=8, **kwargs)
    data = build_loaders(DataConfig(name="synthetic", num_samples=32, val_size=16, batch_size=16), seed=0)
    Trainer(model, data, TrainConfig(epochs=1, lr=0.01), methods=[method], progress=False).fit()
    after = {g.key: g.num_channels for g in build_groups(model, X) if g.prunable}
    assert all(a % 8 == 0 or a == before[k] for k, a in after.items()), after
    assert sum(after.values()) < sum(before.values())


def test_csgd_cluster_counts_are_multiples():
    model = _model()
    clusters = create_method("csgd", width=0.5, round_to=8, cluster="even").plan(model, X)
    assert clusters
    assert {len(c) for c in clusters.values()} <= {8, 16, 24}  # 12 -> 8, 24 -> 16, 48 -> 24
    exact = create_method("csgd", width=0.5, widths={"layer1.0.conv1": 5}, round_to=8, cluster="even").plan(model, X)
    assert len(exact["layer1.0.conv1"]) == 5  # an explicit channel count is used as given


@pytest.mark.parametrize("name", ["sfp", "fpgm", "mfp", "csgd"])
def test_bad_round_to_fails_at_construction(name):
    with pytest.raises(ConfigError, match="round_to must be an integer from 1 to 4096"):
        create_method(name, round_to=0)


@pytest.mark.parametrize("name", ["sfp", "csgd"])
def test_a_budget_is_planned_with_the_methods_round_to(name):
    # the budget value travels whole: its round_to must reach the planner, not just the masks
    from prunus.methods._budget import plan_budget

    model = _model()
    method_config = create_method(name, keep_macs=0.5, round_to=8).config
    keys = [g.key for g in build_groups(model, X) if g.prunable]
    kept, plan = plan_budget(model, X, method_config, keys=keys, ignored_layers=None, filter_fn=None, threads=1)
    dense = {g.key: g.num_channels for g in build_groups(model, X) if g.prunable}
    assert plan.round_to == 8
    assert all(k % 8 == 0 or k == dense[key] for key, k in kept.items()), kept
    assert any(k < dense[key] for key, k in kept.items())
