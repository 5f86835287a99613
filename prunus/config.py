"""Configuration as data: frozen dataclasses, validated at construction, dict/YAML round trip.

Every config class derives from `Config`. Validation lives in `__post_init__` and raises
`ConfigError` naming the field and the valid range or choices. `from_dict` rejects unknown keys
(a typo in a recipe must not be silently ignored). Precedence is applied by `merge`:
code defaults < recipe YAML < command-line flags.

Example:
    >>> from dataclasses import dataclass
    >>> @dataclass(frozen=True)
    ... class Demo(Config):
    ...     lr: float = 0.1
    ...     def __post_init__(self):
    ...         check_range("lr", self.lr, low=0.0, low_inclusive=False)
    >>> Demo.from_dict({"lr": 0.5}).lr
    0.5
    >>> Demo().merge({"lr": None}).lr  # None means "not given": the current value stays
    0.1
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys
import types
import typing
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import yaml

from prunus.errors import ConfigError

__all__ = [
    "Config",
    "arg",
    "build_config",
    "check_choice",
    "check_finite",
    "check_finite_values",
    "check_range",
    "load_yaml",
    "renamed_fields",
    "warn_renamed",
]

C = TypeVar("C", bound="Config")

#: The most any config, recipe or --set may ask for, stated once (the README's promise section lists
#: them). A count beyond these is a typo or an attack: it would run until killed or fail allocating
#: memory half way, so it is refused with one line before anything runs.
BOUNDS: dict[str, int] = {
    "epochs": 100_000,  # training epochs of one run or stage
    "steps": 10_000_000,  # optimizer steps of a fine-tune (compress finetune_steps, codebook_steps)
    "seeds": 1_000,  # seeds in one recipe
    "seed": 2**31 - 1,  # any one seed
    "samples": 10_000_000,  # images a data config may ask for (synthetic num_samples, subsets, calibration)
    "image_size": 4_096,  # side of a generated or resized image
    "channels": 4_096,  # channels of a generated image
    "classes": 100_000,  # classes of a generated dataset
    "batch": 65_536,  # any batch size: training, evaluation, latency, bench
    "population": 4_096,  # DE candidate sets per generation
    "generations": 10_000,  # DE generations per cycle, and cycles
    "networks": 256,  # networks of a population run
    "rounds": 1_000,  # C-SGD rounds
    "repeats": 100_000,  # timed calls of a benchmark
    "threads": 1_024,  # torch / runtime threads
}


def check_choice(field: str, value: Any, choices: Iterable[Any]) -> None:
    """Raise `ConfigError` unless `value` is one of `choices`."""
    choices = list(choices)
    if value not in choices:
        raise ConfigError(f"{field}={value!r} is not valid; choose one of: {', '.join(map(str, choices))}")


def check_finite(field: str, value: Any) -> None:
    """Raise `ConfigError` unless `value` is a real, finite number (not a bool, NaN or +-inf).

    Every range check goes through here first: NaN compares False with everything, so without
    it `lr=nan` would pass `lr > 0` and a whole run would silently produce NaN.

    Example:
        >>> check_finite("lr", float("nan"))
        Traceback (most recent call last):
        ...
        prunus.errors.ConfigError: lr must be a finite number, got nan
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{field} must be a number, got {value!r}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{field} must be a finite number, got {value!r}")


def check_finite_values(field: str, value: Any) -> None:
    """`check_finite` on every float inside `value` (nested lists/dicts, e.g. method arguments)."""
    if isinstance(value, float):
        check_finite(field, value)
    elif isinstance(value, Mapping):
        for k, v in value.items():
            check_finite_values(f"{field}.{k}", v)
    elif isinstance(value, (list, tuple)):
        for v in value:
            check_finite_values(field, v)


def check_range(
    field: str,
    value: float,
    low: float | None = None,
    high: float | None = None,
    *,
    low_inclusive: bool = True,
    high_inclusive: bool = True,
) -> None:
    """Raise `ConfigError` unless `value` is finite and `low <= value <= high` (bounds optional)."""
    check_finite(field, value)
    bad_low = low is not None and (value < low if low_inclusive else value <= low)
    bad_high = high is not None and (value > high if high_inclusive else value >= high)
    if bad_low or bad_high:
        lo = "(-inf" if low is None else ("[" if low_inclusive else "(") + f"{low}"
        hi = "inf)" if high is None else f"{high}" + ("]" if high_inclusive else ")")
        raise ConfigError(f"{field}={value!r} is out of range; expected a value in {lo}, {hi}")


