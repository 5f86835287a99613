"""Run under torchrun by test_distributed.py: what each rank saw locally vs what the trainer reports.

Records, per rank: the BN running means after the last step of epoch 0 (before the epoch-end sync)
and after the sync, the local training loss sum / correct count / sample count of epoch 0
(recomputed from the logits each step produced and the labels the loader gives), and the trainer's
epoch-0 record.
"""

from __future__ import annotations

import os
import sys

import torch
import torch.distributed as dist
from torch import nn

from prunus.data import DataConfig, build_loaders
from prunus.engine import Method, TrainConfig, Trainer
from prunus.models import create_model


class BNProbe(Method):
    name = "bnprobe"

    def __init__(self) -> None:
        self.pre: dict[str, torch.Tensor] = {}
        self.post: dict[str, torch.Tensor] = {}

    def _means(self, model):
        return {n: m.running_mean.clone() for n, m in model.named_modules() if isinstance(m, nn.BatchNorm2d)}

    def on_step_end(self, trainer):
        if trainer.epoch == 0 and trainer.global_step == len(trainer.train_loader):
            self.pre = self._means(trainer.model)  # the last step of epoch 0, before the sync

    def on_epoch_end(self, trainer):
        if trainer.epoch == 0:
            self.post = self._means(trainer.model)


def main(out_dir: str) -> None:
    assert torch.distributed.is_torchelastic_launched(), "start me with torchrun"
    torch.set_num_threads(1)
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    cfg = DataConfig(name="synthetic", val_size=0, batch_size=8, num_samples=48, image_size=8, channels=1)
    data = build_loaders(cfg, seed=0, rank=rank, world_size=world)
    torch.manual_seed(0)
    model = create_model("resnet20", in_channels=1, num_classes=data.num_classes, width_mult=0.25)
    logits: list[torch.Tensor] = []
    model.register_forward_hook(lambda m, i, o: logits.append(o.detach().clone()) if m.training else None)
    probe = BNProbe()
    trainer = Trainer(model, data, TrainConfig(epochs=1, lr=0.05, checkpoint=False), [probe], progress=False)
    trainer.fit()
    data.train.set_epoch(0)
    labels = [y for _, y in data.train]
    steps = len(labels)
    local = torch.zeros(3, dtype=torch.float64)
    for out, y in zip(logits[:steps], labels, strict=True):
        local += torch.tensor(
            [float(nn.functional.cross_entropy(out, y, reduction="sum")), float((out.argmax(1) == y).sum()), len(y)],
            dtype=torch.float64,
        )
    record = {k: v for k, v in trainer.history[0].items() if isinstance(v, float)}
    torch.save({"pre": probe.pre, "post": probe.post, "local": local, "record": record}, f"{out_dir}/rank{rank}.pt")
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
