"""prunus.config: the bounds every config, recipe and --set is held to, stated once in `BOUNDS`.

For each bounded count: the bound itself is accepted and one past it is refused with a message
naming the field and the range, by the config that holds the count (so a recipe, a --set and a
Python caller all meet the same limit).
"""

from __future__ import annotations

import pytest

from prunus.compress import CompressConfig
from prunus.config import BOUNDS, check_count
from prunus.data import DataConfig
from prunus.engine import TrainConfig
from prunus.errors import ConfigError
from prunus.pipeline._model_stages import BenchStage
from prunus.pipeline._train_stages import CsgdStage, TrainStage
from prunus.pruning import PruneConfig
from prunus.training import RunConfig

SYNTH = {"name": "synthetic"}
CASES = [  # (what builds the config with the field set to a value, field, the BOUNDS key)
    (lambda v: TrainConfig(epochs=v), "epochs", "epochs"),
    (lambda v: TrainConfig(seed=v), "seed", "seed"),
    (lambda v: TrainConfig(threads=v), "threads", "threads"),
    (lambda v: DataConfig(**SYNTH, num_samples=v), "DataConfig.num_samples", "samples"),
    (lambda v: DataConfig(**SYNTH, image_size=v), "DataConfig.image_size", "image_size"),
    (lambda v: DataConfig(**SYNTH, channels=v), "DataConfig.channels", "channels"),
    (lambda v: DataConfig(**SYNTH, num_classes=v), "DataConfig.num_classes", "classes"),
    (lambda v: DataConfig(batch_size=v), "DataConfig.batch_size", "batch"),
    (lambda v: DataConfig(eval_batch_size=v), "DataConfig.eval_batch_size", "batch"),
    (lambda v: DataConfig(subset=v), "DataConfig.subset", "samples"),
    (lambda v: DataConfig(split_seed=v), "DataConfig.split_seed", "seed"),
    (lambda v: RunConfig(networks=v), "networks", "networks"),
    (lambda v: TrainStage(networks=v), "TrainStage.networks", "networks"),
    (lambda v: CsgdStage(rounds=v), "csgd.rounds", "rounds"),
    (lambda v: BenchStage(repeats=v), "bench.repeats", "repeats"),
    (lambda v: BenchStage(batch_sizes=(v,)), "bench.batch_sizes", "batch"),
    (lambda v: CompressConfig(population=v, elite=1), "CompressConfig.population", "population"),
    (lambda v: CompressConfig(generations=v), "CompressConfig.generations", "generations"),
    (lambda v: CompressConfig(cycles=v), "CompressConfig.cycles", "generations"),
    (lambda v: CompressConfig(finetune_steps=v), "CompressConfig.finetune_steps", "steps"),
    (lambda v: CompressConfig(codebook_steps=v), "CompressConfig.codebook_steps", "steps"),
    (lambda v: CompressConfig(calib_size=v), "CompressConfig.calib_size", "samples"),
    (lambda v: CompressConfig(rescore_size=v), "CompressConfig.rescore_size", "samples"),
]


@pytest.mark.parametrize(("build", "field", "bound"), CASES, ids=[c[1] for c in CASES])
def test_each_bound_is_accepted_and_one_past_it_refused(build, field, bound):
    build(BOUNDS[bound])  # the bound itself is a legal value
    with pytest.raises(ConfigError, match=rf"{field}={BOUNDS[bound] + 1} is not valid; .* to {BOUNDS[bound]}"):
        build(BOUNDS[bound] + 1)


def test_a_latency_batch_past_the_bound_is_refused():
    PruneConfig(keep_latency=0.5, latency_batch=BOUNDS["batch"])
    with pytest.raises(ConfigError, match=rf"latency_batch={BOUNDS['batch'] + 1} is not valid"):
        PruneConfig(keep_latency=0.5, latency_batch=BOUNDS["batch"] + 1)


@pytest.mark.parametrize("value", [True, 1.5, "3", None, -1])
def test_a_count_must_be_an_integer_in_range(value):
    with pytest.raises(ConfigError, match="expected an integer from 0 to"):
        check_count("n", value, 0, "epochs")
