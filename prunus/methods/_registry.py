"""Registry of training Method plug-ins (`sfp`, `fpgm`, `mfp`, `csgd`, ...), each with its config dataclass.

A method registers its class together with its config (a frozen `prunus.config.Config` whose
fields are the method's arguments, validated in `__post_init__`) and small valid example
arguments (what the contract tests in tests/methods/test_contract.py build it with):

    @register_method("sfp", config=SFPConfig, example={"rate": 0.5})
    class SoftFilterPruning(Method): ...

`create_method(name, **kwargs)` checks the keyword names against the config's fields, so a typo
in a recipe or `--set key=value` fails with the list of accepted arguments instead of a bare
TypeError; `method_config(name, **kwargs)` gives the resolved config (defaults included) without
building the method, which is what a run records in its config.yaml.

Example:
    >>> import prunus.methods  # registers the built-in methods
    >>> method_config("sfp", rate=0.5).to_dict()["criterion"]
    'l2'
    >>> create_method("sfp", rat=0.5)
    Traceback (most recent call last):
    ...
    prunus.errors.ConfigError: method 'sfp' has no argument(s) rat; accepted: rate, interval, hard, ...
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from prunus.config import Config, arg
from prunus.config import build_config as _build_config
from prunus.engine.method import Method
from prunus.registry import Registry

__all__ = [
    "METHODS",
    "arg",
    "build_config",
    "create_method",
    "list_methods",
    "method_arguments",
    "method_config",
    "method_example",
    "register_method",
]

METHODS: Registry[Method] = Registry("method")

C = TypeVar("C", bound=Config)


def register_method(
    name: str, *, config: type[Config], example: Mapping[str, Any] | None = None, **meta: Any
) -> Callable[[type[Method]], type[Method]]:
    """Class decorator: register a Method subclass under `name` with its config class.

    Sets `cls.name` and `cls.config_class`. `example`: small valid arguments (default: none, i.e.
    the config's defaults) that build a quick instance for the contract tests.
    """
    if not (isinstance(config, type) and issubclass(config, Config)):
        raise TypeError(f"register_method({name!r}): config must be a Config dataclass, got {config!r}")

    def decorator(cls: type[Method]) -> type[Method]:
        cls.name = name
        cls.config_class = config  # type: ignore[attr-defined]
        METHODS.register(name, config=config, example=dict(example or {}), **meta)(cls)
        return cls

    return decorator


def build_config(config_class: type[C], config: C | None, kwargs: Mapping[str, Any], owner: str) -> C:
    """`prunus.config.build_config`, with the accepted names in the order users read them (own fields first)."""
    return _build_config(config_class, config, kwargs, owner, _field_names(config_class))


def _field_names(config_class: type[Config]) -> list[str]:
    """A config's argument names, its own first and the budget fields it inherits last (how users read them)."""
    from prunus.pruning import PruneBudget

    names = [f.name for f in dataclasses.fields(config_class) if f.init]
    budget = {f.name for f in dataclasses.fields(PruneBudget)} if issubclass(config_class, PruneBudget) else set()
    return [n for n in names if n not in budget] + [n for n in names if n in budget]


def _config_class(name: str) -> type[Config]:
    return METHODS.get(name).meta["config"]


def method_arguments(name: str) -> list[str]:
    """Keyword arguments accepted by method `name` (its config's fields, in declaration order)."""
    return _field_names(_config_class(name))


def method_config(name: str, **kwargs: Any) -> Config:
    """The resolved, validated config of method `name` for `kwargs` (defaults filled in)."""
    return build_config(_config_class(name), None, kwargs, f"method {name!r}")


def method_example(name: str) -> dict[str, Any]:
    """Small valid arguments registered with method `name` (for tests and demos)."""
    return dict(METHODS.get(name).meta["example"])


def create_method(name: str, **kwargs: Any) -> Method:
    """Build a registered method; unknown arguments raise `ConfigError` listing the valid ones.

    Example:
        >>> list_methods()  # doctest: +SKIP
        ['csgd', 'fpgm', 'mfp', 'sfp']
    """
    entry = METHODS.get(name)
    return entry.factory(method_config(name, **kwargs))


def list_methods(pattern: str = "*") -> list[str]:
    """Registered method names matching `pattern`."""
    return METHODS.list(pattern)
