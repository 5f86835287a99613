"""The model registry: `register_model`, `create_model`, `list_models`, `get_model_entry`.

A model family registers each factory with the dotted names of its stem conv and its classifier,
the two layers whose output channels pruning leaves alone by default. `create_model` validates the
common arguments, fills in the factory's defaults and records on the model exactly what is needed
to rebuild the dense architecture (`get_info(model).arch`), which `prunus.save` writes to model.json.

Example:
    >>> import prunus.models as pm
    >>> from prunus.models.info import get_info
    >>> model = pm.create_model("resnet20", num_classes=10, in_channels=1)
    >>> get_info(model).arch["kwargs"]["shortcut"]
    'B'
    >>> get_info(model).ignored
    ('conv1', 'fc')
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from torch import nn

from prunus.config import check_range
from prunus.errors import ConfigError
from prunus.models._layers import check_int
from prunus.models.info import ModelInfo, set_info
from prunus.models.timm_models import check_timm_name, create_timm_model, is_timm_name
from prunus.registry import Registry, RegistryEntry

__all__ = ["MODELS", "check_model_name", "create_model", "get_model_entry", "list_models", "register_model"]

MODELS: Registry[nn.Module] = Registry("model")

ModelFactory = Callable[..., nn.Module]


def register_model(name: str | None = None, *, stem: str, classifier: str) -> Callable[[ModelFactory], ModelFactory]:
    """Decorator registering a model factory under `name` (default: the function's name).

    Args:
        name: Registry name; defaults to the factory's `__name__`.
        stem: Dotted module name of the first layer (a Conv2d, or the first Linear of an MLP).
        classifier: Dotted module name of the final Linear layer.

    The factory must accept `num_classes`, `in_channels` and `width_mult`; family-specific options
    are further named arguments. Every argument needs a default and `*args`/`**kwargs` are not
    allowed, so that the model's `ModelInfo.arch` records every value needed to rebuild the model.

    Example:
        >>> @register_model("tiny_demo", stem="conv", classifier="fc")  # doctest: +SKIP
        ... def tiny_demo(num_classes=10, in_channels=3, width_mult=1.0): ...
    """

    def decorator(fn: ModelFactory) -> ModelFactory:
        params = inspect.signature(fn).parameters
        missing = [p for p in ("num_classes", "in_channels", "width_mult") if p not in params]
        if missing:  # a programming error in a model family, not a user error
            raise TypeError(f"model factory {fn.__name__} lacks argument(s): {', '.join(missing)}")
        # ModelInfo.arch must list every argument by name, so *args/**kwargs and required arguments are not allowed.
        if any(p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) or p.default is p.empty for p in params.values()):
            raise TypeError(f"model factory {fn.__name__} must take only named arguments with defaults")
        summary = (inspect.getdoc(fn) or "").split("\n", 1)[0]
        return MODELS.register(name, stem=stem, classifier=classifier, summary=summary)(fn)

    return decorator


def get_model_entry(name: str) -> RegistryEntry[nn.Module]:
    """The registry entry of `name` (factory plus `meta` with stem, classifier and summary).

    Raises:
        ConfigError: `name` is not registered; the message lists the registered models.
    """
    try:
        return MODELS.get(name)
    except ConfigError as exc:
        raise ConfigError(f"{exc} (or timm:NAME for a timm model)") from None


def check_model_name(name: str) -> str:
    """`name` itself when `create_model` can build it (a registry model, or `timm:NAME` with timm installed).

    Raises:
        ConfigError: unknown registry name (listing them), unknown timm name, timm missing.

    Example:
        >>> check_model_name("resnet20")
        'resnet20'
    """
    if is_timm_name(name):
        check_timm_name(name)
    else:
        get_model_entry(name)
    return name


def list_models(pattern: str = "*") -> list[str]:
    """Sorted names of registered models matching a shell-style pattern, e.g. ``"resnet*"``."""
    return MODELS.list(pattern)


def create_model(name: str, **kwargs: Any) -> nn.Module:
    """Build a registered model by name.

    Keyword arguments that are None are dropped so the factory's defaults apply (flags the user
    did not give arrive as None from the CLI).

    Args:
        name: A name from `list_models()`, or `timm:NAME` for a timm model (the `prunus[timm]`
            extra; see `prunus.models.timm_models.create_timm_model`).
        **kwargs: `num_classes` (>= 2), `in_channels` (>= 1), `width_mult` (> 0) and the family's
            own options (e.g. `shortcut="A"` for ResNets, `input_size=28` for LeNets).

    Returns:
        The model, carrying a `prunus.models.info.ModelInfo` with `arch = {"name": name, "kwargs":
        {...every argument value used, defaults included}}`, `stem` and `classifier`.

    Raises:
        ConfigError: Unknown model name, unknown argument or a value out of range.

    Example:
        >>> m = create_model("lenet5", num_classes=10, in_channels=1)
        >>> sum(p.numel() for p in m.parameters())
        61706
    """
    if is_timm_name(name):
        return create_timm_model(name, **kwargs)
    entry = get_model_entry(name)
    given = {k: v for k, v in kwargs.items() if v is not None}
    signature = inspect.signature(entry.factory)
    try:
        bound = signature.bind(**given)
    except TypeError:
        accepted = ", ".join(p for p in signature.parameters if p not in ("args", "kwargs"))
        unknown = ", ".join(sorted(set(given) - set(signature.parameters)))
        raise ConfigError(f"model {name!r} got unknown argument(s): {unknown}; accepted: {accepted}") from None
    bound.apply_defaults()
    resolved = dict(bound.arguments)
    check_int("num_classes", resolved["num_classes"], low=2)
    check_int("in_channels", resolved["in_channels"], low=1)
    check_range("width_mult", resolved["width_mult"], low=0.0, low_inclusive=False)
    resolved["width_mult"] = float(resolved["width_mult"])  # 1 and 1.0 must give the same model.json

    model = entry.factory(**resolved)
    stem, classifier = entry.meta["stem"], entry.meta["classifier"]
    for role, dotted in (("stem", stem), ("classifier", classifier)):
        try:
            model.get_submodule(dotted)
        except AttributeError:  # a wrong registration is a bug in prunus, not a user error
            raise RuntimeError(f"model {name!r} registers {role}={dotted!r}, which is not a submodule") from None
    set_info(model, ModelInfo(arch={"name": name, "kwargs": resolved}, stem=stem, classifier=classifier))
    return model
