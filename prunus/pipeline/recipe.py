"""Pipeline recipes: YAML -> validated plan of stages, per arm, before any work starts.

A recipe names its stages in order; each reads the model of the latest earlier stage that made
one (or the stage named by its `input`). The top-level `model`, `data` and `train` blocks are
defaults that every stage with such a block inherits (a stage's own block wins). `seeds` x
`arms` make a sweep: every arm runs its stages once per seed, so arms are paired seed by seed.

    version: 1
    name: tiny
    data: {name: synthetic, num_samples: 256, image_size: 16}
    train: {threads: 1}
    seeds: [0, 1]
    stages:
      - {stage: train, name: baseline, train: {epochs: 2}}
      - {stage: prune, keep_macs: 0.5}
      - {stage: finetune, train: {epochs: 1}}
      - {stage: report}
    compare_to: baseline        # the arm differences are taken against (default: "baseline" or the first)
    arms:                       # optional; default: one arm "main" running every stage
      baseline: {stages: [baseline, report]}
      pruned: {}                # every stage
      pruned-l2: {set: {prune.criterion: l2}}

Everything is checked here (unknown stage or key, wrong type, a stage needing a model no
earlier stage makes, bad `--set`), with messages naming the stage and the key.

Example:
    >>> plan = parse_recipe({"data": {"name": "synthetic"}, "stages": [{"stage": "train"}, {"stage": "prune",
    ...                      "remove_channels": 0.5}]})
    >>> [(s.name, s.input) for s in plan.arms["main"]]
    [('train-1', None), ('prune', 'train-1')]
"""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from prunus.config import BOUNDS, load_yaml
from prunus.errors import ConfigError
from prunus.formats.run_dir import LAYOUTS, check_name, resolve_model_dir
from prunus.pipeline.stages import StageConfig, StageInfo, get_stage, list_stages
from prunus.training.config import _nested_merge

__all__ = [
    "MAX_RECIPE_BYTES",
    "SOURCE",
    "Plan",
    "PlannedStage",
    "apply_sets",
    "load_recipe",
    "parse_recipe",
    "single_chain",
]

RECIPE_VERSION = 1
TOP_LEVEL = ("version", "name", "input", "model", "data", "train", "seeds", "arms", "compare_to", "stages")
DEFAULT_BLOCKS = ("model", "data", "train")  # top-level blocks a stage inherits
MAX_RECIPE_BYTES = 1 << 20  # a recipe is a page of YAML; refuse to parse anything near this size


@dataclass(frozen=True)
class PlannedStage:
    """One stage of one arm, fully validated."""

    name: str
    kind: str
    config: StageConfig
    info: StageInfo
    input: str | None  # the stage whose model this one reads (None: builds its own or needs none)


#: `Plan.input`'s name as a stage input: the model directory the recipe starts from
SOURCE = "@input"


@dataclass(frozen=True)
class Plan:
    """A parsed recipe: every arm's chain of stages, the seeds, and the run-level stages."""

    name: str
    seeds: tuple[int, ...]
    arms: dict[str, tuple[PlannedStage, ...]]
    final: tuple[PlannedStage, ...]  # run-scope stages (report), after every chain
    baseline: str | None  # the arm others are compared with, seed by seed
    raw: dict[str, Any]  # the recipe after --set, as written to the run directory
    input: Path | None = None  # a model directory the first model-reading stage starts from (recipe key `input`)
    layout: str = "sweep"  # "sweep": <arm>/seed<s>/<NN>-<stage>; "single" (one chain, commands): <NN>-<stage>

    def to_yaml(self) -> str:
        """The resolved recipe as YAML."""
        return yaml.safe_dump(self.raw, sort_keys=False)


def _check_keys(where: str, data: Mapping[str, Any], allowed: Sequence[str]) -> None:
    unknown = sorted(set(data) - set(allowed))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(map(str, unknown))}; known: {', '.join(allowed)}")


