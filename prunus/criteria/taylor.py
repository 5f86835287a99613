"""First-order Taylor criterion: how much the loss would change if a channel were zeroed.

Example:
    >>> batch = DataBatch(model, x, y)  # doctest: +SKIP
    >>> score(model, group, "taylor", batch)  # doctest: +SKIP
"""

from __future__ import annotations

import torch

from prunus.criteria.base import Criterion, DataBatch, register_criterion
from prunus.errors import ConfigError
from prunus.structure import ChannelTensors

__all__ = ["TaylorCriterion"]


@register_criterion("taylor")
class TaylorCriterion(Criterion):
    """|sum over batch and positions of activation x gradient| at each writer's output, per channel.

    The forward pass runs in eval mode (BN uses its running statistics, which stay untouched) and the
    gradients are taken with respect to the activations only, so the model's `.grad` fields are not
    touched either. Several writers of a group (a residual stream) are reduced like any criterion.
    """

    needs_data = True

    def per_tensor(self, tensors: ChannelTensors, batch: DataBatch | None) -> list[torch.Tensor]:
        assert batch is not None  # checked by Criterion.__call__
        group = tensors.group
        if group is None:
            raise ConfigError("criterion 'taylor' needs tensors from prunus.structure.group_weights (with the group)")
        writers = [s for s in group.slices if s.role.is_writer and s.tensor == "weight"]
        model = batch.model
        acts: dict[str, list[torch.Tensor]] = {s.module: [] for s in writers}
        hooks = [
            model.get_submodule(name).register_forward_hook(lambda m, i, o, name=name: acts[name].append(o))
            for name in acts
        ]
        modes = {m: m.training for m in model.modules()}
        try:
            model.eval()
            with torch.enable_grad():
                # An input that requires grad keeps the graph alive even if every weight is frozen.
                loss = batch.loss_fn(model(batch.inputs.detach().requires_grad_(True)), batch.targets)
                flat = [a for name in acts for a in acts[name]]
                grads = dict(zip(map(id, flat), torch.autograd.grad(loss, flat, allow_unused=True), strict=True))
        finally:
            for h in hooks:
                h.remove()
            for m, mode in modes.items():
                m.training = mode
        out = []
        for s in writers:
            per_position = 0.0
            for a in acts[s.module]:
                g = grads[id(a)]
                if g is not None:
                    dims = [d for d in range(a.dim()) if d != 1]
                    per_position = per_position + (a.detach() * g).sum(dims)
            if not torch.is_tensor(per_position):
                continue
            scores = torch.zeros(tensors.num_channels, device=per_position.device)
            idx = torch.tensor(s.index, device=per_position.device)
            scores.index_add_(0, torch.tensor(s.channel, device=per_position.device), per_position[idx].float())
            out.append(scores.abs())
        return out
