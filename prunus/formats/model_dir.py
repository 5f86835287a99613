"""Model files without pickle: `model.safetensors` (weights) + `model.json` (how to rebuild).

`save` writes the directory as one unit (built next to the target, then swapped in). `load`
rebuilds the dense architecture from the model registry
(or, only when the caller opts in, from a user factory named in the file), replays the pruning
history so the shapes match, then loads the weights. Nothing in a model directory can execute
code unless `trust_factory=True` is passed.

model.json fields: format, format_version, prunus_version, arch ({"name", "kwargs"} for registry
models or {"factory": "module:function", "kwargs"} for user models), input_shape (one sample:
[C, H, W], or [C, L], [C, D, H, W]; a list of them, or a dict of them by keyword, for a model
with several inputs), history (the structure engine's pruning history), metrics, extra.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from prunus._io.atomic import atomic_dir, is_temp_name
from prunus._io.safe import MAX_JSON_BYTES, read_json
from prunus.errors import ConfigError, CorruptFileError, PrunusError
from prunus.formats.header import KINDS, check_header, make_header
from prunus.formats.limits import (
    build_bounded,
    check_dtypes,
    check_finite_weights,
    check_input_shape,
    check_kwargs,
    replay_shape,
)
from prunus.formats.run_dir import resolve_model_dir
from prunus.models.eager import unwrap_parallel
from prunus.models.info import example_input, get_info, normalize_shape, update_info
from prunus.models.timm_models import TIMM_FACTORY, create_from_record

__all__ = [
    "ALLOWED_FACTORIES",
    "MODEL_JSON",
    "MODEL_WEIGHTS",
    "load",
    "read_model_json",
    "save",
    "trusting",
    "untrusted_factory",
]

MODEL_JSON = "model.json"
MODEL_WEIGHTS = "model.safetensors"
# What prunus itself puts in a model directory (anything else is the user's); "finetune" is the
# fine-tuning run an older `prunus prune` kept inside the model directory
MODEL_DIR_FILES = frozenset({MODEL_JSON, MODEL_WEIGHTS, "model.onnx", "model.pt", "finetune"})
FORMAT = "prunus-model"
FORMAT_VERSION = KINDS[FORMAT]
# model.json fields and their JSON types; anything else in the file is ignored
_FIELDS = {"arch": dict}
_OPTIONAL = {"input_shape": (list, dict), "history": list, "metrics": dict, "extra": dict}


def save(
    model: nn.Module,
    directory: str | os.PathLike[str],
    *,
    input_shape: Sequence[int] | None = None,
    metrics: dict[str, Any] | None = None,
    factory: str | None = None,
    factory_kwargs: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Save `model` to `directory` as safetensors + JSON; returns the directory.

    Args:
        model: a registry model (built by `create_model`, possibly pruned) or a user model.
        directory: created if needed; an existing model directory is replaced as one unit (its
            exports model.onnx/model.pt go with the old model). Any other non-empty directory is refused.
        input_shape: One sample's shape, (C, H, W) (or (C, L), (C, D, H, W)); a tuple or dict of
            them for a model with several inputs. Defaults to the model's `ModelInfo.input_shape`.

    Raises:
        ConfigError: the model cannot be rebuilt from the file: not from the registry and no
            `factory`, or pruned but no input shape to replay the pruning with (every pruning and
            merge records the shape it traced, so this only happens when it was removed).
        metrics: numbers to keep with the model (accuracy, MACs, ...).
        factory: for models not from the registry, "package.module:function" that rebuilds the
            dense model from `factory_kwargs`. Loading it later requires `trust_factory=True`,
            except for the built-in `ALLOWED_FACTORIES` ("timm:create_model", whose kwargs are
            `timm.create_model`'s: model_name, num_classes, in_chans, ...).
            Not needed for a model that `load` rebuilt from a factory: its `ModelInfo` names it.
        extra: any other JSON-able facts to store.

    Example:
        >>> import tempfile, prunus
        >>> m = prunus.create_model("lenet300_100", in_channels=1)
        >>> d = save(m, tempfile.mkdtemp(), input_shape=(1, 28, 28))
        >>> torch.equal(load(d).fc1.weight, m.fc1.weight)  # doctest: +SKIP
        True
    """
    directory = Path(directory)
    model = unwrap_parallel(model)  # the wrapped model's state and record, without `module.` prefixes
    info = get_info(model)
    arch = dict(info.arch) if info.arch is not None else None
    if factory is not None:
        if ":" not in factory:
            raise ConfigError(f"factory must look like 'package.module:function', got {factory!r}")
        arch = {"factory": factory, "kwargs": dict(factory_kwargs or {})}
    if arch is None:
        raise ConfigError(
            "this model was not built by prunus.create_model; pass factory='module:function' "
            "(and factory_kwargs) so it can be rebuilt when loading"
        )
    shape = _shape_json(input_shape if input_shape else info.input_shape)
    history = list(info.history)
    if history and not shape:
        # load() rebuilds the pruned shapes by replaying the history on an input; without one the
        # file could be written but never read back
        raise ConfigError(
            f"this model has a pruning history ({len(history)} edits) but no input shape to replay it with "
            "when loading; pass input_shape=(C, H, W)"
        )
    from safetensors.torch import save_file

    _check_replaceable(directory)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    header = make_header(
        FORMAT,
        {
            "arch": arch,
            "input_shape": shape,
            "history": history,
            "metrics": metrics or {},
            "extra": extra or {},
        },
    )
    with atomic_dir(directory, keep=_KEEP) as tmp:  # weights and model.json appear together or not at all
        save_file(state, str(tmp / MODEL_WEIGHTS))
        (tmp / MODEL_JSON).write_text(json.dumps(header, indent=2) + "\n", encoding="utf-8")
    return directory


