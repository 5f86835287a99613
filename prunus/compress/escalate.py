"""The budget escalation: which stronger settings a compression tries when its auto-bits budget is missed.

`compress` runs the DE search once; the steps after it (distillation fine-tune, bit allocation,
codebook fine-tune, coding) are cheap next to it on small models, and they are what decides
whether a sparsity meets its budget. So with `bits="auto"` and `escalate=True` a miss is retried
on the same search result with each rung of `LADDER` in turn, until one meets the budget or the
ladder ends. Each rung only fills settings the user left unset (`None`): an explicit value,
even `finetune_steps=0`, is kept, and a rung that would change nothing else is skipped. The ladder:

1. `finetune_steps=300`: a short distillation of the survivors (pruning's loss is what usually
   breaks the budget: without it the bits stay at 8 and the budget is still missed);
2. `finetune_steps=2000`: a longer one (the README's LeNet-300-100 points use 2000);
3. `finetune_steps=2000, codebook_steps=500`: plus the KD fine-tune of the shared codebook values,
   which wins back what quantization lost.

The quantization share (`quant_drop`) is not a rung: it changes what the bits are chosen on
(quantization's cost against the pruned model), not the verdict, which stays the user's
`max_drop` / `max_kl` against the input model. It stays a user setting; a miss with it set
suggests a smaller one.

After a final miss, `next_setting` names what to try next and was not tried: a ladder rung over the
user's explicit values, else (a recovery between the search's cycles when it had none,) a lower
sparsity or a larger budget.

The rungs start from the preset's fine-tune (`prunus.compress.presets.FINETUNE_START`): the
convnet preset's first try already fine-tunes 1500 steps, so its ladder is 1500, 2000, then 2000
with the codebook fine-tune.

Example:
    >>> from prunus.compress.config import CompressConfig
    >>> [change for change, _ in rungs(CompressConfig(sparsity=0.9, preset="mlp"))]
    [{}, {'finetune_steps': 300}, {'finetune_steps': 2000}, {'finetune_steps': 2000, 'codebook_steps': 500}]
    >>> [change for change, _ in rungs(CompressConfig(sparsity=0.9, preset="convnet"))]
    [{'finetune_steps': 1500}, {'finetune_steps': 2000}, {'finetune_steps': 2000, 'codebook_steps': 500}]
    >>> [change for change, _ in rungs(CompressConfig(sparsity=0.9, preset="mlp", finetune_steps=0))]  # kept
    [{}, {'codebook_steps': 500}]
    >>> next_setting(CompressConfig(sparsity=0.9, preset="mlp", finetune_steps=0), tried=[])
    'finetune_steps=300 (finetune_steps was set to 0)'
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from prunus.compress.presets import start_steps

__all__ = ["ESCALATED", "LADDER", "describe", "next_setting", "rungs", "steps"]

#: The rungs tried in order after the settings as given; each is complete (not added to the one before).
LADDER: tuple[dict[str, int], ...] = (
    {"finetune_steps": 300},
    {"finetune_steps": 2000},
    {"finetune_steps": 2000, "codebook_steps": 500},
)
#: The recovery a spent ladder suggests next when the search ran without one (the ResNet-20 point's setting).
RECOVERY_HINT = 200
#: The fields the ladder sets; `None` in a config means "not set": 0, and the escalation may raise it.
ESCALATED = ("finetune_steps", "codebook_steps")


def steps(cfg: Any, name: str) -> int:
    """The value a compression runs with for an escalated field (`None`, not set, is 0)."""
    value = getattr(cfg, name)
    return 0 if value is None else int(value)


def _key(cfg: Any) -> tuple[int, ...]:
    return tuple(steps(cfg, name) for name in ESCALATED)


def describe(change: Mapping[str, Any]) -> str:
    """A rung's settings as `key=value` words ("as given" for none)."""
    return ", ".join(f"{k}={v}" for k, v in change.items()) or "as given"


def rungs(cfg: Any) -> list[tuple[dict[str, int], Any]]:
    """The configs to try in order: (what the rung changed, the config); the first is `cfg` as given.

    `cfg` is resolved (`CompressConfig.resolved`): the first config starts its unset fields at the
    preset's values (`presets.start_steps`: the convnet preset fine-tunes 1500 steps), and every
    rung raises them, never lowers them. Rungs only with `bits="auto"` (a budget to meet) and
    `escalate`; a rung fills only the fields of `ESCALATED` that `cfg` leaves `None`, and one that
    runs the same settings as an earlier one is left out.
    """
    start = start_steps(cfg)
    first = dataclasses.replace(cfg, **start)
    out: list[tuple[dict[str, int], Any]] = [(start, first)]
    if cfg.bits != "auto" or not cfg.escalate:
        return out
    seen = {_key(first)}
    for rung in LADDER:
        change = {k: max(v, steps(first, k)) for k, v in rung.items() if getattr(cfg, k) is None}
        candidate = dataclasses.replace(cfg, **change)
        if change and _key(candidate) not in seen:
            seen.add(_key(candidate))
            out.append((change, candidate))
    return out


def next_setting(cfg: Any, tried: Sequence[Any]) -> str:
    """What to try after `cfg` missed its budget, not one of `tried` (the configs already run).

    The first ladder rung, raised to `cfg`'s own values where those are larger, that would run
    settings not yet tried (over explicit values too, saying which were set); when the ladder is
    spent, a lower sparsity or a larger budget.
    """
    done = {_key(c) for c in (*tried, cfg)}
    for rung in LADDER:
        stronger = {k: max(v, steps(cfg, k)) for k, v in rung.items()}  # never suggest less than was run
        if _key(dataclasses.replace(cfg, **stronger)) in done:
            continue
        change = {k: v for k, v in stronger.items() if steps(cfg, k) != v}
        explicit = [f"{k} was set to {getattr(cfg, k)}" for k in change if getattr(cfg, k) is not None]
        return describe(change) + (f" ({', '.join(explicit)})" if explicit else "")
    s = cfg.sparsity
    lower = "a lower sparsity" if isinstance(s, Mapping) else f"sparsity={max(0.0, round(s - 0.05, 4)):g} (from {s:g})"
    # a search without recovery prunes a conv net's later cycles on a student that never re-learned:
    # recovery between cycles took ResNet-20 from 8.5x to 31.5x at a 1-pt budget (a new search, not a rung)
    if cfg.recovery_steps == 0 and cfg.cycles > 1:
        lower = f"recovery_steps={RECOVERY_HINT} (re-learn between the search's cycles; a new search), {lower}"
    budget = "max_drop" if cfg.max_drop is not None else "max_kl" if cfg.max_kl is not None else "quant_drop"
    if cfg.quant_drop is not None and budget != "quant_drop":  # the bits spent too much of the teacher budget
        return f"{lower}, a smaller quant_drop (from {cfg.quant_drop:g}), or a larger {budget}"
    return f"{lower}, or a larger {budget}"
