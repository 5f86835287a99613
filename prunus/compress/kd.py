"""The distillation loss stream shared by the survivors' fine-tune and the codebook fine-tune.

Example:
    >>> import torch
    >>> from torch import nn
    >>> net = nn.Linear(4, 3)
    >>> losses = [float(loss) for loss in kd_losses(net, net, torch.randn(8, 4), steps=2, temperature=4.0, seed=0)]
    >>> len(losses), all(abs(v) < 1e-6 for v in losses)  # a student equal to its teacher has nothing to learn
    (2, True)
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["kd_losses"]


def kd_losses(student: nn.Module, teacher: nn.Module, x: torch.Tensor, *, steps: int, temperature: float, seed: int,
              batch: int = 128, teacher_logits: torch.Tensor | None = None) -> Iterator[torch.Tensor]:  # fmt: skip
    """Yield `steps` KD losses (KL to the teacher's softmax at `temperature`, times T^2) on seeded batches of `x`.

    The student is in train mode while the caller steps its optimizer on each loss, and in eval
    mode once the stream is exhausted. `teacher_logits`: the teacher's logits on `x` when the
    caller has them already (one teacher pass over the calibration set serves every phase).
    """
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        logits = teacher(x) if teacher_logits is None else teacher_logits
        soft = F.softmax(logits / temperature, -1)
    student.train()
    for _ in range(steps):
        idx = torch.randint(x.shape[0], (min(batch, x.shape[0]),), generator=gen)
        logp = F.log_softmax(student(x[idx]) / temperature, -1)
        yield F.kl_div(logp, soft[idx], reduction="batchmean") * temperature**2
    student.eval()