def _stage_names(stages: list[Any]) -> list[str]:
    """Explicit names, else the kind (kind-2, kind-3 ... when a kind repeats)."""
    names, seen = [], {}
    for i, raw in enumerate(stages):
        if not isinstance(raw, Mapping) or "stage" not in raw:
            raise ConfigError(f"stages[{i}] must be a mapping with a 'stage' key (one of: {', '.join(list_stages())})")
        kind = raw["stage"]
        if not isinstance(kind, str):
            raise ConfigError(f"stages[{i}].stage={kind!r} must be a stage kind, one of: {', '.join(list_stages())}")
        name = raw.get("name")
        if name is None:
            seen[kind] = seen.get(kind, 0) + 1
            # a stage named like a recipe key would be ambiguous in --set: "train" -> "train-1"
            name = kind if seen[kind] == 1 and kind not in TOP_LEVEL else f"{kind}-{seen[kind]}"
        check_name("stage", name)
        if name in TOP_LEVEL:
            raise ConfigError(f"stages[{i}].name={name!r} is also a recipe key; choose another name")
        if name in names:
            raise ConfigError(f"stage name {name!r} is used twice; give the stages distinct names")
        names.append(name)
    return names


def apply_sets(raw: Mapping[str, Any], sets: Mapping[str, Any]) -> dict[str, Any]:
    """`raw` with each `KEY.PATH: value` applied: a top-level key (data.subset, seeds) or a stage name
    first (baseline.train.epochs, prune.keep_macs).

    Example:
        >>> r = apply_sets({"stages": [{"stage": "train"}]}, {"train-1.train.epochs": 2, "data.subset": 100})
        >>> r["stages"][0]["train"], r["data"]
        ({'epochs': 2}, {'subset': 100})
    """
    out = copy.deepcopy(dict(raw))
    stages = out.get("stages")
    names = _stage_names(stages) if isinstance(stages, list) else []
    for key, value in sets.items():
        parts = str(key).split(".")
        if any(not p for p in parts):
            raise ConfigError(f"--set key {key!r} is malformed; expected e.g. data.subset or baseline.train.epochs")
        if parts[0] in names:
            target: dict[str, Any] = stages[names.index(parts[0])]
            path = parts[1:]
            if not path:
                raise ConfigError(f"--set {key}: name a key of stage {parts[0]!r}, e.g. {parts[0]}.train.epochs")
        elif parts[0] in TOP_LEVEL:
            target, path = out, parts
        else:
            raise ConfigError(
                f"--set {key}: {parts[0]!r} is neither a recipe key ({', '.join(TOP_LEVEL)}) "
                f"nor a stage ({', '.join(names) or 'none'})"
            )
        for p in path[:-1]:
            nxt = target.setdefault(p, {})
            if not isinstance(nxt, dict):
                raise ConfigError(f"--set {key}: {p!r} holds {nxt!r}, not a mapping")
            target = nxt
        target[path[-1]] = value
    return out


def _stage_config(name: str, kind: str, info: StageInfo, raw: Mapping[str, Any], top: Mapping[str, Any]) -> Any:
    import dataclasses

    data = {k: v for k, v in raw.items() if k != "stage"}
    data["name"] = name
    fields = {f.name for f in dataclasses.fields(info.config)}
    for block in DEFAULT_BLOCKS:
        if block not in fields:
            continue
        merged: dict[str, Any] = dict(top.get(block) or {})
        if block == "train":
            merged = (
                _nested_merge(merged, info.config.TRAIN_DEFAULTS) if hasattr(info.config, "TRAIN_DEFAULTS") else merged
            )
        own = data.get(block) or {}
        if not isinstance(own, Mapping):
            raise ConfigError(f"stage {name!r} ({kind}): {block} must be a mapping, got {own!r}")
        data[block] = _nested_merge(merged, own)
    try:
        return info.config.from_dict(data)
    except ConfigError as exc:
        raise ConfigError(f"stage {name!r} ({kind}): {exc}") from None


