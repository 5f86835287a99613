"""Run under torchrun by test_csgd.py: C-SGD with DDP, each rank seeding k-means differently.

Rank 0's clusters must reach every rank (broadcast), so both replicas train, merge and end alike.
"""

from __future__ import annotations

import copy
import os
import sys

import torch
import torch.distributed as dist

from prunus.data import DataConfig, build_loaders
from prunus.engine import TrainConfig, Trainer
from prunus.methods.csgd import CentripetalSGD
from prunus.models import create_model


def main(out_dir: str) -> None:
    assert torch.distributed.is_torchelastic_launched(), "start me with torchrun"
    torch.set_num_threads(1)
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    torch.manual_seed(100 + rank)  # different initialisation per rank: DDP broadcasts rank 0's
    cfg = DataConfig(name="synthetic", val_size=0, batch_size=16, num_samples=128, image_size=12, channels=1)
    data = build_loaders(cfg, seed=0, rank=rank, world_size=world)
    model = create_model("resnet20", in_channels=1, num_classes=data.num_classes, width_mult=0.25)
    method = CentripetalSGD(width=0.5, eps=0.2, bn_eps_factor=1.0, seed=rank)
    trainer = Trainer(model, data, TrainConfig(epochs=2, lr=0.05, seed=0), [method], progress=False)
    clusters = copy.deepcopy(method.clusters)
    x = torch.randn(1, *data.input_shape)
    own = [CentripetalSGD(width=0.5, seed=s).plan(copy.deepcopy(trainer.model), x) for s in (0, 1)]
    trainer.fit()
    weights = {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}
    result = {"clusters": clusters, "planned_differently": own[0] != own[1], "weights": weights}
    torch.save({**result, "report": method.merge_report}, f"{out_dir}/rank{rank}.pt")
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
