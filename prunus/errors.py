"""User-facing errors.

Every error a user can cause by bad input (a wrong name, a missing or corrupt file, a value out
of range) is a `PrunusError`. The CLI prints its message on one line and exits with code 2; the
library lets it propagate. Subclasses also derive from the matching built-in exception, so
`except ValueError` in user code keeps working.
"""

__all__ = [
    "ConfigError",
    "first_line",
    "CorruptFileError",
    "DataNotFoundError",
    "FormatError",
    "MissingDependencyError",
    "PeerError",
    "PrunusError",
    "TrainingDivergedError",
    "BudgetNotMetWarning",
    "PrunusDeprecationWarning",
    "StructureWarning",
    "require",
]


class PrunusError(Exception):
    """Base class of every error caused by the user's input rather than a bug in prunus."""


class ConfigError(PrunusError, ValueError):
    """A configuration value is invalid; the message names the field and the valid choices."""


class DataNotFoundError(PrunusError, FileNotFoundError):
    """A dataset's files could not be found; the message says how to get them."""


class CorruptFileError(PrunusError, ValueError):
    """A file exists but is truncated, corrupt or of the wrong format."""


class FormatError(CorruptFileError):
    """A file's header names an unknown format, a newer version than this prunus reads, or has a
    field of the wrong type (see `prunus.formats.header`)."""


class TrainingDivergedError(PrunusError, RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


class PeerError(PrunusError, RuntimeError):
    """Networks trained together could not exchange: a peer died, hung, or fell out of step."""


class BudgetNotMetWarning(UserWarning):
    """A result was produced but misses the budget asked for; the message says by how much and what to change."""


class PrunusDeprecationWarning(DeprecationWarning):
    """An old name (a renamed config field, keyword, flag or recipe key) was used; the message names the new one.

    A subclass, so the `prunus` command can show prunus's own deprecations without everyone else's.
    """


class StructureWarning(UserWarning):
    """Part of a model is left unpruned because it cannot be cut exactly; the message names the module and why."""


class MissingDependencyError(PrunusError, ImportError):
    """An optional dependency is not installed; the message names the extra that installs it."""


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (its type name when it has none), for one-line errors.

    Example:
        >>> first_line(RuntimeError("shape mismatch\\nWhile executing ..."))
        'shape mismatch'
    """
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def require(module: str, extra: str, purpose: str):  # noqa: ANN201 - returns the module
    """Import the optional `module`, or raise `MissingDependencyError` naming `pip install 'prunus[extra]'`.

    Example:
        >>> require("json", "none", "reading JSON").__name__
        'json'
    """
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependencyError(f"{purpose} needs {module}: pip install 'prunus[{extra}]'") from exc
