"""timm as a model source: `timm:NAME` wherever prunus takes a model name (optional extra `prunus[timm]`).

`create_model("timm:resnet18", num_classes=10, in_channels=3)` builds `timm.create_model("resnet18",
num_classes=10, in_chans=3)` with random initialisation and records on it (`ModelInfo`) how to
rebuild it, `arch = {"factory": "timm:create_model", "kwargs": {"model_name": "resnet18", ...}}`,
and the stem and classifier pruning keeps by default, taken from timm's own `pretrained_cfg`
(`first_conv`, `classifier`). `prunus.load` rebuilds such a model without a trust flag: the file
can only choose among timm's registered architectures and their constructor arguments, never a
path, a Hub repository or weights to fetch (those arguments are refused here, for files and
callers alike). prunus never fetches pretrained weights: a saved model must rebuild from its
model.json alone, offline, so `pretrained=True` is an error; load your weights into the model and
prune that.

Example:
    >>> from prunus.models import create_model  # doctest: +SKIP
    >>> m = create_model("timm:resnet18", num_classes=10, in_channels=3)  # doctest: +SKIP
    >>> get_info(m).arch["kwargs"]["model_name"], get_info(m).ignored  # doctest: +SKIP
    ('resnet18', ('conv1', 'fc'))
"""

from __future__ import annotations

import difflib
import fnmatch
from types import ModuleType
from typing import Any

from torch import nn

from prunus.errors import ConfigError, first_line
from prunus.models._layers import check_int
from prunus.models.info import ModelInfo, set_info

__all__ = [
    "TIMM_FACTORY",
    "TIMM_PREFIX",
    "arch_model_name",
    "check_timm_name",
    "create_from_record",
    "create_timm_model",
    "describe_timm_models",
    "import_timm",
    "is_timm_name",
    "list_timm_models",
    "timm_stem_classifier",
]

TIMM_PREFIX = "timm:"
#: the factory a saved timm model names in model.json (allow-listed by `prunus.formats.model_dir`)
TIMM_FACTORY = "timm:create_model"
INSTALL_HINT = "pip install prunus[timm]"
# timm.create_model arguments that read a file, a Hub repository or the network (weights or configs):
# a model file must rebuild from its own JSON and weights, offline, so none of them is accepted
_FETCHING = ("pretrained_cfg", "pretrained_cfg_overlay", "checkpoint_path", "cache_dir", "pretrained_model_args")


def is_timm_name(name: object) -> bool:
    """Whether `name` asks for a timm model (`timm:NAME`).

    Example:
        >>> is_timm_name("timm:resnet18"), is_timm_name("resnet20")
        (True, False)
    """
    return isinstance(name, str) and name.startswith(TIMM_PREFIX)


def import_timm() -> ModuleType:
    """The `timm` module; a one-line `ConfigError` naming the extra when it is missing or broken."""
    try:
        import timm
    except ModuleNotFoundError as exc:
        if exc.name != "timm":  # timm is there but one of its own imports is not (torchvision, ...)
            raise ConfigError(f"timm is installed but cannot be imported ({exc}); reinstall: {INSTALL_HINT}") from None
        raise ConfigError(f"timm models need the timm package: {INSTALL_HINT}") from None
    except (ImportError, OSError) as exc:  # e.g. a torchvision built for another torch
        first = first_line(exc)
        raise ConfigError(f"timm cannot be imported ({first}); reinstall it with {INSTALL_HINT}") from None
    return timm


def check_timm_name(name: str) -> str:
    """The timm architecture name in `name` (`timm:NAME` or NAME), checked against timm's registry.

    Raises:
        ConfigError: timm is missing, or NAME is not one of `timm.list_models()` (close matches are
            suggested); names with a source prefix (`hf-hub:`, `local-dir:`) are refused too, since
            they read configurations from elsewhere.
    """
    bare = name[len(TIMM_PREFIX) :] if is_timm_name(name) else name
    timm = import_timm()
    if not isinstance(bare, str) or not bare or ":" in bare or "/" in bare or not timm.is_model(bare):
        close = difflib.get_close_matches(str(bare), timm.list_models(), n=3)
        hint = f"; did you mean {', '.join(TIMM_PREFIX + c for c in close)}?" if close else ""
        raise ConfigError(f"unknown timm model {bare!r}{hint} (list them with: prunus models --source timm 'PATTERN')")
    return bare


def list_timm_models(pattern: str = "*") -> list[str]:
    """`timm:NAME` for every timm architecture whose NAME (or `timm:NAME`) matches the shell-style pattern.

    Example:
        >>> list_timm_models("resnet1?")  # doctest: +SKIP
        ['timm:resnet10t', 'timm:resnet14t', 'timm:resnet18', 'timm:resnet18d', 'timm:resnet18s']
    """
    timm = import_timm()
    bare = pattern[len(TIMM_PREFIX) :] if is_timm_name(pattern) else pattern
    return [TIMM_PREFIX + n for n in timm.list_models() if fnmatch.fnmatchcase(n, bare)]


def arch_model_name(arch: Any) -> str | None:
    """The model name an `arch` record was built from: its registry name, `timm:NAME`, or None (a user factory).

    Example:
        >>> arch_model_name({"factory": "timm:create_model", "kwargs": {"model_name": "resnet18"}})
        'timm:resnet18'
        >>> arch_model_name({"name": "resnet20", "kwargs": {}}), arch_model_name({"factory": "m:f"})
        ('resnet20', None)
    """
    arch = dict(arch or {})
    if isinstance(arch.get("name"), str):
        return arch["name"]
    if arch.get("factory") == TIMM_FACTORY and isinstance((arch.get("kwargs") or {}).get("model_name"), str):
        return TIMM_PREFIX + arch["kwargs"]["model_name"]
    return None


