"""Filter Grafting (Meng et al., CVPR 2020) as a Trainer plug-in: method `graft`.

`variant="ring"` (default): N >= 2 networks train side by side (`prunus train --networks N` in
one process, or one per rank under torchrun); after every epoch but the last, network k blends
every layer with network k-1's PRE-graft layer: own <- alpha own + (1 - alpha) other with
alpha = 0.5 + (A/pi) arctan(c (H_own - H_other)) (`_grafting.graft_weights`, the one formula)
and H the layer's information (entropy of a 10-bin histogram, closed or the reference's
half-open bins, or L1). BN parameters and running statistics take their conv's alpha, the
classifier the last conv's (units by module type and execution order, `_grafting.graft_units`).
The exchange goes through `trainer.peers` (`prunus.engine.peers`), so this code is the same in
both execution modes. The optimizer state is not reset (reference behaviour).

Evaluation point, as the reference repository (train -> test -> save -> graft): the graft after
epoch e runs at the START of epoch e + 1, so epoch e's record, its checkpoint and the final
models are the networks BEFORE their graft, and nothing is grafted after the last epoch. With
N = 2 every graft makes both networks identical; scored after it, a run would report one
averaged network twice. Scored before it, the networks differ, and their mean and their logit
ensemble (the population summary) are real numbers.

Learning rates: `per_network_lr=False` (the default: every network at the run's lr, the paper's
headline "same LR" table and the baseline's recipe) or True, the repository's (its flag cannot be
turned off): lr_k = lr (1 + cos(pi (N - k) / N)) / 2, x0.5 and x1.0 for N = 2.

`variant="noise"` / `"internal"`: single-network variants: filters with L1 < `threshold` get
N(0, 1) * decay^e noise (e the epoch just finished), or the j-th strongest filter added to the
j-th weakest; same evaluation point.

Metrics (prefix `graft_`), in the record of every epoch after the first (the graft applied at its
start, to the networks as the previous epoch left and scored them): `alpha` (list, one per conv
unit) and `alpha_mean`, `lr_factor` (this network's lr multiplier), `invalid_0.1` /
`invalid_0.01` (filters with L1 under the threshold, before the graft) and the same `_after` it,
`touched` for the internal variants.

Example:
    >>> from prunus.methods import create_method
    >>> create_method("graft", information="l1", c=100.0).config.information
    'l1'
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass
from typing import Any

from prunus.config import Config, check_choice, check_range
from prunus.data._seed import generator
from prunus.engine.method import Method
from prunus.errors import ConfigError
from prunus.methods._grafting import (
    BINNINGS,
    INFORMATION,
    blend_unit_,
    graft_units,
    internal_graft_,
    invalid_filters,
    layer_information,
    noise_graft_,
    unit_tensors,
)
from prunus.methods._pruning import example_inputs
from prunus.methods._registry import build_config, register_method

# the building blocks are public too: benchmarks time the hook work alone, and reports count invalid filters
__all__ = [
    "GRAFT_VARIANTS",
    "Grafting",
    "GraftingConfig",
    "blend_unit_",
    "graft_units",
    "invalid_filters",
    "layer_information",
    "network_lr_factor",
    "unit_tensors",
]

GRAFT_VARIANTS = ("ring", "noise", "internal")
THRESHOLDS = (0.1, 0.01)


def network_lr_factor(rank: int, size: int) -> float:
    """The paper's per-network learning rates: lr_k = lr (1 + cos(pi (N - k) / N)) / 2, k = rank + 1.

    Example:
        >>> [round(network_lr_factor(k, 2), 3) for k in range(2)]
        [0.5, 1.0]
    """
    return (1.0 + math.cos(math.pi * (size - rank - 1) / size)) / 2.0


@dataclass(frozen=True)
class GraftingConfig(Config):
    """Grafting settings (reference defaults)."""

    variant: str = "ring"  # "ring" (N networks), "noise" or "internal" (one network)
    information: str = "entropy"  # layer information: "entropy" or "l1"
    binning: str = "closed"  # entropy histogram: "closed" or "half-open" (the repository: the max falls in no bin)
    a: float = 0.4  # alpha range is (0.5 - a/2, 0.5 + a/2)
    c: float = 500.0  # arctan steepness
    per_network_lr: bool = False  # ring: network k trains with lr (1 + cos(pi (N - k) / N)) / 2 (the repository)
    threshold: float = 0.1  # noise/internal: filters with L1 below it are grafted
    noise_decay: float = 0.975  # noise: std = noise_decay ** epoch

    def __post_init__(self) -> None:
        check_choice("variant", self.variant, GRAFT_VARIANTS)
        check_choice("information", self.information, INFORMATION)
        check_choice("binning", self.binning, BINNINGS)
        check_range("a", self.a, low=0.0, high=1.0)
        check_range("c", self.c, low=0.0, low_inclusive=False)
        check_range("threshold", self.threshold, low=0.0)
        check_range("noise_decay", self.noise_decay, low=0.0, high=1.0)
        if not isinstance(self.per_network_lr, bool):
            raise ConfigError(f"per_network_lr must be true or false, got {self.per_network_lr!r}")


@register_method("graft", config=GraftingConfig, example={"variant": "internal"})
class Grafting(Method):
    """Filter grafting between networks (ring) or inside one network (noise, internal).

    Args: see `GraftingConfig` (same names).

    Raises:
        ConfigError: bad arguments; `ring` without at least two networks; networks whose layers
            do not match.
    """

    config_class = GraftingConfig

    def __init__(self, config: GraftingConfig | None = None, /, **kwargs: Any) -> None:
        self.config = build_config(GraftingConfig, config, kwargs, "method 'graft'")
        self.lr_factor = 1.0

    @property
    def needs_peers(self) -> bool:
        """Whether this configuration needs other networks (the ring variant)."""
        return self.config.variant == "ring"

    def setup(self, trainer: Any) -> None:
        """Find the units; for the ring, check the population and (optionally) scale this network's lr."""
        self.units = graft_units(trainer.model, example_inputs(trainer.data.input_shape, trainer.device))
        if not self.needs_peers:
            return
        peers = getattr(trainer, "peers", None)
        if peers is None or peers.size < 2:
            raise ConfigError(
                "graft variant 'ring' needs at least 2 networks: prunus train --networks 2, or torchrun "
                "--nproc_per_node=2 (variant 'noise' or 'internal' runs on one network)"
            )
        tensors = self._tensors()
        shapes = ";".join(f"{type(u.conv).__name__}{tuple(t.shape)}" for u in self.units for t in unit_tensors(u))
        signature = [float(len(tensors)), float(sum(t.numel() for t in tensors)), float(zlib.crc32(shapes.encode()))]
        if any(s != signature for s in peers.all_gather_scalars(signature)):
            raise ConfigError("graft: the networks' layers differ (type, order or shape); graft needs one architecture")
        if self.config.per_network_lr:
            # through the trainer, not the param groups: a rebuilt optimizer or a resume keeps it
            self.lr_factor = network_lr_factor(peers.rank, peers.size)
            trainer.scale_lr(self.lr_factor)

    def _tensors(self) -> list[Any]:
        return [t for u in self.units for t in unit_tensors(u)]

    def on_epoch_start(self, trainer: Any) -> None:
        """The graft after the previous epoch (evaluated and saved by now; ring: with the previous
        network's pre-graft layers); logs alpha and invalid filters. Nothing before epoch 0."""
        if trainer.epoch == 0:
            return
        cfg, finished = self.config, trainer.epoch - 1
        before = invalid_filters(trainer.model, THRESHOLDS)
        metrics: dict[str, Any] = {f"graft_invalid_{t}": n for t, n in before.items()}
        if cfg.variant == "ring":
            peers = trainer.peers
            info = [layer_information(u.conv.weight, cfg.information, cfg.binning) for u in self.units]
            other_info = peers.all_gather_scalars(info)[(peers.rank - 1) % peers.size]
            theirs = iter(peers.ring_exchange(self._tensors()))
            alphas = []
            for unit, h_own, h_other in zip(self.units, info, other_info):
                own = unit_tensors(unit)
                alphas.append(blend_unit_(own, [next(theirs) for _ in own], h_own, h_other, cfg.a, cfg.c))
            metrics["graft_alpha"] = [round(a, 6) for a in alphas]
            metrics["graft_alpha_mean"] = sum(alphas) / len(alphas)
            metrics["graft_lr_factor"] = self.lr_factor
        elif cfg.variant == "noise":
            gen = generator("graft-noise", trainer.config.seed, getattr(trainer, "rank", 0), finished)
            metrics["graft_touched"] = noise_graft_(trainer.model, cfg.noise_decay**finished, cfg.threshold, gen)
        else:
            metrics["graft_touched"] = internal_graft_(trainer.model, cfg.threshold)
        after = invalid_filters(trainer.model, THRESHOLDS)
        metrics.update({f"graft_invalid_{t}_after": n for t, n in after.items()})
        trainer.log_metrics(metrics)