# What a model directory may hold besides the model itself: kept across a replacement (a prune's
# fine-tuning run) or dropped with the old model (its exports, which no longer match).
_KEEP = ("finetune",)


def _check_replaceable(directory: Path) -> None:
    """Refuse to replace anything but a missing path, an empty directory or a prunus model directory."""
    if directory.is_symlink():
        raise ConfigError(f"{directory} is a symlink; prunus does not write through links")
    if not directory.exists():
        return
    if not directory.is_dir():
        raise ConfigError(f"{directory} exists and is not a directory")
    foreign = sorted(e.name for e in directory.iterdir() if e.name not in MODEL_DIR_FILES and not is_temp_name(e.name))
    if foreign:
        raise ConfigError(
            f"{directory} holds files that are not part of a prunus model ({', '.join(foreign[:3])}); "
            "refusing to replace it"
        )


def read_model_json(directory: str | os.PathLike[str]) -> dict[str, Any]:
    """The parsed, validated model.json of a model directory (or of the model a run directory made)."""
    directory = resolve_model_dir(directory)
    path = directory / MODEL_JSON
    if not directory.is_dir():
        raise PrunusError(f"model directory not found: {directory}")
    if not path.exists():
        raise CorruptFileError(f"{directory} has no {MODEL_JSON}; is it a prunus model directory?")
    header = read_json(path, MAX_JSON_BYTES, MODEL_JSON)  # regular file, size-capped: never a FIFO or /dev/zero
    header = check_header(header, FORMAT, fields=_FIELDS, optional=_OPTIONAL, where=str(path))
    arch = header["arch"]
    for key in ("name", "factory"):
        if key in arch and not isinstance(arch[key], str):
            raise CorruptFileError(f"{path}: arch.{key} must be a string, got {type(arch[key]).__name__}")
    check_kwargs(arch.get("kwargs", {}), f"{path}: arch.kwargs")
    if header.get("input_shape"):  # bounded: a file may not ask for a terabyte example input
        check_input_shape(header["input_shape"], f"{path}: input_shape")
    return header


#: factories a model file may name without the caller's opt-in: code that ships with prunus or timm,
#: whose import runs nothing the file chose (the file can only pick among their own models); each is
#: built through prunus's own builder, which refuses arguments that would read or fetch anything
BUILT_IN_FACTORIES = {TIMM_FACTORY: create_from_record}
ALLOWED_FACTORIES = frozenset(BUILT_IN_FACTORIES)
# factories this process was told to trust (`trusting`); e.g. `prunus prune --trust-factory` trusts
# the one its input model names, so the stages it runs can load that model and what they make from it
_TRUSTED: set[str] = set()


@contextlib.contextmanager
def trusting(factory: str | None) -> Iterator[None]:
    """Within the block, `load` imports `factory` (a "module:function" a model file names) without `trust_factory`.

    Example:
        >>> with trusting("mypkg.nets:build"):
        ...     pass
    """
    added = factory is not None and factory not in _TRUSTED
    if added:
        _TRUSTED.add(factory)  # type: ignore[arg-type]
    try:
        yield
    finally:
        if added:
            _TRUSTED.discard(factory)  # type: ignore[arg-type]


def untrusted_factory(directory: str | os.PathLike[str]) -> str | None:
    """The user factory `load(directory)` would refuse to import without `trust_factory=True`, or None
    (a registry model, a built-in factory, or one trusted for now by `trusting`). Reads model.json only.

    Example:
        >>> untrusted_factory("runs/demo/01-prune/model")  # doctest: +SKIP
        'mypkg.nets:build'
    """
    factory = read_model_json(directory)["arch"].get("factory")
    return factory if isinstance(factory, str) and _needs_consent(factory) else None