def describe_timm_models(pattern: str = "*") -> list[tuple[str, str, str, tuple[int, ...]]]:
    """(`timm:NAME`, stem, classifier, default input size) of the matching timm models, from their
    default `pretrained_cfg` (nothing is built: a listing of all of them takes a fraction of a second).
    """
    names = list_timm_models(pattern)  # first: a missing timm is one line naming the extra
    from timm.models import get_pretrained_cfg

    rows = []
    for name in names:
        cfg = get_pretrained_cfg(name[len(TIMM_PREFIX) :])

        def first(value: Any) -> str:
            return value if isinstance(value, str) else ", ".join(map(str, value or ())) or "-"

        rows.append((name, first(getattr(cfg, "first_conv", None)), first(getattr(cfg, "classifier", None)),
                     tuple(getattr(cfg, "input_size", None) or ())))  # fmt: skip
    return rows


def _first_module(model: nn.Module, names: Any) -> str | None:
    """The first of `names` (a str or a sequence of them) that is a submodule of `model`."""
    for name in [names] if isinstance(names, str) else list(names or ()):
        if isinstance(name, str) and name:
            try:
                model.get_submodule(name)
            except AttributeError:
                continue
            return name
    return None


def timm_stem_classifier(model: nn.Module) -> tuple[str | None, str | None]:
    """The stem conv and the classifier of a timm model, as its `pretrained_cfg` names them.

    Where timm names none (or a module the model does not have), the same fallback as for any user
    model: the first Conv2d and the last Linear (`prunus.structure` does that for undeclared models).
    """
    cfg = getattr(model, "pretrained_cfg", None) or {}
    stem = _first_module(model, cfg.get("first_conv"))
    classifier = _first_module(model, cfg.get("classifier"))
    if stem is None:
        stem = next((n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)), None)
    if classifier is None:
        classifier = next((n for n, m in reversed(list(model.named_modules())) if isinstance(m, nn.Linear)), None)
    return stem, classifier


def create_from_record(model_name: str = "", **kwargs: Any) -> nn.Module:
    """Build the model a model.json's `{"factory": "timm:create_model", "kwargs": {...}}` describes.

    The kwargs are `timm.create_model`'s (`in_chans`, not `in_channels`), as `create_timm_model`
    records them. Arguments that would fetch or read weights or configurations are refused.
    """
    bare = check_timm_name(model_name)
    if kwargs.get("pretrained"):
        raise ConfigError(
            f"timm:{bare}: pretrained=True is not supported: prunus builds timm models with random "
            "initialisation and never fetches weights (a saved model rebuilds offline); load your weights "
            "into the model (model.load_state_dict) and prune that"
        )
    fetching = sorted(k for k in _FETCHING if kwargs.get(k) is not None)
    if fetching:
        raise ConfigError(
            f"timm:{bare}: argument(s) {', '.join(fetching)} read weights or configurations from elsewhere; "
            "prunus builds timm models from their architecture only"
        )
    kwargs.pop("pretrained", None)
    timm = import_timm()
    try:
        model = timm.create_model(bare, **kwargs)
    except (TypeError, ValueError, AssertionError, KeyError, RuntimeError) as exc:
        first = first_line(exc)
        raise ConfigError(f"timm:{bare} cannot be built with {kwargs}: {first[:200]}") from None
    stem, classifier = timm_stem_classifier(model)
    arch = {"factory": TIMM_FACTORY, "kwargs": {"model_name": bare, **kwargs}}
    set_info(model, ModelInfo(arch=arch, stem=stem, classifier=classifier))
    return model


def create_timm_model(name: str, **kwargs: Any) -> nn.Module:
    """Build `timm:NAME` with prunus's argument names; what `prunus.create_model("timm:NAME", ...)` does.

    Args:
        name: `timm:NAME` (or NAME), NAME one of `timm.list_models()`.
        **kwargs: `num_classes` (>= 0; 0 = no classifier, as in timm), `in_channels` (timm's
            `in_chans`), `width_mult` (only 1.0: timm's width options are per family, e.g.
            `channel_multiplier` for EfficientNets; pass those by their timm name), and any other
            argument of the timm model. None values are dropped (the model's default applies).

    Raises:
        ConfigError: timm missing, unknown name, `pretrained=True`, a fetching argument, an
            argument the model rejects.
    """
    given = {k: v for k, v in kwargs.items() if v is not None}
    bare = check_timm_name(name)
    width = given.pop("width_mult", 1.0)
    if width != 1.0:
        raise ConfigError(
            f"timm:{bare} takes no width_mult (got {width!r}); pass the family's own width argument by its timm "
            "name, e.g. model kwargs {channel_multiplier: 0.5} for EfficientNets"
        )
    if "in_channels" in given:
        if "in_chans" in given:
            raise ConfigError(f"timm:{bare}: give in_channels or in_chans, not both")
        given["in_chans"] = given.pop("in_channels")
    if "num_classes" in given:
        check_int("num_classes", given["num_classes"], low=0)
    if "in_chans" in given:
        check_int("in_channels", given["in_chans"], low=1)
    if given.get("pretrained") is False:
        given.pop("pretrained")  # the default: not recorded
    return create_from_record(bare, **given)
