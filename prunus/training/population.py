"""Train N independent networks as one run (grafting, ensembles): in one process or one per rank.

`train_run` comes here when the config asks for `networks > 1` or a method needs peers
(`graft`). Without torchrun the N networks train in this process in lockstep
(`prunus.engine.parallel.fit_population`); under torchrun each rank trains one network and the
networks meet through `DistributedPeers`. Either way network k uses seed
`network_seed(seed, k)` (network 0 keeps the run's seed), the full training split and its own
files: RUN_DIR/net<k>/ holds checkpoint.pt, metrics.jsonl, model/ and summary.json; RUN_DIR
holds config.yaml and summary.json with every network's final test accuracy
(`net<k>_final_test_acc`), their mean (`mean_final_test_acc`) and their logit ensemble's
(`ensemble_test_acc`). Methods that change the networks between epochs (grafting) do so before
the next epoch, never after the last one, so these are the networks as trained and scored.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import time
from pathlib import Path
from typing import Any

from torch import nn

from prunus.engine.distributed import barrier, init_from_env
from prunus.engine.parallel import Independent, fit_population, network_seed
from prunus.engine.peers import DistributedPeers
from prunus.engine.trainer import Trainer, resolve_device
from prunus.errors import ConfigError
from prunus.formats.run_dir import RunDir
from prunus.measure.ensemble import LogitEnsemble
from prunus.measure.evaluation import evaluate
from prunus.methods import create_method
from prunus.training._common import TrainResult, build_data_and_model, finish_model
from prunus.training.config import RunConfig, write_run_config

__all__ = ["network_dir", "train_population"]


def network_dir(run_dir: Path, network: int) -> Path:
    """Where network `network` of a population run keeps its files (`RunDir.network`)."""
    return RunDir(run_dir).network(network).root


def train_population(
    config: RunConfig,
    run_dir: str | os.PathLike[str] | None,
    resume: bool = False,
    progress: bool = True,
    model: nn.Module | None = None,
) -> TrainResult:
    """Train `config.networks` networks (or one per torchrun rank); returns network 0's model
    and metrics, plus `net<k>_final_test_acc` for every network, `mean_final_test_acc` and
    `ensemble_test_acc`.

    Example:
        >>> cfg = RunConfig.from_dict({"model": {"name": "lenet5"}, "data": {"name": "synthetic"},
        ...                            "train": {"epochs": 1}, "networks": 2})
        >>> train_population(cfg, None, progress=False).metrics["networks"]  # doctest: +SKIP
        2
    """
    start = time.perf_counter()
    run_dir = Path(run_dir) if run_dir is not None else None
    if run_dir is not None and RunDir(run_dir).network(0).checkpoint.exists() and not resume:
        raise ConfigError(f"{run_dir} already holds a run; pass --resume to continue it or choose another --out")
    dist = init_from_env(resolve_device(config.train.device))
    if dist.world_size > 1 and config.networks not in (1, dist.world_size):
        raise ConfigError(
            f"networks={config.networks} but torchrun started {dist.world_size} ranks; under torchrun "
            "every rank trains one network (leave --networks out or make it --nproc_per_node)"
        )
    if run_dir is not None and dist.is_main and not resume:
        write_run_config(config, RunDir(run_dir).config)

    def make(strategy: Independent) -> Trainer:
        k = strategy.rank
        seed = network_seed(config.train.seed, k)
        data, net = build_data_and_model(config, seed, model=copy.deepcopy(model) if model is not None else None)
        methods = [create_method(spec.name, **spec.args) for spec in config.methods]
        out = network_dir(run_dir, k) if run_dir is not None else None
        train = dataclasses.replace(config.train, seed=seed)
        return Trainer(net, data, train, methods, out, resume=resume, progress=progress and k == 0, parallel=strategy)

    if dist.world_size > 1:
        trainer = make(Independent(DistributedPeers()))
        results = [(trainer, trainer.fit())]
    else:
        results = fit_population(make, config.networks)
    if run_dir is not None and dist.is_main and resume:  # only once every network accepted the resume
        write_run_config(config, RunDir(run_dir).config)
    per_network: dict[int, dict[str, Any]] = {}
    for trainer, metrics in results:
        out = network_dir(run_dir, trainer.rank) if run_dir is not None else None
        finish_model(trainer, trainer.data, metrics, start, out, config)
        per_network[trainer.rank] = metrics
    barrier()
    first_trainer, first = results[0]
    summary = dict(first)
    summary["networks"] = max(config.networks, dist.world_size)
    if dist.world_size == 1:
        for k, metrics in per_network.items():
            summary[f"net{k}_final_test_acc"] = metrics.get("final_test_acc")
        test = first_trainer.data.test
        if test is not None:
            summary["mean_final_test_acc"] = _mean([m["final_test_acc"] for m in per_network.values()])
            models = [t.model.to(first_trainer.device) for t, _ in results]
            summary["ensemble_test_acc"] = evaluate(LogitEnsemble(models), test, device=first_trainer.device)["acc"]
    elif dist.is_main and run_dir is not None:
        summary.update(_ensemble_from_files(run_dir, summary["networks"], first_trainer.data.test))
    if run_dir is not None and dist.is_main:
        RunDir(run_dir).write_summary(config.to_dict(), summary)
    barrier()
    return TrainResult(model=first_trainer.model, metrics=summary if dist.is_main else first, run_dir=run_dir)


def _ensemble_from_files(run_dir: Path, n: int, test: Any) -> dict[str, Any]:
    """Rank 0 after a distributed run: every network's saved model, and their ensemble, on the test set."""
    from prunus.formats import load

    models = [load(RunDir(run_dir).network(k).model) for k in range(n)]
    out: dict[str, Any] = {}
    if test is None:
        return out
    for k, m in enumerate(models):
        out[f"net{k}_final_test_acc"] = evaluate(m, test)["acc"]
    out["mean_final_test_acc"] = _mean([out[f"net{k}_final_test_acc"] for k in range(n)])
    out["ensemble_test_acc"] = evaluate(LogitEnsemble(models), test)["acc"]
    return out


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)
