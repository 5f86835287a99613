"""Placeholders for the torchvision names timm imports but prunus's tests never use."""

from __future__ import annotations


def unavailable(name: str) -> RuntimeError:
    return RuntimeError(f"torchvision.{name} is not available: this is prunus's test stand-in for torchvision")


def placeholder_class(module: str, name: str) -> type:
    """A class that can be named and subclassed (timm does both at import time) but not built."""

    def __init__(self, *args, **kwargs):
        raise unavailable(f"{module}.{name}")

    return type(name, (), {"__init__": __init__, "__module__": f"torchvision.{module}"})


def placeholder_function(module: str, name: str):
    def fn(*args, **kwargs):
        raise unavailable(f"{module}.{name}")

    fn.__name__ = name
    return fn