def _plan_arm(
    arm: str, raw: Mapping[str, Any], keep: Sequence[str] | None, source: Path | None
) -> tuple[list[PlannedStage], list[PlannedStage]]:
    stages = raw.get("stages")
    if not isinstance(stages, list) or not stages:
        raise ConfigError("a recipe needs a non-empty 'stages' list")
    names = _stage_names(stages)
    if keep is not None:
        missing = [n for n in keep if n not in names]
        if missing:
            raise ConfigError(f"arm {arm!r}: unknown stage(s) {', '.join(missing)}; stages: {', '.join(names)}")
    chain: list[PlannedStage] = []
    final: list[PlannedStage] = []
    latest_model: str | None = SOURCE if source is not None else None
    model_makers: list[str] = [SOURCE] if source is not None else []
    for name, raw_stage in zip(names, stages):
        kind = raw_stage["stage"]
        try:
            info = get_stage(kind)
        except ConfigError as exc:
            raise ConfigError(f"stage {name!r}: {exc}") from None
        cfg = _stage_config(name, kind, info, raw_stage, raw)
        if keep is not None and name not in keep:
            continue
        if info.scope == "run":
            final.append(PlannedStage(name, kind, cfg, info, None))
            continue
        if final:
            raise ConfigError(f"stage {name!r} comes after the run-level stage {final[0].name!r}, which must be last")
        source = cfg.input
        if source is not None and source not in model_makers:
            raise ConfigError(
                f"stage {name!r} ({kind}): input={source!r} is not an earlier stage that makes a model; "
                f"earlier model stages: {', '.join(model_makers) or 'none'}"
            )
        if source is None and info.needs_model:
            if latest_model is None:
                makers = [k for k in list_stages() if get_stage(k).makes_model]
                raise ConfigError(
                    f"stage {name!r} ({kind}) needs a model, but no earlier stage makes one "
                    f"(stages that make models: {', '.join(makers)})"
                )
            source = latest_model
        chain.append(PlannedStage(name, kind, cfg, info, source))
        if info.makes_model:
            latest_model = name
            model_makers.append(name)
    if not chain:
        raise ConfigError(f"arm {arm!r} has no stage to run per seed")
    return chain, final


