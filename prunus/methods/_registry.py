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

from prunus.config import Config
from prunus.engine.method import Method
from prunus.errors import ConfigError
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


def arg(default: Any, help: str) -> Any:
    """A config field with its one-line help (shown by `prunus train --help` for the generated flag).

    Example:
        >>> import dataclasses
        >>> @dataclasses.dataclass(frozen=True)
        ... class Demo(Config):
        ...     rate: float = arg(0.4, "fraction of channels masked")
        >>> dataclasses.fields(Demo)[0].metadata["help"]
        'fraction of channels masked'
    """
    return dataclasses.field(default=default, metadata={"help": help})


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
    """`config` as given, or `config_class(**kwargs)` (None values dropped: the default applies).

    Unknown keyword names raise `ConfigError` listing the accepted ones; giving both a config
    and keywords is refused (which one would win is not obvious).
    """
    if config is not None:
        if kwargs:
            raise ConfigError(f"{owner}: pass either a {config_class.__name__} or keyword arguments, not both")
        if not isinstance(config, config_class):
            raise ConfigError(f"{owner}: expected a {config_class.__name__}, got {type(config).__name__}")
        return config
    accepted = [f.name for f in dataclasses.fields(config_class) if f.init]
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        raise ConfigError(f"{owner} has no argument(s) {', '.join(unknown)}; accepted: {', '.join(accepted)}")
    return config_class(**{k: v for k, v in kwargs.items() if v is not None})


def _config_class(name: str) -> type[Config]:
    return METHODS.get(name).meta["config"]


def method_arguments(name: str) -> list[str]:
    """Keyword arguments accepted by method `name` (its config's fields, in declaration order)."""
    return [f.name for f in dataclasses.fields(_config_class(name)) if f.init]


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
