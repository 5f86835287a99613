"""Run under torchrun by test_distributed.py: train with DDP, dump this rank's weights."""

from __future__ import annotations

import sys

import torch
import torch.distributed as dist
from safetensors.torch import save_file

from prunus.data import DataConfig, build_loaders
from prunus.engine import TrainConfig, Trainer
from prunus.models import create_model


def main(out_dir: str) -> None:
    rank_env = torch.distributed.is_torchelastic_launched()
    assert rank_env, "start me with torchrun"
    torch.set_num_threads(1)
    trainer_cfg = TrainConfig(epochs=2, lr=0.05, seed=0)
    # Deliberately different initialisation per rank: DDP must broadcast rank 0's weights.
    import os

    rank = int(os.environ["RANK"])
    world = int(os.environ["WORLD_SIZE"])
    torch.manual_seed(100 + rank)
    data = build_loaders(DataConfig(name="synthetic", val_size=0, batch_size=16), seed=0, rank=rank, world_size=world)
    # ResNet-20 has BatchNorm: its running statistics must end identical too, not just the parameters
    model = create_model("resnet20", in_channels=data.in_channels, num_classes=data.num_classes, width_mult=0.25)
    trainer = Trainer(model, data, trainer_cfg, run_dir=f"{out_dir}/run", progress=False)
    result = trainer.fit()
    state = {k: v.contiguous() for k, v in trainer.model.state_dict().items()}
    save_file(
        state,
        f"{out_dir}/rank{rank}.safetensors",
        metadata={"acc": str(result["final_test_acc"]), "steps": str(trainer.global_step)},
    )
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
