"""DE: directed-evolution sparsification (prunus's reconstruction of Franca-Neto, arXiv 2206.05859).

Teacher = the input model's logits on a fixed calibration batch; student = the model being
sparsified in place. Fitness of a candidate set = mean KL(teacher || student) with the set
tentatively zeroed (lower is better).

One cycle for layer l removes k_l more weights:
- directed pool: the `pool_factor * k_l` surviving weights of smallest magnitude;
- population of `population` k-subsets of the pool, always containing the pure-magnitude set
  (the k smallest), which is never dropped (elitism), the rest random pool subsets;
- `generations` rounds: keep the best `elite`, make children by crossover (k drawn from the union
  of two elites) and mutation (swap ~`mutation` of the set with other pool members);
- the elite and the magnitude set are re-scored on the larger batch; the best is committed.
Cycles follow a cubic schedule (Zhu & Gupta), so k shrinks late. All candidates of a generation are
evaluated in one batched matmul on the cached layer input, and only the suffix of the network runs.

Sparsity targets: one float (every layer), a dict name -> float (per layer), or with
`allocation="global"` one budget over all weights that the search allocates: every cycle the
step is split into chunks and each chunk goes to the layer whose magnitude chunk costs least KL
per weight removed.

Example:
    >>> import torch
    >>> from torch import nn
    >>> torch.manual_seed(0)
    <torch._C.Generator object at ...>
    >>> net = nn.Sequential(nn.Linear(8, 6), nn.ReLU(), nn.Linear(6, 3)).eval()
    >>> x = torch.randn(64, 8)
    >>> res = search(net, x, net(x).detach(), {"0": 0.5, "2": 0.0}, SearchSettings(cycles=2, generations=3))
    >>> int((~res.masks["0"]).sum()), int((net[0].weight == 0).sum())
    (24, 24)
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from prunus.compress.progress import CompressProgress
from prunus.compress.runner import LayerState, Runner, batched_layer, prunable_layers
from prunus.errors import ConfigError

__all__ = ["SearchResult", "SearchSettings", "SearchState", "kl_per_candidate", "magnitude_masks", "search"]


@dataclass(frozen=True)
class SearchSettings:
    """DE hyper-parameters (see the module docstring for what each does)."""

    population: int = 8  # candidate sets per generation (P); 1 = no search, magnitude sets only
    generations: int = 4  # rounds of crossover + mutation per cycle and layer (G)
    elite: int = 2  # best sets kept each round (E); re-scored on the larger batch at the end
    pool_factor: float = 4.0  # the directed pool holds this many times k of the smallest survivors
    mutation: float = 0.25  # share of a child's set swapped with other pool members
    cycles: int = 8  # passes over the layers; sparsity follows a cubic schedule over them
    allocation: str = "uniform"  # "uniform" (targets per layer) or "global" (search allocates one budget)
    max_layer_sparsity: float = 0.99  # global allocation never empties a layer beyond this
    chunk_elements: int = 1 << 24  # candidates evaluated per matmul are limited to this many output values
    seed: int = 0
    recovery_steps: int = 0  # training steps of `search(recover=)` after every cycle but the last


@dataclass
class SearchState:
    """Where a search stands after `cycle` whole cycles: enough to continue it exactly (a checkpoint).

    `rng` is the search generator's state (`torch.Generator.get_state()`); the student's weights
    are the input model's with `masks` applied, so they are not stored.
    """

    cycle: int
    masks: dict[str, torch.Tensor]
    rng: torch.Tensor
    log: list[dict[str, Any]]
    kl: float
    # the budget escalation's rungs run after the search and missed (`prunus.compress.escalate`)
    attempts: list[dict[str, Any]] = field(default_factory=list)
    # the student's whole state (name -> tensor) when a recovery between cycles trained it: then it is
    # no longer the input model with `masks` applied and must be stored (None: it is)
    weights: dict[str, torch.Tensor] | None = None


@dataclass
class SearchResult:
    """Masks (True = kept) per layer name, the KL of the final student, and a per-step log."""

    masks: dict[str, torch.Tensor]
    kl: float
    log: list[dict[str, Any]] = field(default_factory=list)


def kl_per_candidate(teacher_logp: torch.Tensor, student_logits: torch.Tensor) -> torch.Tensor:
    """Mean KL(teacher || student) per candidate; `student_logits` is (P * B, classes) -> (P,)."""
    b = teacher_logp.shape[0]
    s = F.log_softmax(student_logits.reshape(-1, b, student_logits.shape[-1]).float(), dim=-1)
    return (teacher_logp.exp() * (teacher_logp - s)).sum(-1).mean(-1)


def magnitude_masks(model: nn.Module, targets: Mapping[str, float]) -> dict[str, torch.Tensor]:
    """One-shot magnitude pruning masks: in each layer the `round(s * n)` smallest |w| are removed."""
    layers = prunable_layers(model)
    masks = {}
    for name, s in targets.items():
        w = layers[name].weight.detach()
        k = int(round(s * w.numel()))
        mask = torch.ones(w.numel(), dtype=torch.bool)
        if k:
            mask[torch.argsort(w.abs().reshape(-1), stable=True)[:k]] = False
        masks[name] = mask.reshape(w.shape)
    return masks


class _Evaluator:
    """KL of candidate removal sets for one layer, on one batch, from the cached layer input."""

    def __init__(self, runner: Runner, state: LayerState, teacher_logp: torch.Tensor, chunk: int,
                 tally: dict[str, int] | None = None) -> None:  # fmt: skip
        self.runner, self.state, self.teacher_logp = runner, state, teacher_logp
        self.tally = tally if tally is not None else {}
        self.module = runner.modules[state.name]
        self.layer = batched_layer(self.module, state.input, state.kwargs)
        # candidates per call: their outputs on the whole batch stay within `chunk` values (the suffix's
        # activations scale with them; counting one image's output instead let MobileNetV2 stack 55
        # candidates x 512 images and peak at 17.6 GB)
        with torch.no_grad():
            one_image = batched_layer(self.module, state.input[:1], state.kwargs)(
                self.module.weight.detach().unsqueeze(0)
            ).numel()
        self.per_call = max(1, chunk // max(1, one_image * state.input.shape[0]))

    @torch.no_grad()
    def __call__(self, flat_idx: torch.Tensor, sets: torch.Tensor) -> torch.Tensor:
        """`sets` (P, M) bool over the pool `flat_idx` (M,): KL with each set zeroed -> (P,)."""
        w = self.module.weight.detach().reshape(-1)
        self.tally["candidates"] = self.tally.get("candidates", 0) + sets.shape[0]
        out = []
        for part in sets.split(self.per_call):
            # dense candidate weights in one matmul: a sparse "subtract the removed weights" product
            # measured 2-10x slower than this on CPU (torch.sparse), so delta evaluation is not used
            ws = w.unsqueeze(0).repeat(part.shape[0], 1)
            ws[:, flat_idx] = torch.where(part, torch.zeros(()), w[flat_idx])
            outputs = self.layer(ws.reshape(-1, *self.module.weight.shape))
            logits = self.runner.suffix(self.state, outputs, part.shape[0])
            out.append(kl_per_candidate(self.teacher_logp, logits))
        return torch.cat(out)


def _random_sets(count: int, m: int, k: int, gen: torch.Generator) -> torch.Tensor:
    keys = torch.rand(count, m, generator=gen)
    sets = torch.zeros(count, m, dtype=torch.bool)
    sets.scatter_(1, keys.topk(k, dim=1).indices, True)
    return sets


def _children(elites: torch.Tensor, count: int, k: int, rate: float, gen: torch.Generator) -> torch.Tensor:
    """Crossover (k of the union of two elites) then mutation (swap ~rate*k members with the rest of the pool)."""
    e, m = elites.shape
    a = torch.randint(e, (count,), generator=gen)
    b = (a + torch.randint(1, max(e, 2), (count,), generator=gen)) % e
    union = elites[a] | elites[b]
    keys = torch.rand(count, m, generator=gen) + union.float()  # union members sort first, random inside
    child = torch.zeros(count, m, dtype=torch.bool)
    child.scatter_(1, keys.topk(k, dim=1).indices, True)
    swaps = max(1, int(round(rate * k))) if m > k else 0
    if swaps:
        swaps = min(swaps, k, m - k)
        out_keys = torch.rand(count, m, generator=gen).masked_fill(~child, -1)  # drop random members
        in_keys = torch.rand(count, m, generator=gen).masked_fill(child, -1)  # add random non-members
        child.scatter_(1, out_keys.topk(swaps, dim=1).indices, False)
        child.scatter_(1, in_keys.topk(swaps, dim=1).indices, True)
    return child


def _evolve(ev: _Evaluator, big: _Evaluator | None, pool: torch.Tensor, k: int, cfg: SearchSettings,
            gen: torch.Generator) -> tuple[torch.Tensor, float, float]:  # fmt: skip
    """Best removal set (bool over `pool`), its KL and the magnitude set's KL (on the rescore batch when given)."""
    m = pool.numel()
    magnitude = torch.zeros(1, m, dtype=torch.bool)
    magnitude[0, :k] = True  # the pool is sorted by magnitude: its first k are the magnitude set
    if m == k or cfg.population < 2:
        score = float((big or ev)(pool, magnitude)[0])
        return magnitude[0], score, score
    mag_score = ev(pool, magnitude)
    others = _random_sets(cfg.population - 1, m, k, gen)
    other_scores = ev(pool, others)
    for _ in range(cfg.generations):
        everyone, scores = torch.cat([magnitude, others]), torch.cat([mag_score, other_scores])
        parents = everyone[scores.argsort(stable=True)[: cfg.elite]]  # the magnitude set may be a parent
        keep = other_scores.argsort(stable=True)[: cfg.elite]
        kids = _children(parents, cfg.population - 1 - keep.numel(), k, cfg.mutation, gen)
        others = torch.cat([others[keep], kids])
        other_scores = torch.cat([other_scores[keep], ev(pool, kids) if kids.shape[0] else other_scores[:0]])
    finalists = torch.cat([magnitude, others[other_scores.argsort(stable=True)[: cfg.elite]]])
    final = big(pool, finalists) if big is not None else torch.cat([mag_score, other_scores.sort().values[: cfg.elite]])
    best = int(final.argmin())
    return finalists[best], float(final[best]), float(final[0])


