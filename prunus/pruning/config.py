"""The pruning target as one value: what to cut to, and how the cut is searched.

`PruneBudget` holds a resource budget and the settings that decide how it is met; its fields are
declared here once and validated once. `PruneConfig` adds what a one-shot `prune` also needs (a
share of channels removed as the target, the criterion, the layers kept, per-layer ratios). `prune`,
`plan_widths` and the latency planner take a `PruneConfig`; the prune stage is one; the
training-time methods' configs are `PruneBudget`s (their budget fields are these), and
`prunus prune`'s flags are generated from these fields. Keyword arguments stay as sugar at the
public entry points and become this value at once.

Shares: every name says which share it means. `remove_channels` is the fraction of channels
REMOVED (Torch-Pruning's `pruning_ratio`); `keep_macs`, `keep_params` and `keep_latency` are the
fractions of the dense model KEPT. The names before issue 28 (`ratio`, `macs_ratio`,
`params_ratio`, `latency_ratio`; `OLD_NAMES`) still work for one release, wherever a user can write
them, with a `PrunusDeprecationWarning` naming the new one.

Example:
    >>> cfg = PruneConfig(keep_macs=0.5, round_to=8)
    >>> cfg.target, cfg.criterion
    (('keep_macs', 0.5), 'l1')
    >>> PruneConfig(remove_channels=0.3, keep_macs=0.5)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    prunus.errors.ConfigError: give exactly one of remove_channels (fraction of channels removed), keep_macs, ...
"""

from __future__ import annotations

import dataclasses
import fnmatch
from collections.abc import Mapping, Sequence
from typing import Any

from prunus.config import BOUNDS, Config, arg, check_choice, check_range
from prunus.errors import ConfigError

__all__ = ["BUDGETS", "LATENCY_RUNTIMES", "OLD_NAMES", "TARGETS", "PruneBudget", "PruneConfig", "match_layer_ratios"]

#: the budget kinds: fractions of the dense model KEPT, in (0, 1]
BUDGETS = ("keep_macs", "keep_params", "keep_latency")
#: every way to state a one-shot target (remove_channels = fraction of channels REMOVED per group)
TARGETS = ("remove_channels", *BUDGETS)
#: the names the targets had before issue 28 -> their names now; accepted, deprecated, for one release
OLD_NAMES = {
    "ratio": "remove_channels",
    "macs_ratio": "keep_macs",
    "params_ratio": "keep_params",
    "latency_ratio": "keep_latency",
}
#: runtimes a latency budget can be planned and measured on
LATENCY_RUNTIMES = ("torch", "onnxruntime", "openvino")


def _target_names(names: Sequence[str]) -> str:
    named = ", ".join("remove_channels (fraction of channels removed)" if n == "remove_channels" else n for n in names)
    return f"{named} (fractions kept)"


