"""Run under torchrun by test_contract.py: one registered method (example arguments) under 2-process DDP.

An optional third argument (JSON) replaces the example arguments (test_budget.py: budgets).

Each rank starts from different weights (DDP broadcasts rank 0's); the method must leave both
replicas identical, parameters and BN statistics alike, with the same method state.
"""

from __future__ import annotations

import json
import os
import sys

import torch
import torch.distributed as dist

from prunus.engine import Trainer
from prunus.methods import create_method, method_example


def main(name: str, out_dir: str, args_json: str | None = None) -> None:
    assert torch.distributed.is_torchelastic_launched(), "start me with torchrun"
    # a sibling module: on sys.path when torchrun runs this file (not when pytest collects it)
    from _tiny import tiny_config, tiny_data, tiny_model

    torch.set_num_threads(1)
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    data = tiny_data(rank, world)
    args = json.loads(args_json) if args_json else method_example(name)  # test_budget.py passes its own
    method = create_method(name, **args)
    trainer = Trainer(tiny_model(data, seed=100 + rank), data, tiny_config(), [method], progress=False)
    result = trainer.fit()
    weights = {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}
    out = {"weights": weights, "state": method.state_dict(), "acc": result["final_test_acc"]}
    torch.save(out, f"{out_dir}/rank{rank}.pt")
    dist.destroy_process_group()


if __name__ == "__main__":
    main(*sys.argv[1:4])