def load_yaml(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a YAML mapping with `yaml.safe_load` (never the unsafe loader)."""
    from prunus._io.safe import MAX_CONFIG_BYTES, read_text

    path = Path(path)
    if not path.exists() and not path.is_symlink():
        raise ConfigError(f"config file not found: {path}")
    text = read_text(path, MAX_CONFIG_BYTES, "config file")
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}".splitlines()[0]) from None
    except RecursionError:
        raise ConfigError(f"config file {path} is nested too deeply") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must contain a mapping at the top level")
    return data


def _coerce(cls_name: str, name: str, tp: Any, value: Any) -> Any:
    """Convert YAML/JSON values to the annotated type where that is unambiguous."""
    if value is None:
        return None
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        non_none = [a for a in args if a is not type(None)]
        for candidate in non_none:  # first type that accepts the value wins
            try:
                return _coerce(cls_name, name, candidate, value)
            except ConfigError:
                continue
        raise ConfigError(f"{cls_name}.{name}: cannot interpret {value!r} as {tp}")
    if isinstance(tp, type) and issubclass(tp, Config):
        if isinstance(value, tp):
            return value
        if not isinstance(value, Mapping):
            raise ConfigError(f"{cls_name}.{name} must be a mapping, got {value!r}")
        return tp.from_dict(value)
    if origin in (tuple, list):
        if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
            raise ConfigError(f"{cls_name}.{name} must be a list, got {value!r}")
        inner = args[0] if args else Any
        items = [_coerce(cls_name, name, inner, v) for v in value]
        return tuple(items) if origin is tuple else items
    if tp is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        check_finite(f"{cls_name}.{name}", value)  # a float field never holds NaN or inf
        return float(value)
    if tp is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if tp is int and isinstance(value, float) and value.is_integer():
        return int(value)
    if tp in (int, float):
        raise ConfigError(f"{cls_name}.{name} must be a number, got {value!r}")
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{cls_name}.{name} must be true or false, got {value!r}")
    if tp is str:
        if isinstance(value, (str, Path)):
            return str(value)
        raise ConfigError(f"{cls_name}.{name} must be a string, got {value!r}")
    return value


_PACKAGE = os.path.dirname(os.path.abspath(__file__)) + os.sep


def warn_renamed(old: str, new: str) -> None:
    """One `PrunusDeprecationWarning`, "OLD is deprecated; use NEW", attributed to the first caller outside prunus.

    Example:
        >>> import warnings
        >>> with warnings.catch_warnings(record=True) as caught:
        ...     warnings.simplefilter("always")
        ...     warn_renamed("macs_ratio", "keep_macs")
        >>> str(caught[0].message)
        'macs_ratio is deprecated; use keep_macs'
    """
    from prunus.errors import PrunusDeprecationWarning

    # the user's line, however deep in prunus the old name was read (a keyword, a recipe, a flag);
    # a dataclass's generated __init__ ("<string>") is prunus's too
    frame, level = sys._getframe(1), 2
    while frame.f_back is not None and (
        frame.f_code.co_filename.startswith(_PACKAGE)
        or (frame.f_code.co_filename == "<string>" and frame.f_code.co_name == "__init__")
    ):
        frame, level = frame.f_back, level + 1
    warnings.warn(f"{old} is deprecated; use {new}", PrunusDeprecationWarning, stacklevel=level)


def renamed_fields(renamed: Mapping[str, str], data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """`data` with every deprecated key of `renamed` ({old: new}) moved to its new name.

    An old name with a value warns once (`warn_renamed`); an old name holding None (a resolved
    config written before the rename: "not given") is dropped without a word. `prefix` is how
    messages name the fields ("prune.").

    Raises:
        ConfigError: both the old and the new name given (which one should win is not obvious).

    Example:
        >>> renamed_fields({"macs_ratio": "keep_macs"}, {"macs_ratio": None, "round_to": 8})
        {'round_to': 8}
        >>> renamed_fields({"macs_ratio": "keep_macs"}, {"macs_ratio": 0.5, "keep_macs": 0.4})  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        prunus.errors.ConfigError: macs_ratio and keep_macs name the same value (...); give only keep_macs
    """
    if not renamed or not any(old in data for old in renamed):
        return dict(data)
    out = dict(data)
    for old, new in renamed.items():
        if old not in out:
            continue
        value = out.pop(old)
        if value is None:
            continue
        if out.get(new) is not None:
            raise ConfigError(
                f"{prefix}{old} and {prefix}{new} name the same value ({prefix}{old} is the deprecated name of "
                f"{prefix}{new}); give only {prefix}{new}"
            )
        warn_renamed(f"{prefix}{old}", f"{prefix}{new}")
        out[new] = value
    return out


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


class _Renaming(type):
    """Metaclass of `Config`: keyword arguments under a deprecated name (`Config.RENAMED`) reach the new field."""

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        renamed = getattr(cls, "RENAMED", None)
        if renamed and kwargs:
            kwargs = renamed_fields(renamed, kwargs)
        return super().__call__(*args, **kwargs)


@dataclasses.dataclass(frozen=True)
class Config(metaclass=_Renaming):
    """Base of every prunus config dataclass (frozen; validated in `__post_init__`).

    `RENAMED` ({old name: field}) lists fields that were renamed: the old names still work for
    one release, everywhere a config is built (keywords, `from_dict`, `merge`, `build_config`),
    with one `PrunusDeprecationWarning` naming the new field; giving both is a `ConfigError`.
    """

    RENAMED: ClassVar[Mapping[str, str]] = {}

    @classmethod
    def from_dict(cls: type[C], data: Mapping[str, Any]) -> C:
        """Build from a mapping; unknown keys raise `ConfigError` listing the known ones (old names: `RENAMED`)."""
        data = renamed_fields(cls.RENAMED, data)
        hints = typing.get_type_hints(cls)
        known = {f.name for f in dataclasses.fields(cls) if f.init}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(
                f"unknown {cls.__name__} field(s): {', '.join(unknown)}; known fields: {', '.join(sorted(known))}"
            )
        kwargs = {k: _coerce(cls.__name__, k, hints[k], v) for k, v in data.items()}
        return cls(**kwargs)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON/YAML-ready dict (tuples become lists, nested configs become dicts)."""

        def plain(v: Any) -> Any:
            if isinstance(v, Config):
                return v.to_dict()
            if isinstance(v, (list, tuple)):
                return [plain(x) for x in v]
            if isinstance(v, dict):
                return {k: plain(x) for k, x in v.items()}
            return v

        return {f.name: plain(getattr(self, f.name)) for f in dataclasses.fields(self) if f.init}

    def merge(self: C, overrides: Mapping[str, Any]) -> C:
        """A copy with `overrides` applied; keys whose value is None are ignored."""
        given = {k: v for k, v in renamed_fields(self.RENAMED, overrides).items() if v is not None}
        if not given:
            return self
        data = self.to_dict()
        for k, v in given.items():
            current = getattr(self, k, None)
            if isinstance(current, Config) and isinstance(v, Mapping):
                data[k] = current.merge(v).to_dict()
            else:
                data[k] = v
        return type(self).from_dict(data)


def build_config(
    config_class: type[C],
    config: C | None,
    kwargs: Mapping[str, Any],
    owner: str,
    accepted: Iterable[str] | None = None,
) -> C:
    """`config` as given, or `config_class(**kwargs)` (None values dropped: the default applies).

    The one rule for "a config value, or its fields as keywords" at a public entry point: unknown
    keyword names raise `ConfigError` listing `accepted` (default: the init fields, in order), and
    giving both a config and keywords is refused (which one would win is not obvious).

    Example:
        >>> @dataclasses.dataclass(frozen=True)
        ... class Demo(Config):
        ...     lr: float = 0.1
        >>> build_config(Demo, None, {"lr": 0.5, "x": None}, "demo")
        Traceback (most recent call last):
        ...
        prunus.errors.ConfigError: demo has no argument(s) x; accepted: lr
    """
    if config is not None:
        if kwargs:
            raise ConfigError(f"{owner}: pass either a {config_class.__name__} or keyword arguments, not both")
        if not isinstance(config, config_class):
            raise ConfigError(f"{owner}: expected a {config_class.__name__}, got {type(config).__name__}")
        return config
    kwargs = renamed_fields(config_class.RENAMED, kwargs)
    names = list(accepted) if accepted is not None else [f.name for f in dataclasses.fields(config_class) if f.init]
    unknown = sorted(set(kwargs) - set(names))
    if unknown:
        raise ConfigError(f"{owner} has no argument(s) {', '.join(unknown)}; accepted: {', '.join(names)}")
    return config_class(**{k: v for k, v in kwargs.items() if v is not None})


def check_count(field: str, value: Any, low: int, bound: str, *, optional: bool = False) -> int | None:
    """`value` as an int in [low, BOUNDS[bound]] (None allowed when `optional`); `ConfigError` otherwise.

    Example:
        >>> check_count("epochs", 10, 1, "epochs")
        10
        >>> check_count("epochs", 10**20, 1, "epochs")
        Traceback (most recent call last):
        ...
        prunus.errors.ConfigError: epochs=100000000000000000000 is not valid; expected an integer from 1 to 100000
    """
    if optional and value is None:
        return None
    high = BOUNDS[bound]
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        none = " or null" if optional else ""
        raise ConfigError(f"{field}={value!r} is not valid; expected an integer from {low} to {high}{none}")
    return value
