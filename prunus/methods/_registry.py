"""Registry of training Method plug-ins (`sfp`, `fpgm`, `mfp`, `csgd`, ...).

A method registers its class; `create_method(name, **kwargs)` validates the keyword arguments
against the class's constructor so a typo in a recipe or `--set key=value` fails with the list of
accepted arguments instead of a bare TypeError.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from prunus.engine.method import Method
from prunus.errors import ConfigError
from prunus.registry import Registry

__all__ = ["METHODS", "create_method", "list_methods", "method_arguments", "register_method"]

METHODS: Registry[Method] = Registry("method")


def register_method(name: str, **meta: Any) -> Callable[[type[Method]], type[Method]]:
    """Class decorator: register a Method subclass under `name` (also sets `cls.name`)."""

    def decorator(cls: type[Method]) -> type[Method]:
        cls.name = name
        METHODS.register(name, **meta)(cls)
        return cls

    return decorator


def method_arguments(name: str) -> list[str]:
    """Keyword arguments accepted by method `name`'s constructor."""
    sig = inspect.signature(METHODS.get(name).factory)
    return [p.name for p in sig.parameters.values() if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)]


def create_method(name: str, **kwargs: Any) -> Method:
    """Build a registered method; unknown arguments raise `ConfigError` listing the valid ones.

    Example:
        >>> list_methods()  # doctest: +SKIP
        ['csgd', 'fpgm', 'mfp', 'sfp']
    """
    accepted = method_arguments(name)
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        raise ConfigError(f"method {name!r} has no argument(s) {', '.join(unknown)}; accepted: {', '.join(accepted)}")
    return METHODS.create(name, **kwargs)


def list_methods(pattern: str = "*") -> list[str]:
    """Registered method names matching `pattern`."""
    return METHODS.list(pattern)
