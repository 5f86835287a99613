"""One config dataclass per method: shared base, registry, generated CLI flags, resolved recipes."""

from __future__ import annotations

import argparse
import dataclasses

import pytest

from prunus.cli.train_cmd import _method_specs, add_parser
from prunus.errors import ConfigError
from prunus.methods import METHODS, create_method, method_arguments, method_config
from prunus.methods._pruning import SoftPruningConfig
from prunus.methods.mfp import META_ATTRIBUTES, MFPConfig, register_meta_attribute
from prunus.methods.sfp import FPGMConfig, SFPConfig
from prunus.registry import Registry
from prunus.training import resolve_run_config


def _names(cls):
    return [f.name for f in dataclasses.fields(cls)]


def test_fpgm_and_mfp_share_sfp_fields_instead_of_restating_them():
    base = _names(SoftPruningConfig)
    for cls in (SFPConfig, FPGMConfig, MFPConfig):
        assert issubclass(cls, SoftPruningConfig)
        assert _names(cls)[: len(base)] == base
    assert issubclass(FPGMConfig, SFPConfig)
    assert _names(FPGMConfig) == _names(SFPConfig)  # only the criterion default differs
    assert (SFPConfig().criterion, FPGMConfig().criterion) == ("l2", "fpgm")
    assert "__init__" not in vars(METHODS.get("fpgm").factory)  # FPGM has no constructor of its own
    assert method_arguments("fpgm") == method_arguments("sfp")


def test_configs_are_frozen_and_validated_at_construction():
    config = SFPConfig(rate=0.3, ignored_layers=["conv1"])
    assert config.ignored_layers == ("conv1",)  # lists normalised: the config round-trips through YAML
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.rate = 0.5
    with pytest.raises(ConfigError, match="candidates='l7' is not valid; choose one of: bn-scale"):
        MFPConfig(candidates=("l1", "l7"))


def test_meta_attributes_live_on_the_shared_registry():
    assert isinstance(META_ATTRIBUTES, Registry)
    assert META_ATTRIBUTES.list() == ["loss", "norm-spread"]
    with pytest.raises(ConfigError, match="unknown meta-attribute 'nope'; choose one of: loss, norm-spread"):
        META_ATTRIBUTES.get("nope")
    with pytest.raises(ValueError, match="registered twice"):
        register_meta_attribute("loss")(lambda net, ctx: 0.0)


def _parse(argv):
    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers())
    return parser.parse_args(["train", *argv])


def test_train_flags_come_from_the_config_fields():
    args = _parse(["--method", "mfp", "--rate", "0.3", "--candidates", "l1,fpgm", "--switch-interval", "3", "--hard"])
    assert _method_specs(args) == [
        {"name": "mfp", "args": {"rate": 0.3, "hard": True, "candidates": ("l1", "fpgm"), "switch_interval": 3}}
    ]
    flags = set(args.method_flags)
    scalar = {"rate", "interval", "hard", "remove_at_end", "criterion", "mix_ratio", "width", "eps", "cluster"}
    assert scalar <= flags
    assert "seed" not in flags  # csgd.seed would clash with the run's --seed: --set seed=... instead
    assert "widths" not in flags  # a mapping: --set widths={...}
    # every flag is a field of some registered method
    assert flags <= {f for name in METHODS.list() for f in method_arguments(name)}


def test_one_flag_feeds_every_chosen_method_that_has_the_field():
    args = _parse(["--method", "sfp", "--method", "csgd", "--rate", "0.5", "--width", "0.5", "--no-remove-at-end"])
    assert _method_specs(args) == [
        {"name": "sfp", "args": {"rate": 0.5, "remove_at_end": False}},
        {"name": "csgd", "args": {"width": 0.5}},
    ]
    with pytest.raises(ConfigError, match=r"option\(s\) switch_interval not accepted by method\(s\) \['sfp'\]"):
        _method_specs(_parse(["--method", "sfp", "--switch-interval", "2"]))
    with pytest.raises(ConfigError, match=r"method options given \(hard\) but no --method"):
        _method_specs(_parse(["--hard"]))


def test_run_config_holds_the_resolved_method_config():
    config = resolve_run_config(None, {"methods": [{"name": "fpgm", "args": {"rate": 0.3}}]})
    (spec,) = config.methods
    assert spec.args == method_config("fpgm", rate=0.3).to_dict()
    assert spec.args["criterion"] == "fpgm"
    assert spec.args["interval"] == 1
    assert create_method(spec.name, **spec.args).config == FPGMConfig(rate=0.3)
    with pytest.raises(ConfigError, match="interval=0 is not valid"):  # values are checked when a recipe is parsed
        resolve_run_config(None, {"methods": [{"name": "sfp", "args": {"interval": 0}}]})
