"""The stage contract: a frozen config dataclass plus a registered function that runs it.

A stage reads the model directory of an earlier stage (`StageContext.input_model`), writes what
it makes into its own directory (`StageContext.dir`), and returns a `StageResult`: its numbers
and, if it made a new model, that model's directory. The runner writes the completion record;
a stage never does. Stages register themselves with `register_stage` when their module is
imported (the package's `__init__` imports the built-in ones), and recipes name them by that key.

Example:
    >>> from prunus.pipeline import list_stages
    >>> {"train", "prune", "csgd", "finetune", "compress", "export", "bench", "report"} <= set(list_stages())
    True
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prunus.config import Config
from prunus.data.bundle import DataConfig
from prunus.formats.run_dir import RunDir
from prunus.registry import Registry

__all__ = ["StageConfig", "StageContext", "StageInfo", "StageResult", "get_stage", "list_stages", "register_stage"]


@dataclass(frozen=True)
class StageConfig(Config):
    """Fields every stage has: its name in the recipe and which earlier stage's model it reads."""

    name: str = ""  # unique in the recipe; default: the stage kind (with -2, -3 ... when repeated)
    input: str | None = None  # the earlier stage whose model this one reads; default: the latest model

    def data_used(self) -> DataConfig | None:
        """The data this stage runs its input model on (its `data` field, if it has one), or None: the
        runner checks the model takes that data's samples before the stage starts."""
        data = getattr(self, "data", None)
        return data if isinstance(data, DataConfig) else None


@dataclass
class StageContext:
    """What the runner hands a stage.

    Attributes:
        dir: The stage's own directory (created; may hold a partial earlier attempt to resume).
        input_model: Model directory of the input stage (None for a stage that needs none).
        seed: The sweep seed of this chain.
        progress: Show progress bars.
        run_dir: The whole pipeline's directory (the report stage reads every chain from it).
    """

    dir: Path
    input_model: Path | None
    seed: int
    progress: bool
    run_dir: Path

    @property
    def out(self) -> RunDir:
        """The stage's directory as a `RunDir`: every file a stage writes is named by it."""
        return RunDir(self.dir)


@dataclass
class StageResult:
    """What a stage made: numbers for the per-stage table, and a model directory if it made one."""

    metrics: dict[str, Any] = field(default_factory=dict)
    model: Path | None = None  # a new model directory inside the stage directory; None = passes its input on
    files: dict[str, str] = field(default_factory=dict)  # other outputs: role -> path relative to the stage dir


@dataclass(frozen=True)
class StageInfo:
    """A registered stage kind."""

    kind: str
    config: type[StageConfig]
    run: Callable[[Any, StageContext], StageResult]
    needs_model: bool  # reads an earlier stage's model
    makes_model: bool  # writes a new model directory
    scope: str  # "chain": once per (arm, seed); "run": once after every chain (the report)
    summary: str
    example: dict[str, Any] = field(default_factory=dict)  # small valid recipe settings (the stage contract test)


_STAGES: Registry[StageInfo] = Registry("stage")


def register_stage(
    kind: str,
    config: type[StageConfig],
    *,
    needs_model: bool,
    makes_model: bool,
    scope: str = "chain",
    example: dict[str, Any] | None = None,
) -> Callable[[Callable[[Any, StageContext], StageResult]], Callable[[Any, StageContext], StageResult]]:
    """Decorator: register `fn(config, ctx) -> StageResult` as stage `kind` with its config class.

    `example`: small valid settings (a recipe stage's keys, besides `stage`) that run in seconds on a
    tiny model and synthetic data; tests/pipeline/test_stage_contract.py runs every registered stage
    with them, so a stage registered tomorrow is covered the day it lands.
    """

    def decorator(fn: Callable[[Any, StageContext], StageResult]) -> Callable[[Any, StageContext], StageResult]:
        summary = (fn.__doc__ or "").strip().splitlines()[0] if fn.__doc__ else ""
        info = StageInfo(kind, config, fn, needs_model, makes_model, scope, summary, dict(example or {}))
        _STAGES.register(kind)(lambda: info)
        return fn

    return decorator


def get_stage(kind: str) -> StageInfo:
    """The registered stage `kind`; unknown kinds raise `ConfigError` listing the valid ones."""
    return _STAGES.get(kind).factory()


def list_stages() -> list[str]:
    """Names of every registered stage kind."""
    return _STAGES.list()
