"""Logit ensembles: several trained networks scored as one (the fair baseline for grafting).

Example:
    >>> import torch
    >>> from torch import nn
    >>> a, b = nn.Linear(2, 3), nn.Linear(2, 3)
    >>> x = torch.randn(4, 2)
    >>> torch.allclose(LogitEnsemble([a, b])(x), (a(x) + b(x)) / 2)
    True
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["LogitEnsemble"]


class LogitEnsemble(nn.Module):
    """The mean of the members' logits (members keep their own weights; nothing is merged)."""

    def __init__(self, members: Sequence[nn.Module]) -> None:
        super().__init__()
        if not members:
            raise ValueError("an ensemble needs at least one member")
        self.members = nn.ModuleList(members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([m(x) for m in self.members]).mean(0)
