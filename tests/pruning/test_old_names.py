"""The pruning targets' names before issue 28 (`ratio`, `macs_ratio`, `params_ratio`, `latency_ratio`)
still work for one release: same result as the new name, one `PrunusDeprecationWarning` naming it,
and both names at once refused."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch

from prunus.errors import ConfigError, PrunusDeprecationWarning
from prunus.methods import create_method, method_config
from prunus.methods.sfp import SFPConfig
from prunus.models import create_model
from prunus.pruning import PruneBudget, PruneConfig, plan_widths, prune

X = torch.randn(2, 1, 28, 28, generator=torch.Generator().manual_seed(0))

# (old name, new name, a valid value): written out here, not read from the code under test
PAIRS = [
    ("ratio", "remove_channels", 0.4),
    ("macs_ratio", "keep_macs", 0.5),
    ("params_ratio", "keep_params", 0.5),
    ("latency_ratio", "keep_latency", 0.5),
]
BUDGET_PAIRS = PAIRS[1:]
CUTTING_PAIRS = PAIRS[:3]  # the latency budget times the model: checked through the config below


def _model():
    torch.manual_seed(0)
    return create_model("resnet20", in_channels=1, width_mult=0.25).eval()


def _deprecations(caught) -> list[str]:
    return [str(w.message) for w in caught if issubclass(w.category, PrunusDeprecationWarning)]


def _call(fn, *args, **kwargs):
    """fn(*args, **kwargs) and the prunus deprecation messages it gave (every one, not deduplicated)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = fn(*args, **kwargs)
    return out, _deprecations(caught)


@pytest.mark.parametrize(("old", "new", "value"), CUTTING_PAIRS)
def test_prune_takes_the_old_name_with_one_warning_and_cuts_the_same_channels(old, new, value):
    (model_new, report_new), said_new = _call(prune, _model(), X[:1], **{new: value})
    (model_old, report_old), said_old = _call(prune, _model(), X[:1], **{old: value})
    assert said_new == []
    assert said_old == [f"{old} is deprecated; use {new}"]
    assert report_old == report_new
    assert report_old.widths == report_new.widths
    with torch.no_grad():
        assert torch.equal(model_old(X), model_new(X))


def test_the_warning_points_at_the_callers_line():
    with pytest.warns(PrunusDeprecationWarning) as caught:
        prune(_model(), X[:1], ratio=0.25)  # this line, not a line inside prunus
    (w,) = [w for w in caught if issubclass(w.category, PrunusDeprecationWarning)]
    assert w.filename == __file__


def test_prune_works_in_place_and_returns_the_same_model():
    model = _model()
    pruned, _ = prune(model, X[:1], keep_macs=0.5)
    assert pruned is model


@pytest.mark.parametrize(("old", "new", "value"), PAIRS)
def test_prune_config_built_with_the_old_name_equals_the_new(old, new, value):
    extra = {"runtime": "torch"} if new == "keep_latency" else {}
    fresh, said = _call(PruneConfig, **{old: value}, **extra)
    assert said == [f"{old} is deprecated; use {new}"]
    assert fresh == PruneConfig(**{new: value}, **extra)
    assert fresh.target == (new, value)
    loaded, said = _call(PruneConfig.from_dict, {old: value, **extra})
    assert said == [f"{old} is deprecated; use {new}"]
    assert loaded == fresh


@pytest.mark.parametrize(("old", "new", "value"), PAIRS)
def test_old_and_new_name_together_are_refused(old, new, value):
    message = f"{old} and {new} name the same value"
    with pytest.raises(ConfigError, match=message):
        PruneConfig(**{old: value, new: value})
    with pytest.raises(ConfigError, match=message):
        PruneConfig.from_dict({old: value, new: value})
    with pytest.raises(ConfigError, match=message):
        prune(_model(), X[:1], **{old: value, new: value})


def test_an_old_name_holding_none_is_a_config_written_before_the_rename():
    # config.yaml of an old run records every field, the unused budgets as null
    loaded, said = _call(PruneBudget.from_dict, {"macs_ratio": None, "params_ratio": None, "keep_latency": 0.5})
    assert said == []
    assert loaded == PruneBudget(keep_latency=0.5)


def test_merge_with_an_old_name_replaces_the_value():
    merged, said = _call(PruneConfig(keep_macs=0.5).merge, {"macs_ratio": 0.4})
    assert said == ["macs_ratio is deprecated; use keep_macs"]
    assert merged == PruneConfig(keep_macs=0.4)


@pytest.mark.parametrize(("old", "new", "value"), BUDGET_PAIRS[:2])
def test_plan_widths_takes_the_old_name(old, new, value):
    plan_new, _ = _call(plan_widths, _model(), X[:1], **{new: value})
    plan_old, said = _call(plan_widths, _model(), X[:1], **{old: value})
    assert said == [f"{old} is deprecated; use {new}"]
    assert plan_old.budget == new
    assert plan_old.widths == plan_new.widths
    assert plan_old.achieved == plan_new.achieved


@pytest.mark.parametrize("method", ["sfp", "fpgm", "mfp", "csgd"])
@pytest.mark.parametrize(("old", "new", "value"), BUDGET_PAIRS)
def test_method_configs_take_the_old_budget_names(method, old, new, value):
    config, said = _call(method_config, method, **{old: value})
    assert said == [f"{old} is deprecated; use {new}"]
    assert config == method_config(method, **{new: value})
    assert config.budget == new
    built, said = _call(create_method, method, **{old: value})
    assert said == [f"{old} is deprecated; use {new}"]
    assert built.config == config
    with pytest.raises(ConfigError, match=f"{old} and {new} name the same value"):
        method_config(method, **{old: value, new: value})


def test_a_method_config_class_takes_the_old_name_directly():
    config, said = _call(SFPConfig, macs_ratio=0.5)
    assert said == ["macs_ratio is deprecated; use keep_macs"]
    assert config == SFPConfig(keep_macs=0.5)
    assert copy.deepcopy(config) == config


def test_the_channel_share_is_not_a_method_budget():
    # `ratio` was never a method argument: it must not be taken as remove_channels there
    with pytest.raises(ConfigError, match="has no argument"):
        method_config("sfp", ratio=0.5)