def _schedule(target: float, cycle: int, cycles: int) -> float:
    """Cubic sparsity schedule: fast early, k shrinks late; reaches `target` at the last cycle."""
    return target * (1 - (1 - cycle / cycles) ** 3)


def _check_targets(layers: Mapping[str, nn.Module], targets: Mapping[str, float]) -> None:
    for name, s in targets.items():
        if name not in layers:
            raise ConfigError(
                f"sparsity target for {name!r}: no conv/Linear layer of that name; layers: {', '.join(layers)}"
            )
        if not isinstance(s, (int, float)) or isinstance(s, bool) or not 0.0 <= s < 1.0:
            raise ConfigError(f"sparsity target {s!r} for {name!r} must be a number in [0, 1)")


def _allocate(runner: Runner, x: torch.Tensor, teacher_logp: torch.Tensor, masks: dict[str, torch.Tensor],
              step: int, cfg: SearchSettings, tally: dict[str, int]) -> dict[str, int]:  # fmt: skip
    """Split `step` removals over layers, chunk by chunk, to the layer whose next magnitude chunk costs least KL."""
    chunks = 8
    size = max(1, math.ceil(step / chunks))
    alloc = dict.fromkeys(masks, 0)
    left = step
    probe: dict[str, float] = {}
    while left > 0:
        for name, mask in masks.items():
            if name in probe:
                continue
            n = mask.numel()
            take = min(size, left)
            if n - int(mask.sum()) + alloc[name] + take > cfg.max_layer_sparsity * n:
                probe[name] = math.inf
                continue
            w = runner.modules[name].weight.detach()
            alive = mask.reshape(-1).nonzero().squeeze(1)
            order = alive[torch.argsort(w.reshape(-1)[alive].abs(), stable=True)]
            removal = order[: alloc[name] + take]
            state = runner.enter(x, name)
            ev = _Evaluator(runner, state, teacher_logp, cfg.chunk_elements, tally)
            probe[name] = float(ev(removal, torch.ones(1, removal.numel(), dtype=torch.bool))[0]) / (alloc[name] + take)
        best = min(probe, key=lambda k: probe[k])
        if probe[best] == math.inf:
            break
        take = min(size, left)
        alloc[best] += take
        left -= take
        del probe[best]
    return alloc


