"""Command-line flags generated from a config dataclass's fields: one flag per field, help from the field.

A command that runs a stage builds that stage's config from flags made here, so a field added to
the config is a flag the day it lands, with its one-line help (`prunus.config.arg`), and a flag's
name is the field's name (`round_to` -> `--round-to`): nothing is renamed on the way. A field
the config renamed (`Config.RENAMED`) keeps its old flag for one release, hidden from --help:
`config_values` moves its value to the new field with one warning,
`prunus: warning: --macs-ratio is deprecated; use --keep-macs`.

Example:
    >>> import argparse
    >>> from prunus.pruning import PruneConfig
    >>> p = argparse.ArgumentParser()
    >>> dests = add_config_flags(p, PruneConfig, skip=("layer_ratios",))
    >>> sorted(config_values(p.parse_args(["--keep-macs", "0.5"]), dests).items())
    [('keep_macs', 0.5)]
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = [
    "SCALARS",
    "add_config_flags",
    "add_renamed_flags",
    "config_values",
    "flag_type",
    "float_or_word",
    "int_or_word",
]

SCALARS = (bool, int, float, str)
_UNIONS = (typing.Union, types.UnionType)


def flag_type(tp: Any) -> Any:
    """argparse `type` for a config field's annotation, or None when it has no flag form (dicts, ...)."""
    from collections.abc import Callable

    from prunus.cli._common import parse_str_list

    args = [a for a in typing.get_args(tp) if a is not type(None)] if typing.get_origin(tp) in _UNIONS else [tp]
    args = [a for a in args if typing.get_origin(a) is not Callable and a is not Callable]  # schedules: Python only
    if set(args) == {float, str}:  # a number or a keyword such as C-SGD's eps="auto"
        return float_or_word
    if set(args) == {int, str}:  # a count or a keyword such as round_to="auto"
        return int_or_word
    if len(args) != 1:
        return None
    (one,) = args
    if one in SCALARS:
        return one
    if typing.get_origin(one) is tuple and typing.get_args(one)[:1] == (str,):
        return parse_str_list
    return None


def int_or_word(text: str) -> int | str:
    """An int when `text` parses as one, else the word itself (the config validates which words are valid).

    Example:
        >>> int_or_word("16"), int_or_word("auto")
        (16, 'auto')
    """
    try:
        return int(text)
    except ValueError:
        return text


def float_or_word(text: str) -> float | str:
    """A float when `text` parses as one, else the word itself (the config validates which words are valid)."""
    try:
        return float(text)
    except ValueError:
        return text


def add_config_flags(
    parser: Any,
    config: type,
    *,
    skip: Sequence[str] = (),
    group: Any = None,
    exclusive: Sequence[str] = (),
    required_one: bool = False,
) -> list[str]:
    """Add `--<field>` for every scalar (or list-of-names) field of `config` not in `skip`; returns the dests.

    Flags default to None (not given), so the config's own default applies; booleans get
    `--x/--no-x`. Fields in `exclusive` go into one mutually exclusive group (`required_one`: one
    of them must be given).
    """
    hints = typing.get_type_hints(config)
    target = group if group is not None else parser
    mutex = target.add_mutually_exclusive_group(required=required_one) if exclusive else None
    added = []
    for f in dataclasses.fields(config):
        if f.name in skip or not f.init or f.name.startswith("_"):
            continue
        kind = flag_type(hints[f.name])
        if kind is None:
            continue
        where = mutex if f.name in exclusive else target
        flag = "--" + f.name.replace("_", "-")
        help_text = f.metadata.get("help", "")
        if f.default is not None and f.default is not dataclasses.MISSING and f.default != ():
            help_text += f" (default {f.default})"
        try:
            if kind is bool:
                where.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, help=help_text)
            else:
                metavar = None if kind in SCALARS or kind in (float_or_word, int_or_word) else "A,B"
                where.add_argument(flag, dest=f.name, type=kind, metavar=metavar, help=help_text)
        except argparse.ArgumentError:  # the name is taken by a command flag (--seed): --set KEY=VALUE only
            continue
        added.append(f.name)
    add_renamed_flags(parser, target, getattr(config, "RENAMED", {}), added)
    return added


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def add_renamed_flags(parser: Any, group: Any, renamed: Mapping[str, str], dests: Sequence[str]) -> None:
    """The old flag of each renamed field ({old: new}) whose new flag is in `dests`, hidden from --help.

    The old flag stores into `renamed_<old>` (same type as the new one), and the parser remembers
    the pair, so `config_values` can move the value and warn.
    """
    pairs = dict(parser.get_default("renamed_flags") or {})
    for old, new in renamed.items():
        if new not in dests:
            continue
        action = next(a for a in parser._actions if a.dest == new)
        kwargs: dict[str, Any] = {"dest": f"renamed_{old}", "help": argparse.SUPPRESS}
        if isinstance(action, argparse.BooleanOptionalAction):
            kwargs["action"] = argparse.BooleanOptionalAction
        else:
            kwargs.update(type=action.type, metavar=action.metavar)
        try:
            group.add_argument(_flag(old), **kwargs)
        except argparse.ArgumentError:  # the old name is another flag now: it keeps that meaning
            continue
        pairs[old] = new
    parser.set_defaults(renamed_flags=pairs)


def config_values(args: argparse.Namespace, dests: Sequence[str]) -> dict[str, Any]:
    """The values of the generated flags that were given (None = not given: left out).

    A deprecated flag (`add_renamed_flags`) gives its value to the new field, with a
    `PrunusDeprecationWarning` ("--macs-ratio is deprecated; use --keep-macs"); giving both the old
    and the new flag is a `ConfigError`.
    """
    from prunus.config import warn_renamed
    from prunus.errors import ConfigError

    values = {d: getattr(args, d) for d in dests if getattr(args, d, None) is not None}
    for old, new in (getattr(args, "renamed_flags", None) or {}).items():
        value = getattr(args, f"renamed_{old}", None)
        if value is None or new not in dests:
            continue
        if new in values:
            raise ConfigError(f"{_flag(old)} is the deprecated name of {_flag(new)}; give only {_flag(new)}")
        warn_renamed(_flag(old), _flag(new))
        values[new] = value
    return values
