"""`CompressConfig`: every setting of `prunus.compress`, validated when it is built.

Example:
    >>> CompressConfig(sparsity=0.9, bits="auto", max_drop=1.0).bits
    'auto'
    >>> CompressConfig().finetune_steps is None  # not set: the preset's start, raised by the budget escalation
    True
    >>> CompressConfig().cycles  # filled by the preset for the model compressed (prunus.compress.presets)
    'auto'
    >>> CompressConfig(bits=9)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    prunus.errors.ConfigError: CompressConfig.bits=9 is not valid; expected 'auto', an integer from 2 to 8 ...
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from prunus.compress.presets import AUTO, AUTO_FIELDS, PRESETS, resolve
from prunus.compress.quantize import KINDS, MAX_BITS, MIN_BITS
from prunus.compress.search import SearchSettings
from prunus.config import Config, arg, check_choice, check_count, check_range
from prunus.errors import ConfigError

__all__ = ["FISHER_FROM_LAYERS", "CompressConfig"]

# bit_order='auto' switches to the Fisher order from this many quantized layers: the measured greedy's
# forward passes grow with layers x bits lowered, about 90 s a lowered bit on MobileNetV2's 52 layers on
# 2 cores (hours in all), while LeNet (3) and ResNet-20 (20) keep the measured descent their figures came from
FISHER_FROM_LAYERS = 33


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _check_bits(v: Any) -> bool:
    return _is_int(v) and MIN_BITS <= v <= MAX_BITS


@dataclasses.dataclass(frozen=True)
class CompressConfig(Config):
    """How to sparsify, quantize and encode a model (DE search, bit allocation, .prn coding)."""

    sparsity: float | Mapping[str, float] = arg(0.9, "share of weights removed: all layers, or layer -> share")
    preset: str = arg(
        "auto",
        "where the fields left at 'auto' come from (prunus.compress.presets): 'mlp', 'convnet', or 'auto' "
        "(convnet when the model has a convolution, else mlp)",
    )
    allocation: str = arg(
        "auto",
        "'uniform': the target(s) per layer; 'global': one budget, the search allocates it; 'auto': the preset's "
        "(mlp uniform, convnet global)",
    )
    bits: int | str | Mapping[str, int] = arg(
        "auto", "2-8 for every layer, layer -> bits, or 'auto' (greedy, budgeted)"
    )
    quantizer: str = arg("kmeans", "'kmeans' (1-D Lloyd), 'uniform', or 'best' (lower weight error per layer)")
    max_drop: float | None = arg(1.0, "auto bits: accuracy points the compressed model may lose on the budget batch")
    max_kl: float | None = arg(None, "auto bits: KL(teacher || student) allowed on the budget batch")
    confidence: float = arg(
        0.95,
        "accuracy budgets (max_drop, quant_drop): the bits are chosen so that the drop measured on the budget "
        "batch plus z standard errors of its sampling noise fits (0.5: the measured drop alone); the verdict on "
        "the verify_size images reports that bound (met_at_confidence) and is met on their measured drop "
        "(with verify_size=0, on the bound)",
    )
    quant_drop: float | str | None = arg(
        "auto",
        "auto bits: points quantization may cost vs the pruned (distilled) model: the bits are chosen on this "
        "share; the verdict is still max_drop / max_kl vs the teacher (on the share only when both are None); "
        "None: the bits are chosen on max_drop / max_kl; 'auto': the preset's (mlp None, convnet 0.3)",
    )
    codebook_steps: int | None = arg(
        None,
        "KD steps fine-tuning the shared codebook values (+ biases) after quantization; None: 0, and the budget "
        "escalation may add them",
    )
    codebook_lr: float = arg(1e-4, "Adam lr of the codebook fine-tune")
    min_bits: int = arg(MIN_BITS, "auto bits never go below this")
    max_bits: int = arg(MAX_BITS, "auto bits start here")
    bit_order: str = arg(
        "auto",
        "auto bits: 'measured' (each candidate step's KL measured by a forward pass), 'fisher' (predicted from the "
        "diagonal Fisher, the budget still measured, by bisection: for big nets, where 'measured' takes hours), or "
        f"'auto' (measured up to {FISHER_FROM_LAYERS - 1} layers, fisher from {FISHER_FROM_LAYERS})",
    )
    calib_size: int | str = arg(
        "auto", "calibration images the DE candidates are scored on ('auto': the preset's, mlp 1024, convnet 128)"
    )
    rescore_size: int | str = arg(
        "auto",
        "images the elite is re-scored on, and the bit budget is measured on (0 = no re-score; 'auto': the "
        "preset's, mlp 4096, convnet 2048)",
    )
    elite_rescore_size: int | str | None = arg(
        "auto",
        "images the DE elite is re-scored on: the first of the budget batch (None: all rescore_size of them); on a "
        "conv net the re-score of every layer and cycle is most of the search's time, and the budget needs its "
        "larger batch ('auto': the preset's, mlp None, convnet 512)",
    )
    verify_size: int = arg(
        2048,
        "images the budget's verdict (met or not) is read on, apart from the budget batch the bits are chosen on and "
        "never used to choose anything; taken after the budget batch, which shrinks to leave room when the images "
        "run short (0: the verdict on the budget batch itself, optimistic: the allocation fitted that batch)",
    )
    population: int = arg(8, "DE candidate sets per generation (1 = no search: magnitude pruning in the same schedule)")
    generations: int | str = arg("auto", "DE rounds per cycle and layer ('auto': the preset's, mlp 4, convnet 3)")
    elite: int = arg(2, "DE sets kept each round")
    pool_factor: float = arg(4.0, "directed pool = this many times k of the smallest survivors")
    mutation: float = arg(0.25, "share of a child's set swapped with other pool members")
    cycles: int | str = arg(
        "auto", "passes over the layers (cubic sparsity schedule; 'auto': the preset's, mlp 8, convnet 4)"
    )
    finetune_steps: int | None = arg(
        None,
        "distillation fine-tune of the survivors (Adam steps on the calibration set); None: the preset's start "
        "(mlp 0, convnet 1500), and the budget escalation may raise it",
    )
    recovery_steps: int | str = arg(
        "auto",
        "distillation steps of the survivors after every DE cycle but the last (gradual pruning with recovery: "
        "the next cycle searches a student that has re-learned what the last one removed; what high sparsity on a "
        "conv net needs; 'auto': the preset's, mlp 0, convnet 300)",
    )
    finetune_size: int | str = arg(
        "auto",
        "training images the fine-tunes train on, never the images the budget is measured on (drawn on top of "
        "the budget batch when there is no validation split; 0 there: they train on the budget batch, an "
        "optimistic verdict; 'auto': the preset's, mlp 4096, convnet 16384)",
    )
    finetune_lr: float = arg(1e-3, "Adam lr of the distillation fine-tune")
    temperature: float = arg(4.0, "KD temperature of the fine-tune")
    escalate: bool = arg(
        True,
        "auto bits: when the budget is missed, retry with the stronger settings of prunus.compress.escalate.LADDER "
        "(only fields left unset)",
    )
    seed: int = arg(0, "seed of the search and of the calibration slice")
    progress: bool = arg(False, "rich progress bar with sparsity and KL")

    def __post_init__(self) -> None:
        s = self.sparsity
        if isinstance(s, Mapping):
            for name, v in s.items():
                check_range(f"CompressConfig.sparsity[{name!r}]", v, 0.0, 1.0, high_inclusive=False)
        else:
            check_range("CompressConfig.sparsity", s, 0.0, 1.0, high_inclusive=False)
        check_choice("CompressConfig.preset", self.preset, (AUTO, *PRESETS))
        for name in AUTO_FIELDS:  # a word other than 'auto' in a number field: one line naming both forms
            value = getattr(self, name)
            if isinstance(value, str) and value != AUTO and name != "allocation":
                raise ConfigError(f"CompressConfig.{name}={value!r} is not valid; expected a number or 'auto' "
                                  "(the preset's value)")  # fmt: skip
        check_choice("CompressConfig.allocation", self.allocation, ("uniform", "global", AUTO))
        if self.allocation == "global" and isinstance(s, Mapping):
            raise ConfigError("CompressConfig.allocation='global' takes one sparsity, not a per-layer dict")
        b = self.bits
        ok = b == "auto" or _check_bits(b) or (isinstance(b, Mapping) and all(_check_bits(v) for v in b.values()))
        if not ok:
            raise ConfigError(
                f"CompressConfig.bits={b!r} is not valid; expected 'auto', an integer from {MIN_BITS} to {MAX_BITS} "
                "or a dict layer -> bits"
            )
        check_choice("CompressConfig.quantizer", self.quantizer, (*KINDS, "best"))
        check_choice("CompressConfig.bit_order", self.bit_order, (AUTO, "measured", "fisher"))
        if self.max_drop is not None:
            check_range("CompressConfig.max_drop", self.max_drop, 0.0, 100.0)
        if self.max_kl is not None:
            check_range("CompressConfig.max_kl", self.max_kl, 0.0)
        if self.quant_drop is not None and self.quant_drop != AUTO:
            check_range("CompressConfig.quant_drop", self.quant_drop, 0.0, 100.0)
        check_range("CompressConfig.confidence", self.confidence, 0.5, 1.0, high_inclusive=False)
        if b == "auto" and self.max_drop is None and self.max_kl is None and self.quant_drop in (None, AUTO):
            # 'auto' may resolve to None (the mlp preset): a budget must not depend on the model
            raise ConfigError("CompressConfig.bits='auto' needs a budget: set max_drop, max_kl or quant_drop")
        for field in ("min_bits", "max_bits"):
            if not _check_bits(getattr(self, field)):
                raise ConfigError(
                    f"CompressConfig.{field}={getattr(self, field)!r} must be an integer from {MIN_BITS} to {MAX_BITS}"
                )
        if self.min_bits > self.max_bits:
            raise ConfigError(f"CompressConfig.min_bits={self.min_bits} is above max_bits={self.max_bits}")
        for field, low, bound in (("calib_size", 1, "samples"), ("rescore_size", 0, "samples"),
                                  ("finetune_size", 0, "samples"), ("verify_size", 0, "samples"),
                                  ("population", 1, "population"), ("generations", 0, "generations"),
                                  ("elite", 1, "population"), ("cycles", 1, "generations"),
                                  ("seed", 0, "seed"), ("recovery_steps", 0, "steps")):  # fmt: skip
            if not (field in AUTO_FIELDS and getattr(self, field) == AUTO):
                check_count(f"CompressConfig.{field}", getattr(self, field), low, bound)
        if self.elite_rescore_size != AUTO:
            check_count("CompressConfig.elite_rescore_size", self.elite_rescore_size, 1, "samples", optional=True)
        for field in ("finetune_steps", "codebook_steps"):  # None: not set (0, and the escalation may raise it)
            check_count(f"CompressConfig.{field}", getattr(self, field), 0, "steps", optional=True)
        if self.elite >= self.population and self.population > 1:
            raise ConfigError(f"CompressConfig.elite={self.elite} must be below population={self.population}")
        check_range("CompressConfig.pool_factor", self.pool_factor, 1.0)
        check_range("CompressConfig.mutation", self.mutation, 0.0, 1.0)
        check_range("CompressConfig.finetune_lr", self.finetune_lr, 0.0, low_inclusive=False)
        check_range("CompressConfig.codebook_lr", self.codebook_lr, 0.0, low_inclusive=False)
        check_range("CompressConfig.temperature", self.temperature, 0.0, low_inclusive=False)

    def bit_order_for(self, layers: int) -> str:
        """The bit allocation's order for a model with `layers` quantized layers ('auto' decided by their count).

        Example:
            >>> CompressConfig().bit_order_for(20), CompressConfig().bit_order_for(52)
            ('measured', 'fisher')
        """
        if self.bit_order != AUTO:
            return self.bit_order
        return "fisher" if layers >= FISHER_FROM_LAYERS else "measured"

    def resolved(self, model: Any) -> CompressConfig:
        """This config with its preset chosen for `model` and every 'auto' field filled (`presets.resolve`)."""
        return resolve(self, model)

    def search_settings(self) -> SearchSettings:
        """The DE part of this config (resolved: no field left at 'auto')."""
        left = [name for name in AUTO_FIELDS if getattr(self, name) == AUTO]
        if left:
            raise ConfigError(f"CompressConfig fields {', '.join(left)} are 'auto': resolve the preset first "
                              "(CompressConfig.resolved(model))")  # fmt: skip
        return SearchSettings(
            population=self.population,
            generations=self.generations,
            elite=self.elite,
            pool_factor=self.pool_factor,
            mutation=self.mutation,
            cycles=self.cycles,
            allocation=self.allocation,
            seed=self.seed,
            recovery_steps=self.recovery_steps,
        )

    def to_json(self) -> dict[str, Any]:
        """JSON-able dict of every field (mappings become plain dicts)."""
        return {
            f.name: (dict(v) if isinstance(v := getattr(self, f.name), Mapping) else v)
            for f in dataclasses.fields(self)
        }