@torch.no_grad()
def search(
    model: nn.Module,
    x: torch.Tensor,
    teacher_logits: torch.Tensor,
    targets: float | Mapping[str, float],
    cfg: SearchSettings = SearchSettings(),
    *,
    x_big: torch.Tensor | None = None,
    teacher_big: torch.Tensor | None = None,
    progress: bool | CompressProgress = False,
    resume: SearchState | None = None,
    on_cycle: Callable[[SearchState], None] | None = None,
    recover: Callable[[int, dict[str, torch.Tensor]], None] | None = None,
) -> SearchResult:
    """Sparsify `model` in place by directed evolution; returns the masks (True = kept).

    Args:
        model: the student, in eval mode; its conv/Linear weights are zeroed in place.
        x: the calibration batch the candidates are scored on.
        teacher_logits: the teacher's logits on `x`.
        targets: sparsity for every layer (float), per layer (name -> float; missing = 0), or with
            `cfg.allocation == "global"` a float = the share of all prunable weights to remove.
        cfg: search settings.
        x_big, teacher_big: the larger batch (and its teacher logits) the elite is re-scored on.
        progress: show progress (a bar per layer on a terminal, one line per cycle: sparsity, KL,
            candidates scored), or a `CompressProgress` to report through.
        resume: a `SearchState` of this same search (same model, batches, targets, settings):
            the search continues after its cycle, with its masks and generator state, and ends
            exactly as the uninterrupted search would.
        on_cycle: called with the `SearchState` after every cycle (a checkpoint writer).
        recover: called as `recover(cycle, masks)` after every cycle but the last when
            `cfg.recovery_steps` > 0 (it runs that many steps), to train the
            survivors back towards the teacher before the next cycle removes more (gradual pruning
            with recovery, Zhu & Gupta); it must keep the removed weights at 0. Without it, high
            sparsity on a conv net is searched on a student that never recovers (a ResNet-20 at
            70% lost 26 points). With it the student's state is stored in the `SearchState`.
    """
    layers = prunable_layers(model)
    if cfg.allocation not in ("uniform", "global"):
        raise ConfigError(f"allocation={cfg.allocation!r} is not known; choose uniform or global")
    global_mode = cfg.allocation == "global"
    if global_mode:
        if isinstance(targets, Mapping):
            raise ConfigError("allocation='global' takes one sparsity for the whole model, not a per-layer dict")
        _check_targets(layers, dict.fromkeys(layers, targets))
        per_layer = dict.fromkeys(layers, 0.0)
    else:
        per_layer = dict.fromkeys(layers, float(targets)) if not isinstance(targets, Mapping) else dict(targets)
        _check_targets(layers, per_layer)
    runner = Runner(model)
    gen = torch.Generator().manual_seed(cfg.seed)
    teacher_logp = F.log_softmax(teacher_logits.float(), dim=-1)
    big_logp = F.log_softmax(teacher_big.float(), dim=-1) if teacher_big is not None and x_big is not None else None
    prefix = big_logp is not None and x_big.shape[0] >= x.shape[0] and torch.equal(x_big[: x.shape[0]], x)
    masks = {n: (m.weight.detach() != 0) for n, m in layers.items()}
    total = sum(m.numel() for m in masks.values())
    log: list[dict[str, Any]] = []
    kl = 0.0
    first = 1
    if resume is not None:  # continue after resume.cycle: its masks on the weights, its generator state
        if resume.weights is not None:  # a recovered student: its own trained state, not the input's
            try:
                model.load_state_dict(resume.weights)
            except RuntimeError as exc:
                raise ConfigError(f"the resumed search's stored state does not fit this model: {exc}") from None
        for name, module in layers.items():
            masks[name] = resume.masks[name].clone()
            module.weight.detach().masked_fill_(~masks[name], 0.0)  # +0.0, as the search's own commits write
        gen.set_state(resume.rng)
        log, kl, first = list(resume.log), resume.kl, resume.cycle + 1
    bar = progress if isinstance(progress, CompressProgress) else CompressProgress(progress)
    bar.start("DE search", cfg.cycles * len(layers), done=(first - 1) * len(layers))
    if first > 1:
        bar.line(f"DE search resumed after cycle {first - 1}/{cfg.cycles}")
    tally = {"candidates": 0}
    alloc: dict[str, int] = {}
    try:
        for cycle in range(first, cfg.cycles + 1):
            tally["candidates"], started = 0, time.perf_counter()
            overall = 1 - sum(int(v.sum()) for v in masks.values()) / total
            if global_mode:
                want = int(round(_schedule(float(targets), cycle, cfg.cycles) * total))  # type: ignore[arg-type]
                removed = sum(int((~m).sum()) for m in masks.values())
                alloc = _allocate(runner, x, teacher_logp, masks, max(0, want - removed), cfg, tally)
            for name, module in layers.items():
                mask = masks[name].reshape(-1)
                n = mask.numel()
                if global_mode:
                    k = alloc[name]
                else:
                    k = int(round(_schedule(per_layer.get(name, 0.0), cycle, cfg.cycles) * n)) - int((~mask).sum())
                alive = mask.nonzero().squeeze(1)
                k = min(k, alive.numel())
                if k > 0:
                    w = module.weight.detach().reshape(-1)
                    m = min(alive.numel(), max(k, int(math.ceil(cfg.pool_factor * k))))
                    order = torch.argsort(w[alive].abs(), stable=True)[:m]
                    pool = alive[order]
                    if cfg.population < 2:  # no search: one-shot magnitude in the same schedule, nothing scored
                        removed_idx, kl, mag_kl = pool[:k], math.nan, math.nan
                    else:
                        big = None
                        if big_logp is not None:
                            big_state = runner.enter(x_big, name)
                            big = _Evaluator(runner, big_state, big_logp, cfg.chunk_elements, tally)
                        # the search batch is the re-score batch's first images (as `compress` draws
                        # them): its activations are a slice of those, not a second forward pass
                        small = runner.head(big_state, x.shape[0]) if big is not None and prefix else None
                        ev = _Evaluator(runner, small or runner.enter(x, name), teacher_logp, cfg.chunk_elements, tally)
                        chosen, kl, mag_kl = _evolve(ev, big, pool, k, cfg, gen)
                        removed_idx = pool[chosen]
                    w[removed_idx] = 0  # commit: weight is a view of the module's parameter
                    mask[removed_idx] = False
                    log.append({"cycle": cycle, "layer": name, "removed": k, "sparsity": 1 - float(mask.float().mean()),
                                "kl": kl, "kl_magnitude": mag_kl})  # fmt: skip
                overall = 1 - sum(int(v.sum()) for v in masks.values()) / total
                bar.advance(f"DE cycle {cycle}/{cfg.cycles} {name}: sparsity {overall:.3f} KL {kl:.4f}")
            bar.line(f"DE cycle {cycle}/{cfg.cycles}: sparsity {overall:.4f} KL {kl:.5f} "
                     f"candidates {tally['candidates']} seconds {time.perf_counter() - started:.1f}")  # fmt: skip
            if recover is not None and cfg.recovery_steps and cycle < cfg.cycles:
                started = time.perf_counter()
                with torch.enable_grad():  # the search itself runs without autograd
                    recover(cycle, masks)
                model.eval()
                bar.line(f"DE cycle {cycle}/{cfg.cycles}: recovery {time.perf_counter() - started:.1f} s")
            if on_cycle is not None:
                rng = gen.get_state()
                weights = None
                if recover is not None and cfg.recovery_steps:
                    weights = {k: v.detach().clone() for k, v in model.state_dict().items()}
                on_cycle(SearchState(cycle, {n: m.clone() for n, m in masks.items()}, rng, list(log), kl,
                                     weights=weights))  # fmt: skip
    finally:
        bar.stop()
    kl = float(kl_per_candidate(teacher_logp, model(x))[0])
    return SearchResult(masks=masks, kl=kl, log=log)