@dataclasses.dataclass(frozen=True)
class PruneBudget(Config):
    """A resource budget (at most one of MACs, parameters, latency) and how it is searched.

    Raises:
        ConfigError: more than one budget, a value outside (0, 1] (NaN included), an unknown
            runtime, a latency batch or round_to below 1, a global_pruning that is not a bool.
    """

    keep_macs: float | None = arg(None, "budget: fraction of the dense MACs KEPT, in (0, 1]; 0.5 = half the MACs")
    keep_params: float | None = arg(None, "budget: fraction of the dense parameters KEPT, in (0, 1]")
    keep_latency: float | None = arg(
        None, "budget: fraction of the dense latency KEPT on runtime at latency_batch, in (0, 1]; measured"
    )
    runtime: str = arg(
        "onnxruntime", "runtime a keep_latency budget is planned and measured on (onnxruntime, torch, openvino)"
    )
    latency_batch: int = arg(64, "batch size a keep_latency budget is measured at")
    round_to: int | str = arg(
        1,
        "keep every pruned width a multiple of this (or the full width), e.g. 8 or 16; 'auto' = this CPU's "
        "channel block (16 with AVX-512, 8 with AVX2), the widths CPU runtimes run fastest",
    )
    global_pruning: bool = arg(False, "rank channels across groups instead of one uniform rate per group")

    # the target fields this class accepts (PruneConfig adds "remove_channels"), and how messages name the fields
    _TARGETS = BUDGETS
    _PREFIX = ""
    RENAMED = {old: new for old, new in OLD_NAMES.items() if new in BUDGETS}

    def __post_init__(self) -> None:
        from prunus.pruning.widths import check_round_to

        prefix = self._PREFIX
        if self.runtime not in LATENCY_RUNTIMES:
            raise ConfigError(
                f"{prefix}runtime={self.runtime!r} is not valid for a latency budget; choose one of: "
                f"{', '.join(LATENCY_RUNTIMES)}"
            )
        batch = self.latency_batch
        if isinstance(batch, bool) or not isinstance(batch, int) or not 1 <= batch <= BOUNDS["batch"]:
            raise ConfigError(
                f"{prefix}latency_batch={batch!r} is not valid: the latency batch must be an integer >= 1 and "
                f"<= {BOUNDS['batch']}"
            )
        if not isinstance(self.global_pruning, bool):
            raise ConfigError(f"{prefix}global_pruning must be true or false, got {self.global_pruning!r}")
        check_round_to(self.round_to)
        given = [name for name in self._TARGETS if getattr(self, name) is not None]
        for name in given:
            value = getattr(self, name)
            if name == "remove_channels":
                check_range(f"{prefix}{name}", value, 0.0, 1.0, high_inclusive=False)
            else:
                check_range(f"{prefix}{name}", value, 0.0, 1.0, low_inclusive=False)
            object.__setattr__(self, name, float(value))
        if len(given) > 1:
            owner = f"{prefix.rstrip('.')}: " if prefix else ""
            if self._TARGETS == BUDGETS:
                raise ConfigError(f"{owner}give at most one budget ({', '.join(BUDGETS)}); got {', '.join(given)}")
            lead = f"{prefix.rstrip('.')} needs" if prefix else "give"
            raise ConfigError(f"{lead} exactly one of {_target_names(self._TARGETS)}; got {', '.join(given)}")

    @property
    def target(self) -> tuple[str, float] | None:
        """(kind, value) of the target given, or None."""
        for name in self._TARGETS:
            if getattr(self, name) is not None:
                return name, float(getattr(self, name))
        return None

    @property
    def budget(self) -> str | None:
        """The budget kind given ("keep_macs", "keep_params", "keep_latency"), or None."""
        target = self.target
        return target[0] if target is not None and target[0] in BUDGETS else None

    def to_dict(self) -> dict[str, Any]:
        """As `Config.to_dict`, with a subclass's own fields first and the budget fields last (how people read them)."""
        data = super().to_dict()
        budget = {f.name for f in dataclasses.fields(PruneBudget)}
        return {**{k: v for k, v in data.items() if k not in budget}, **{k: v for k, v in data.items() if k in budget}}

    def budget_fields(self) -> dict[str, Any]:
        """This value's `PruneBudget` fields, as keyword arguments (for building a `PruneConfig` from a method's)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(PruneBudget)}


@dataclasses.dataclass(frozen=True)
class PruneConfig(PruneBudget):
    """Everything a one-shot `prune` is told: ONE target, the criterion, the layers kept, per-layer ratios.

    Example:
        >>> PruneConfig(remove_channels=0.3, layer_ratios={"layer3.*": 0.5}).layer_ratios
        {'layer3.*': 0.5}
    """

    remove_channels: float | None = arg(None, "fraction of channels REMOVED from every prunable group, in [0, 1)")
    criterion: str = arg("l1", "filter criterion that ranks channels (prunus.criteria.list_criteria())")
    ignore: tuple[str, ...] = arg((), "modules whose output channels are kept (default: the model's stem, classifier)")
    layer_ratios: dict[str, float] | None = arg(
        None, "per-layer ratios REMOVED: {glob of a group's module name: ratio in [0, 1)}; they override the target"
    )
    keep_streams: bool = arg(
        False,
        "keep residual streams whole (channels that blocks add into) and cut only inside the blocks: "
        "MobileNetV2-like nets run faster per MAC cut on CPU runtimes",
    )

    _TARGETS = TARGETS
    RENAMED = OLD_NAMES

    def __post_init__(self) -> None:
        from prunus.criteria import list_criteria

        super().__post_init__()
        if not isinstance(self.criterion, str):
            raise ConfigError(f"criterion must be a criterion name, got {self.criterion!r}")
        check_choice("criterion", self.criterion, list_criteria())
        ignore = self.ignore
        if isinstance(ignore, str) or not isinstance(ignore, (list, tuple)):
            raise ConfigError(f"ignore must be a list of module names, got {ignore!r}")
        bad = [n for n in ignore if not isinstance(n, str) or not n or "\x00" in n]
        if bad:
            raise ConfigError(f"ignore must hold non-empty module names, got {bad[0]!r}")
        object.__setattr__(self, "ignore", tuple(ignore))
        object.__setattr__(self, "layer_ratios", check_layer_ratios(self.layer_ratios))
        if not isinstance(self.keep_streams, bool):
            raise ConfigError(f"keep_streams must be true or false, got {self.keep_streams!r}")

    def require_target(self) -> tuple[str, float]:
        """(kind, value) of the ONE target; `ConfigError` when none was given."""
        target = self.target
        if target is None and not self.layer_ratios:
            raise ConfigError(f"give exactly one of {_target_names(TARGETS)}; got none")
        return target if target is not None else ("remove_channels", 0.0)


def check_layer_ratios(spec: Any) -> dict[str, float] | None:
    """None, or {glob: ratio removed in [0, 1)} as a plain dict (the globs are matched by `match_layer_ratios`)."""
    if spec is None:
        return None
    if not isinstance(spec, Mapping):
        raise ConfigError(f"layer_ratios must map module-name globs to ratios, got {spec!r}")
    out: dict[str, float] = {}
    for pattern, value in spec.items():
        if not isinstance(pattern, str) or not pattern or "\x00" in pattern:
            raise ConfigError(f"layer_ratios: {pattern!r} is not a module-name glob")
        check_range(f"layer_ratios[{pattern!r}]", value, 0.0, 1.0, high_inclusive=False)
        out[pattern] = float(value)
    return out


def match_layer_ratios(
    spec: Mapping[str, float] | None, keys: Sequence[str], members: Mapping[str, Sequence[str]]
) -> dict[str, float]:
    """Group key -> ratio removed for every group a glob of `spec` names (the last matching glob wins).

    A glob matches a group when it matches the group's key or any module name in `members[key]`
    (the modules whose output channels the group cuts). A glob that matches no group is an error:
    a typo must not silently leave the model as it was.

    Example:
        >>> match_layer_ratios({"layer3.*": 0.5}, ["layer1.0.conv1", "layer3.0.conv1"], {})
        {'layer3.0.conv1': 0.5}
    """
    out: dict[str, float] = {}
    for pattern, value in (spec or {}).items():
        hits = [
            k
            for k in keys
            if fnmatch.fnmatchcase(k, pattern) or any(fnmatch.fnmatchcase(m, pattern) for m in members.get(k, ()))
        ]
        if not hits:
            raise ConfigError(
                f"layer_ratios: {pattern!r} matches no prunable group; groups: {', '.join(list(keys)[:12])}"
                + (" ..." if len(keys) > 12 else "")
            )
        for k in hits:
            out[k] = value
    return out
