"""One header checker for every file prunus writes: model.json, checkpoint.pt, .prn, stage records.

A header is a flat dict that starts with three fields, followed by the kind's own data:

    {"format": "<kind>", "format_version": <int>, "prunus_version": "<x.y.z>", ...data}

`make_header` writes them; `check_header` is the only way a header is read back. It refuses, with a
`FormatError` whose one-line message names the file, the field and what was expected:

- a kind that is not on the allow-list `KINDS` (or not the kind the caller expects),
- a `format_version` newer than the caller reads (a file from a newer prunus),
- a field of the wrong type (including bool where an int is expected: JSON `true` is not 1).

Only known kinds and plain JSON values are accepted: nothing in a header names code to run
(the torchao `config_from_dict` allow-list idea, without class names at all).

Example:
    >>> h = make_header("prunus-model", {"input_shape": [1, 28, 28]})
    >>> h["format"], h["format_version"], h["input_shape"]
    ('prunus-model', 1, [1, 28, 28])
    >>> check_header(h, "prunus-model", fields={"input_shape": list})["input_shape"]
    [1, 28, 28]
    >>> try:
    ...     check_header({**h, "format_version": 99}, "prunus-model", where="model.json")
    ... except FormatError as e:
    ...     print(e)
    model.json was written by a newer prunus (prunus-model version 99; this prunus reads up to 1)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from prunus._version import __version__
from prunus.errors import FormatError

__all__ = ["KINDS", "FormatError", "check_header", "make_header"]

#: the allow-list: every file kind prunus writes -> the newest version this prunus writes and reads
KINDS: dict[str, int] = {
    "prunus-model": 1,  # model.json of a model directory (prunus.formats.model_dir)
    "prunus-checkpoint": 1,  # checkpoint.pt of a run directory (prunus.engine.checkpoint)
    "prunus-prn": 2,  # header of a compressed .prn model (prunus.compress); 2: coding tables as varint tensors
    "prunus-stage": 1,  # stage.json, the completion record of a pipeline stage (prunus.pipeline.runner)
    "prunus-compress-checkpoint": 1,  # the DE search's per-cycle checkpoint (prunus.compress.checkpoint)
}

_TYPE_NAMES = {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "a list", dict: "a dict"}


def make_header(kind: str, data: Mapping[str, Any] | None = None, *, version: int | None = None) -> dict[str, Any]:
    """The header dict for a new file of `kind`: format, format_version, prunus_version, then `data`.

    Args:
        kind: A key of `KINDS`.
        data: The kind's own fields (JSON values); they must not reuse the three header names.
        version: The format version to write; default the newest, `KINDS[kind]`.

    Raises:
        ValueError: `kind` is not on the allow-list or `data` overrides a header field (bugs in
            prunus, not user errors).
    """
    if kind not in KINDS:
        raise ValueError(f"unknown file kind {kind!r}; known: {', '.join(sorted(KINDS))}")
    data = dict(data or {})
    clash = sorted({"format", "format_version", "prunus_version"} & set(data))
    if clash:
        raise ValueError(f"header data must not set {', '.join(clash)}")
    return {
        "format": kind,
        "format_version": KINDS[kind] if version is None else int(version),
        "prunus_version": __version__,
        **data,
    }


def _type_name(expected: type | tuple[type, ...]) -> str:
    types = expected if isinstance(expected, tuple) else (expected,)
    return " or ".join(_TYPE_NAMES.get(t, t.__name__) for t in types)


def _is(value: Any, expected: type | tuple[type, ...]) -> bool:
    types = expected if isinstance(expected, tuple) else (expected,)
    if isinstance(value, bool) and bool not in types:  # True is an int to Python, not to a file format
        return False
    if isinstance(value, int) and float in types:
        return True
    return isinstance(value, types)


def check_header(
    obj: Any,
    kind: str,
    *,
    max_version: int | None = None,
    fields: Mapping[str, type | tuple[type, ...]] | None = None,
    optional: Mapping[str, type | tuple[type, ...]] | None = None,
    where: str = "file",
) -> dict[str, Any]:
    """Validate a parsed header of `kind` and return it (as a dict).

    Args:
        obj: What was read (parsed JSON, or the dict from `torch.load`).
        kind: The kind the caller expects; must be a key of `KINDS`.
        max_version: Newest version the caller reads; default `KINDS[kind]`.
        fields: Required fields and their types (`dict`, `list`, `str`, `int`, `float`, ...).
        optional: Fields that may be missing (or null), checked when present.
        where: How to name the file in messages (usually its path).

    Raises:
        FormatError: not a dict, another or unknown kind, a version that is not a positive int or
            is newer than `max_version`, a missing required field, or a field of the wrong type.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown file kind {kind!r}; known: {', '.join(sorted(KINDS))}")
    if not isinstance(obj, Mapping):
        raise FormatError(f"{where} is not a prunus {kind} file (expected a header dict, got {type(obj).__name__})")
    found = obj.get("format")
    if found != kind:
        if isinstance(found, str) and found in KINDS:
            raise FormatError(f"{where} is a {found} file, not a {kind} file")
        shown = repr(found)[:60]
        raise FormatError(f"{where} is not a prunus {kind} file (format {shown}; known formats: {', '.join(KINDS)})")
    version = obj.get("format_version")
    if not _is(version, int) or version < 1:
        raise FormatError(f"{where}: format_version must be a positive integer, got {repr(version)[:60]}")
    newest = KINDS[kind] if max_version is None else max_version
    if version > newest:
        raise FormatError(
            f"{where} was written by a newer prunus ({kind} version {version}; this prunus reads up to {newest})"
        )
    # prunus_version is informative; files written before it was recorded lack it
    checks = [(name, t, True) for name, t in (fields or {}).items()]
    checks += [(name, t, False) for name, t in {"prunus_version": str, **(optional or {})}.items()]
    for name, expected, required in checks:
        value = obj.get(name)
        if value is None:
            if required:
                raise FormatError(f"{where} lacks the {name!r} field ({_type_name(expected)})")
            continue
        if not _is(value, expected):
            raise FormatError(
                f"{where}: field {name!r} must be {_type_name(expected)}, got {type(value).__name__} {repr(value)[:40]}"
            )
    return dict(obj)
