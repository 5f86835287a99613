"""The one evaluation loop: mean cross-entropy, accuracy and sample count of a model over batches.

Every caller that measures a model on data (the Trainer's per-epoch validation/test numbers,
MFP's neighbour networks, `prunus eval`, the benchmark scripts, the coming DE search) uses
`evaluate`, so "accuracy" means the same thing everywhere: eval mode (restored afterwards), no
gradients, per-batch sums accumulated in float64 on the model's device, one division at the end.
It does not judge the numbers: a non-finite loss comes back as `nan`/`inf` for the caller to
check (`math.isfinite`).

Example:
    >>> import torch
    >>> from torch import nn
    >>> model = nn.Linear(4, 3)
    >>> batches = [(torch.zeros(2, 4), torch.tensor([0, 1])), (torch.zeros(1, 4), torch.tensor([2]))]
    >>> result = evaluate(model, batches)
    >>> result["count"], 0.0 <= result["acc"] <= 1.0, model.training
    (3, True, True)
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

__all__ = ["evaluate"]


def _model_device(model: nn.Module) -> torch.device:
    for tensor in model.parameters():
        return tensor.device
    for tensor in model.buffers():
        return tensor.device
    return torch.device("cpu")


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: Iterable[tuple[torch.Tensor, torch.Tensor]],
    *,
    device: torch.device | str | None = None,
    amp: bool = False,
) -> dict[str, float | int]:
    """Mean loss, accuracy and count of `model` over the `(x, y)` batches of `loader`, in eval mode.

    Args:
        model: Maps a batch of inputs to logits `(B, classes)`; its train/eval mode is restored.
        loader: Any iterable of `(inputs, int64 labels)` batches (a `TensorLoader`, a list, ...).
        device: Where batches are moved; default: the device of the model's first parameter.
        amp: Run the forward pass under `torch.autocast` (the loss is computed in float32).

    Returns:
        `{"loss": mean cross-entropy, "acc": fraction correct, "count": samples}`; an empty
        loader gives loss 0, acc 0, count 0.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> evaluate(nn.Identity(), [(torch.tensor([[2.0, 0.0], [0.0, 1.0]]), torch.tensor([0, 0]))])["acc"]
        0.5
    """
    device = _model_device(model) if device is None else torch.device(device)
    was_training = model.training
    model.eval()
    loss_sum = torch.zeros((), device=device, dtype=torch.float64)
    correct = torch.zeros((), device=device, dtype=torch.long)
    count = 0
    try:
        for x, y in loader:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            with torch.autocast(device.type, enabled=amp):
                logits = model(x)
            loss_sum += nn.functional.cross_entropy(logits.float(), y, reduction="sum").double()
            correct += (logits.argmax(1) == y).sum()
            count += y.numel()
    finally:
        model.train(was_training)
    return {"loss": float(loss_sum) / max(count, 1), "acc": float(correct) / max(count, 1), "count": count}