def _needs_consent(factory: str) -> bool:
    """Whether importing `factory` needs the caller's `trust_factory`: not built in, not trusted for now."""
    return factory not in ALLOWED_FACTORIES and factory not in _TRUSTED


def _build_dense(arch: dict[str, Any], trust_factory: bool) -> nn.Module:
    kwargs = dict(arch.get("kwargs", {}))
    if "name" in arch:
        from prunus.models import create_model

        return create_model(arch["name"], **kwargs)
    factory = arch.get("factory")
    if not isinstance(factory, str) or ":" not in factory:
        raise CorruptFileError("model.json 'arch' has neither a registry 'name' nor a 'factory'")
    if not trust_factory and _needs_consent(factory):
        # Importing a module named in a file runs its code: never without the caller's consent.
        raise PrunusError(
            f"this model is built by the user factory {factory!r}; loading it imports and runs that code. "
            "Pass trust_factory=True (CLI: --trust-factory) if you trust this file"
        )
    if factory in BUILT_IN_FACTORIES:  # prunus's builder: checks the arguments, records stem and classifier
        return BUILT_IN_FACTORIES[factory](**kwargs)
    module_name, _, fn_name = factory.partition(":")
    try:
        fn = getattr(importlib.import_module(module_name), fn_name)
    except (ImportError, AttributeError) as exc:
        raise PrunusError(f"cannot import factory {factory!r}: {exc}") from None
    return fn(**kwargs)


def load(directory: str | os.PathLike[str], *, trust_factory: bool = False, map_location: str = "cpu") -> nn.Module:
    """Rebuild the model saved in `directory` (dense architecture + history replay + weights).

    The returned model carries a `prunus.models.info.ModelInfo` with the file's arch (registry name
    or factory, so the model can be saved again as it is), input_shape (C, H, W), metrics and
    history (plus stem and classifier for registry models). `directory` may also be a run directory
    (its final model: see `prunus.formats.run_dir.resolve_model_dir`). Raises `CorruptFileError` for
    truncated/corrupt files and `PrunusError` when a user factory would have to be imported without
    `trust_factory=True` (the built-in factories of `ALLOWED_FACTORIES` need no opt-in).
    """
    directory = resolve_model_dir(directory)  # a run or a command's run directory: the model it made
    header = read_model_json(directory)
    shape = normalize_shape(header.get("input_shape") or ())
    # shapes only first: a file asking for terabytes or an input that contradicts the layers stops here
    build_bounded(lambda: _build_dense(header["arch"], trust_factory), shape, f"{directory / MODEL_JSON}")
    # The dense model's random initialisation is overwritten by the saved weights; drawing it from
    # a forked generator keeps loading a model from changing the caller's random numbers.
    with torch.random.fork_rng(devices=[]):
        model = _build_dense(header["arch"], trust_factory)
    history = header.get("history") or []
    if history:
        if not shape:
            raise CorruptFileError("model.json has a pruning history but no input_shape to replay it with")
        from prunus.structure import replay

        probe = shape
        if shape and all(isinstance(s, int) for s in shape):  # one input: replay small, a trace costs
            probe = replay_shape(lambda: _build_dense(header["arch"], trust_factory), shape)
        replay(model, history, example_input(probe, model))
    weights = directory / MODEL_WEIGHTS
    if not weights.exists():
        raise CorruptFileError(f"{directory} has no {MODEL_WEIGHTS}")
    if not weights.is_file():  # a FIFO or device would block or never end
        raise CorruptFileError(f"{weights} is not a regular file")
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        state = load_file(str(weights), device=map_location)
    except (SafetensorError, OSError, ValueError) as exc:
        raise CorruptFileError(f"{weights} is truncated or corrupt ({exc})".splitlines()[0]) from None
    check_dtypes(state, model, str(weights))
    check_finite_weights(state, str(weights))
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[1:2] or [str(exc)]
        raise CorruptFileError(
            f"{weights} does not match the architecture in {MODEL_JSON}: {first[0].strip()}"
        ) from None
    update_info(model, arch=header["arch"], input_shape=shape, metrics=header.get("metrics", {}))
    model.eval()
    return model


def _shape_json(shape: Any) -> Any:
    """`shape` validated and as JSON: [] when unknown, [C, H, W], [[...], [...]] or {"name": [...]}."""
    if shape is None or (not isinstance(shape, dict) and len(shape) == 0):
        return []
    try:
        value = check_input_shape(normalize_shape(shape) if not isinstance(shape, dict) else shape)
    except (CorruptFileError, TypeError, ValueError) as exc:
        raise ConfigError(str(exc).replace("must be [C, H, W]", "must be (C, H, W)")) from None
    if isinstance(value, dict):
        return {k: list(v) for k, v in value.items()}
    if value and isinstance(value[0], tuple):
        return [list(v) for v in value]
    return list(value)
