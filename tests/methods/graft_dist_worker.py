"""Run under torchrun by test_reactivation_dist.py: one grafting network per rank.

Also imported by the test, which trains the same two networks in one process (`make`), so
both execution modes build exactly the same Trainers.
"""

from __future__ import annotations

import os
import sys
import time

import torch

from prunus.data import DataConfig, build_loaders
from prunus.engine import Method, TrainConfig, Trainer
from prunus.engine.parallel import network_seed
from prunus.methods import create_method
from prunus.models import create_model


class Fault(Method):
    """Rank 1 misbehaves at the end of epoch 0, before the graft exchange (at the start of epoch 1): 'hang' or 'die'."""

    name = "fault"

    def __init__(self, mode: str = "none") -> None:
        self.mode = mode

    def on_epoch_end(self, trainer):
        if trainer.rank == 1 and self.mode == "hang":
            time.sleep(600)
        if trainer.rank == 1 and self.mode == "die":
            os._exit(3)


def make(strategy, mode: str = "none", run_dir=None) -> Trainer:
    seed = network_seed(0, strategy.rank)
    torch.manual_seed(seed)
    model = create_model("resnet20", num_classes=10, in_channels=1, width_mult=0.25)
    data = build_loaders(DataConfig(name="synthetic", num_samples=48, val_size=0, batch_size=16), seed=seed)
    cfg = TrainConfig(epochs=2, lr=0.05, seed=seed, checkpoint=False)
    methods = [Fault(mode), create_method("graft")]
    return Trainer(model, data, cfg, methods, run_dir, progress=False, parallel=strategy)


def main(out_dir: str, mode: str) -> None:
    from safetensors.torch import save_file

    from prunus.engine.distributed import init_from_env
    from prunus.engine.parallel import Independent
    from prunus.engine.peers import DistributedPeers

    torch.set_num_threads(1)
    init_from_env(torch.device("cpu"))
    trainer = make(Independent(DistributedPeers()), mode)
    trainer.fit()
    state = {k: v.contiguous() for k, v in trainer.model.state_dict().items()}
    save_file(state, f"{out_dir}/rank{trainer.rank}.safetensors")
    torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
