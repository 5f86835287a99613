"""Run under torchrun by test_sfp.py: SFP and MFP with 2-process DDP, uninterrupted and crash + resume.

Each rank starts from a different initialisation (DDP broadcasts rank 0's). For each method it
trains 3 epochs straight, then 1 epoch of a second 3-epoch run, "crashes", resumes from that run's
checkpoint and finishes; it saves the final weights and the per-epoch choices/masks of both runs.
"""

from __future__ import annotations

import os
import sys

import torch
import torch.distributed as dist

from prunus.data import DataConfig, build_loaders
from prunus.engine import TrainConfig, Trainer
from prunus.methods import create_method
from prunus.models import create_model

ARGS = {"sfp": {"rate": 0.4}, "mfp": {"rate": 0.4, "switch_interval": 1, "holdout_size": 16}}


def _trainer(method: str, run_dir: str, rank: int, world: int, resume: bool) -> Trainer:
    cfg = DataConfig(name="synthetic", val_size=16, batch_size=8, num_samples=80, image_size=12, channels=1)
    data = build_loaders(cfg, seed=0, rank=rank, world_size=world)
    torch.manual_seed(100 + rank + (7 if resume else 0))
    model = create_model("resnet20", in_channels=1, num_classes=data.num_classes, width_mult=0.25)
    train = TrainConfig(epochs=3, lr=0.05, seed=0)
    return Trainer(model, data, train, [create_method(method, **ARGS[method])], run_dir=run_dir, resume=resume,
                   progress=False)  # fmt: skip


def _summary(trainer: Trainer, method: str) -> dict:
    keys = (f"{method}_channels_masked", f"{method}_turnover", "mfp_choice", "mfp_scores")
    return {
        "weights": {k: v.detach().clone() for k, v in trainer.model.state_dict().items()},
        "history": [{k: r[k] for k in keys if k in r} for r in trainer.history],
    }


def main(out_dir: str) -> None:
    assert torch.distributed.is_torchelastic_launched(), "start me with torchrun"
    torch.set_num_threads(1)
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    result = {}
    for method in ARGS:
        full = _trainer(method, f"{out_dir}/{method}-full", rank, world, resume=False)
        full.fit()
        part = _trainer(method, f"{out_dir}/{method}-part", rank, world, resume=False)
        part._run_epoch()  # then "crash"
        resumed = _trainer(method, f"{out_dir}/{method}-part", rank, world, resume=True)
        assert resumed.epoch == 1
        resumed.fit()
        result[method] = {"full": _summary(full, method), "resumed": _summary(resumed, method)}
    torch.save(result, f"{out_dir}/rank{rank}.pt")
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
