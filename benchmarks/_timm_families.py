"""Which timm models `coverage_timm.py` measures: the families, their models, the CNN test (its rules 1-3).

Shared with the worker processes: the torchvision stand-in switch and the one-line failure reason.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
STAND_INS = ROOT / "tests" / "_stand_ins"
SHAPE = (3, 64, 64)
NUM_CLASSES = 10
CONV_SHARE = 0.5

__all__ = ["family_key", "make_plan", "reason", "torchvision_or_stand_in"]


def torchvision_or_stand_in() -> None:
    """As tests/conftest.py: the stand-in only where no working torchvision imports."""
    try:
        import torchvision  # noqa: F401
    except Exception:  # ImportError, or OSError from a wheel linked against another torch build
        for name in [n for n in sys.modules if n == "torchvision" or n.startswith("torchvision.")]:
            del sys.modules[name]
        if str(STAND_INS) not in sys.path:
            sys.path.insert(0, str(STAND_INS))


def reason(exc: BaseException) -> str:
    """One line: the exception's type and the first line of its message."""
    first = (str(exc).strip().splitlines() or [""])[0]
    return f"{type(exc).__name__}: {first}"[:300]


def _conv_share_and_params(model: Any) -> tuple[float, int]:
    """(conv MACs / (conv + linear MACs), parameters) of `model` (on the meta device) at 1x3x64x64."""
    import torch
    from torch import nn

    macs = {"conv": 0, "linear": 0}

    def hook(module: nn.Module, _inputs: Any, output: Any) -> None:
        if not isinstance(output, torch.Tensor):
            return
        per_sample = output.numel() // max(1, output.shape[0])
        if isinstance(module, nn.modules.conv._ConvNd):
            k = math.prod(module.kernel_size)
            macs["conv"] += per_sample * (module.in_channels // module.groups) * k
        elif isinstance(module, nn.Linear):
            macs["linear"] += per_sample * module.in_features

    handles = [m.register_forward_hook(hook) for m in model.modules()]
    try:
        with torch.no_grad():
            model.eval()(torch.empty(1, *SHAPE, device="meta"))
    finally:
        for h in handles:
            h.remove()
    total = macs["conv"] + macs["linear"]
    params = sum(p.numel() for p in model.parameters())
    return (macs["conv"] / total if total else 0.0), params


SIZE_WORDS = frozenset(
    {"atto", "femto", "pico", "nano", "micro", "tiny", "mini", "small", "little", "medium", "base", "large"}
    | {"xlarge", "xxlarge", "huge", "giant", "gigantic"}
)


def family_key(name: str) -> str:
    """The name's stem (see the module docstring, rule 1).

    Example:
        >>> [family_key(n) for n in ("resnet18d", "ecaresnet26t", "mixnet_s", "mobilenetv3_small_050",
        ...                          "res2net50_14w_8s", "tf_efficientnet_b0", "nf_resnet26", "dla102x2")]
        ['resnet', 'ecaresnet', 'mixnet', 'mobilenetv3', 'res2net', 'tf_efficientnet', 'nf_resnet', 'dla']
    """
    import re

    out: list[str] = []
    for i, token in enumerate(name.split("_")):
        base = token
        while True:  # trailing depth/variant digits (and up to 2 letters after them), not a version "v3"
            stripped = re.sub(r"(?<![v\d])\d+[a-z]{0,2}$", "", base)
            if stripped == base:
                break
            base = stripped
        if i > 0 and (len(base) <= 2 or base in SIZE_WORDS):
            break
        out.append(base)
        if base != token:
            break
    return "_".join(p for p in out if p) or name


def _params(name: str) -> tuple[str, int | None, str]:
    """(name, parameters of timm.create_model(name, num_classes=10) on the meta device or None, error)."""
    import timm
    import torch

    try:
        with torch.device("meta"):
            model = timm.create_model(name, num_classes=NUM_CLASSES)
        return name, sum(p.numel() for p in model.parameters()), ""
    except Exception as exc:  # it may still build with img_size (step 2); the reason is kept otherwise
        return name, None, reason(exc)


def _probe(name: str) -> dict[str, Any]:
    """Build `name` on the meta device and run it at 64x64: {kwargs, params, conv_share} or {error}."""
    import timm
    import torch

    error = ""
    for extra in ({}, {"img_size": SHAPE[1]}):
        try:
            with torch.device("meta"):
                model = timm.create_model(name, num_classes=NUM_CLASSES, **extra)
            share, params = _conv_share_and_params(model)
            return {"kwargs": extra, "params": params, "conv_share": share}
        except Exception as exc:  # any failure makes the architecture no candidate, with its reason
            error = reason(exc)
    return {"error": error}


def _plan_family(item: tuple[str, str, list[tuple[int, str]]]) -> dict[str, Any]:
    """The family's model (the smallest that runs at 64x64) and whether it is a CNN family."""
    import warnings

    warnings.filterwarnings("ignore")
    torchvision_or_stand_in()
    module, key, sized = item
    errors = []
    for params, name in sorted(sized):
        probe = _probe(name)
        if "error" in probe:
            errors.append(f"{name}: {probe['error']}")
            continue
        entry = {"family": f"{module}/{key}", "model": name, "kwargs": probe["kwargs"], "params": probe["params"],
                 "conv_share": round(probe["conv_share"], 4), "architectures": len(sized)}  # fmt: skip
        if probe["conv_share"] < CONV_SHARE:
            entry["reason"] = f"not a CNN: convolutions do {probe['conv_share']:.0%} of its conv + linear MACs"
        return entry
    return {"family": f"{module}/{key}", "reason": f"no architecture runs at 64x64 ({errors[0] if errors else '-'})"}


def make_plan(jobs: int = 1) -> dict[str, Any]:
    """The families, their models and the excluded families with reasons (see the module docstring)."""
    import warnings
    from concurrent.futures import ProcessPoolExecutor

    import timm

    warnings.filterwarnings("ignore")
    names = [(m, n) for m in timm.list_modules() for n in timm.list_models(module=m) if not n.startswith("test_")]
    with ProcessPoolExecutor(jobs) as pool:
        sizes = {n: (p, e) for n, p, e in pool.map(_params, [n for _, n in names], chunksize=8)}
        groups: dict[tuple[str, str], list[tuple[int, str]]] = {}
        for module, name in names:
            params, _ = sizes[name]
            # an architecture that does not build without img_size is tried last, not dropped
            groups.setdefault((module, family_key(name)), []).append((params if params is not None else 1 << 62, name))
        entries = list(pool.map(_plan_family, [(m, k, v) for (m, k), v in sorted(groups.items())]))
    families = [e for e in entries if "reason" not in e]
    excluded = [e for e in entries if "reason" in e]
    return {"timm": timm.__version__, "families": families, "excluded": excluded}