def parse_recipe(raw: Mapping[str, Any], sets: Mapping[str, Any] | None = None, *, layout: str = "sweep") -> Plan:
    """Validate a recipe mapping (plus `--set` overrides) into a `Plan`; nothing runs.

    `layout`: "sweep" (`prunus run`) or "single" (a command running one chain of stages in its
    `--out`; one arm, one seed).
    """
    if not isinstance(raw, Mapping):
        raise ConfigError("a recipe must be a mapping at the top level")
    raw = apply_sets(raw, sets or {})
    _check_keys("recipe", raw, TOP_LEVEL)
    if raw.get("version", RECIPE_VERSION) != RECIPE_VERSION:
        raise ConfigError(f"recipe version {raw['version']!r} is not supported (this prunus reads {RECIPE_VERSION})")
    for block in DEFAULT_BLOCKS:
        if not isinstance(raw.get(block) or {}, Mapping):
            raise ConfigError(f"recipe: {block} must be a mapping, got {raw[block]!r}")
    source = _source(raw.get("input"))
    seeds = raw.get("seeds", [0])
    if (
        not isinstance(seeds, list)
        or not seeds
        or any(isinstance(s, bool) or not isinstance(s, int) or not 0 <= s <= BOUNDS["seed"] for s in seeds)
        or len(set(seeds)) != len(seeds)
    ):
        shown = repr(seeds) if len(repr(seeds)) < 80 else repr(seeds)[:77] + "..."
        raise ConfigError(
            f"seeds must be a non-empty list of distinct integers from 0 to {BOUNDS['seed']}, got {shown}"
        )
    if len(seeds) > BOUNDS["seeds"]:
        raise ConfigError(f"seeds lists {len(seeds)} seeds; the most a recipe may run is {BOUNDS['seeds']}")
    arms_raw = raw.get("arms") or {"main": {}}
    if not isinstance(arms_raw, Mapping):
        raise ConfigError(f"arms must map arm names to {{stages: [...], set: {{...}}}}, got {arms_raw!r}")
    arms: dict[str, tuple[PlannedStage, ...]] = {}
    final: tuple[PlannedStage, ...] = ()
    for arm, spec in arms_raw.items():
        if not isinstance(arm, str) or not arm or "/" in arm or arm.startswith("."):
            raise ConfigError(f"arm name {arm!r} must be a non-empty string")
        check_name("arm", arm)
        spec = spec or {}
        if not isinstance(spec, Mapping):
            raise ConfigError(f"arm {arm!r} must be a mapping with optional 'stages' and 'set', got {spec!r}")
        _check_keys(f"arm {arm!r}", spec, ("stages", "set"))
        sets_arm = spec.get("set") or {}
        if not isinstance(sets_arm, Mapping):
            raise ConfigError(f"arm {arm!r}: set must map KEY.PATH to values, got {sets_arm!r}")
        keep = spec.get("stages")
        if keep is not None and (not isinstance(keep, list) or not all(isinstance(k, str) for k in keep)):
            raise ConfigError(f"arm {arm!r}: stages must be a list of stage names, got {keep!r}")
        try:
            chain, arm_final = _plan_arm(arm, apply_sets(raw, sets_arm), keep, source)
        except ConfigError as exc:
            raise ConfigError(f"arm {arm!r}: {exc}" if len(arms_raw) > 1 else str(exc)) from None
        arms[arm] = tuple(chain)
        final = tuple(arm_final) or final
    baseline = raw.get("compare_to")
    if baseline is not None and baseline not in arms:
        raise ConfigError(f"compare_to={baseline!r} is not an arm; arms: {', '.join(arms)}")
    if baseline is None and len(arms) > 1:
        baseline = "baseline" if "baseline" in arms else next(iter(arms))
    name = raw.get("name") or "pipeline"
    check_name("recipe", name)  # the default run directory is runs/<name>: never a path
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    if layout == "single" and (len(arms) != 1 or len(seeds) != 1 or final):
        raise ConfigError("a single-chain plan has one arm, one seed and no run-level stage")
    return Plan(name=name, seeds=tuple(seeds), arms=arms, final=final, baseline=baseline, raw=raw, input=source,
                layout=layout)  # fmt: skip


def _source(value: Any) -> Path | None:
    """The recipe's `input`: an existing model directory (or a run whose model goes on), or None."""
    if value is None:
        return None
    if not isinstance(value, str) or not value or "\x00" in value:
        raise ConfigError(f"input must be the path of a model directory, got {value!r}")
    path = resolve_model_dir(value)
    if not (path / "model.json").is_file():
        raise ConfigError(f"input {value} is not a model directory (no model.json)")
    return path


def single_chain(
    stages: Sequence[Mapping[str, Any]], *, name: str, seed: int = 0, input: str | os.PathLike[str] | None = None
) -> Plan:
    """The plan a command runs in its `--out`: `stages` (recipe stage mappings) in order, one seed, "single" layout.

    Example:
        >>> plan = single_chain([{"stage": "prune", "remove_channels": 0.5}, {"stage": "finetune"}], name="prune",
        ...                     input=None)  # doctest: +SKIP
    """
    raw: dict[str, Any] = {
        "version": RECIPE_VERSION,
        "name": name,
        "seeds": [seed],
        "stages": [dict(s) for s in stages],
    }
    if input is not None:
        raw["input"] = str(input)
    return parse_recipe(raw, layout="single")


def load_recipe(path: str | os.PathLike[str], sets: Mapping[str, Any] | None = None) -> Plan:
    """Read a recipe file (yaml.safe_load, at most MAX_RECIPE_BYTES) and `parse_recipe` it."""
    path = Path(path)
    if path.is_file() and path.stat().st_size > MAX_RECIPE_BYTES:
        raise ConfigError(f"recipe {path} is {path.stat().st_size} bytes; a recipe must be under {MAX_RECIPE_BYTES}")
    raw = load_yaml(path)
    if "stages" not in raw:
        raise ConfigError(
            f"{path} has no 'stages' list: it is not a pipeline recipe (a training config? use prunus train --config)"
        )
    return parse_recipe(raw, sets)
