"""The Method contract, generated from `list_methods()`: every registered method gets these tests for free.

Each registration ships small valid example arguments (`method_example`); on the shared tiny
fixture (`_tiny.py`) every method must: resume exactly (interrupted + resumed == uninterrupted,
bit for bit), keep its state loadable with `torch.load(weights_only=True)`, reject a bad value of
every argument with a message naming that argument, round-trip its resolved config through YAML,
and run under real 2-process gloo DDP with replicas ending identical (weights and method state).
"""

from __future__ import annotations

import dataclasses
import io
import re
from pathlib import Path

import pytest
import torch
import yaml

from prunus.engine import Trainer
from prunus.errors import ConfigError
from prunus.methods import METHODS, create_method, list_methods, method_arguments, method_config, method_example
from prunus.training.config import MethodSpec

METHOD_NAMES = list_methods()
WORKER = Path(__file__).with_name("contract_ddp_worker.py")


class _Junk:
    """A value no argument accepts: not a number, string, bool, list, mapping or callable."""

    def __repr__(self) -> str:
        return "<junk>"


FIELDS = [(name, f.name) for name in METHOD_NAMES for f in dataclasses.fields(METHODS.get(name).meta["config"])]


def _fit(tiny, name, run_dir=None, *, model_seed=0, resume=False, stop_after=None):
    data = tiny.tiny_data()
    method = create_method(name, **method_example(name))
    model = tiny.tiny_model(data, model_seed)
    trainer = Trainer(model, data, tiny.tiny_config(), [method], run_dir, resume=resume, progress=False)
    if stop_after is not None:
        for _ in range(stop_after):
            trainer._run_epoch()  # "crash" after this epoch: its checkpoint is on disk
        return trainer, method
    trainer.fit()
    return trainer, method


def test_every_method_registers_a_config_and_example():
    assert set(METHOD_NAMES) >= {"sfp", "fpgm", "mfp", "csgd"}
    for name in METHOD_NAMES:
        config = METHODS.get(name).meta["config"]
        assert dataclasses.is_dataclass(config)
        assert config.__dataclass_params__.frozen, name
        assert METHODS.get(name).factory.config_class is config
        assert set(method_example(name)) <= set(method_arguments(name))


@pytest.mark.parametrize("name", METHOD_NAMES)
def test_exact_resume(name, tmp_path, tiny):
    full, _ = _fit(tiny, name, tmp_path / "full")
    _fit(tiny, name, tmp_path / "part", stop_after=1)
    resumed, _ = _fit(tiny, name, tmp_path / "part", model_seed=99, resume=True)  # weights come from the checkpoint
    assert resumed.epoch == full.epoch
    a, b = full.model.state_dict(), resumed.model.state_dict()
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert [r.get("epoch") for r in resumed.history] == [r.get("epoch") for r in full.history]


@pytest.mark.parametrize("name", METHOD_NAMES)
def test_state_loads_with_weights_only(name, tmp_path, tiny):
    _, method = _fit(tiny, name, tmp_path, stop_after=1)
    on_disk = torch.load(tmp_path / "checkpoint.pt", weights_only=True)["methods"]
    assert list(on_disk) == [method.state_key]
    buffer = io.BytesIO()
    torch.save(method.state_dict(), buffer)
    buffer.seek(0)
    assert torch.load(buffer, weights_only=True) == on_disk[method.state_key]
    fresh = create_method(name, **method_example(name))
    fresh.load_state_dict(on_disk[method.state_key])
    assert fresh.state_dict() == method.state_dict()


@pytest.mark.parametrize(("name", "field"), FIELDS, ids=[f"{n}.{f}" for n, f in FIELDS])
def test_bad_argument_raises_naming_it(name, field):
    with pytest.raises(ConfigError, match=rf"\b{re.escape(field)}\b"):
        create_method(name, **{**method_example(name), field: _Junk()})


@pytest.mark.parametrize("name", METHOD_NAMES)
def test_unknown_argument_lists_the_accepted_ones(name):
    first = method_arguments(name)[0]
    with pytest.raises(ConfigError, match=rf"method '{name}' has no argument\(s\) bogus; accepted: {first}"):
        create_method(name, bogus=1)


@pytest.mark.parametrize("name", METHOD_NAMES)
def test_resolved_config_round_trips(name):
    config = method_config(name, **method_example(name))
    data = config.to_dict()
    assert list(data) == method_arguments(name)  # defaults included
    assert type(config).from_dict(yaml.safe_load(yaml.safe_dump(data))) == config
    assert create_method(name, **data).config == config
    cls = METHODS.get(name).factory
    assert cls(config).config is config  # a method is built from its config or from keywords
    assert MethodSpec(name=name, args=method_example(name)).args == data  # what config.yaml records
    with pytest.raises(ConfigError, match="either"):
        cls(config, **method_example(name))


@pytest.mark.parametrize("name", METHOD_NAMES)
def test_runs_under_two_process_ddp(name, tmp_path, torchrun):
    proc = torchrun([str(WORKER), name, str(tmp_path)], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert r0["weights"].keys() == r1["weights"].keys()
    for key in r0["weights"]:  # parameters and BN statistics: the replicas end identical
        assert torch.equal(r0["weights"][key], r1["weights"][key]), key
    assert r0["state"] == r1["state"]
    assert r0["acc"] == r1["acc"]
