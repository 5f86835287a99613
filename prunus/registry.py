"""One generic registry for models, datasets, criteria and methods.

Entries register themselves by decorator when their module is imported; factories build them
by name. Unknown names raise a `ConfigError` that lists the valid choices, so the CLI can pass
the message straight to the user.

Example:
    >>> reg = Registry("widget")
    >>> @reg.register("square", sides=4)
    ... def square(size=1):
    ...     return ("square", size)
    >>> reg.create("square", size=None)  # None kwargs are dropped: the default applies
    ('square', 1)
    >>> reg.get("square").meta["sides"]
    4
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from prunus.errors import ConfigError

__all__ = ["Registry", "RegistryEntry"]

T = TypeVar("T")


@dataclass(frozen=True)
class RegistryEntry(Generic[T]):
    """A registered factory plus the metadata given at registration."""

    name: str
    factory: Callable[..., T]
    meta: dict[str, Any] = field(default_factory=dict)


class Registry(Generic[T]):
    """Name -> factory map with decorator registration and helpful errors."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, RegistryEntry[T]] = {}

    def register(self, name: str | None = None, **meta: Any) -> Callable[[Callable[..., T]], Callable[..., T]]:
        """Decorator: register `fn` under `name` (default: its `__name__`) with metadata."""

        def decorator(fn: Callable[..., T]) -> Callable[..., T]:
            key = name or fn.__name__
            if key in self._entries:
                raise ValueError(f"{self.kind} {key!r} is registered twice")
            self._entries[key] = RegistryEntry(key, fn, dict(meta))
            return fn

        return decorator

    def get(self, name: str) -> RegistryEntry[T]:
        """The entry called `name`; raises `ConfigError` listing the valid names otherwise."""
        try:
            return self._entries[name]
        except KeyError:
            choices = ", ".join(self.list()) or "(none registered)"
            raise ConfigError(f"unknown {self.kind} {name!r}; choose one of: {choices}") from None

    def create(self, name: str, **kwargs: Any) -> T:
        """Build `name`, dropping kwargs that are None so the factory's defaults apply."""
        return self.get(name).factory(**{k: v for k, v in kwargs.items() if v is not None})

    def list(self, pattern: str = "*") -> list[str]:
        """Sorted names matching a shell-style `pattern` (e.g. ``"resnet*"``)."""
        return sorted(n for n in self._entries if fnmatch.fnmatchcase(n, pattern))

    def __iter__(self) -> Iterator[str]:
        """The registered names, sorted (as `list()`)."""
        return iter(self.list())

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __len__(self) -> int:
        return len(self._entries)
