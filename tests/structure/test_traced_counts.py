"""The MACs the structure trace records are `prunus.count`'s, so a prune can skip a forward pass."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from prunus.measure import count
from prunus.models import create_model, list_models
from prunus.structure import build_groups, remove_, traced_counts

from .families import MODELS, build, inputs


@pytest.mark.parametrize("name", list_models())
def test_zoo_traced_counts_equal_count(name):
    model = create_model(name, num_classes=5, in_channels=1, width_mult=0.25).eval()
    x = torch.randn(1, 1, 28, 28)
    assert traced_counts(model, build_groups(model, x)) == count(model, example_inputs=x)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_families_traced_counts_equal_count(name):
    """Several inputs (tuple, dict), 1-D and 3-D convs, module reuse, custom layers."""
    model = build(name).eval()
    x = inputs(name, batch=1)
    assert traced_counts(model, build_groups(model, x)) == count(model, example_inputs=x)


class _Twice(nn.Module):
    """One conv called twice and a Linear over extra dimensions: every call and row is charged."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.head = nn.Conv2d(3, 4, 1)
        self.fc = nn.Linear(8, 2)

    def forward(self, x):
        return self.fc(self.head(self.conv(self.conv(x))).flatten(2)[..., :8])  # fc: every row of 4 channels


def test_reused_layers_are_charged_per_call():
    model = _Twice()
    x = torch.randn(1, 3, 6, 6)
    counts = traced_counts(model, build_groups(model, x))
    assert counts is not None
    assert counts.layers["conv"].macs == 2 * 36 * 3 * 3 * 9
    assert counts == count(model, example_inputs=x)


def _plain() -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3), nn.Flatten(), nn.Linear(16, 2))


def test_none_where_the_trace_is_not_counts():
    model = _plain()
    batch = torch.randn(2, 3, 6, 6)
    assert traced_counts(model, build_groups(model, batch)) is None  # count runs one sample, the trace two
    groups = build_groups(model, batch[:1])
    assert traced_counts(model, groups) == count(model, example_inputs=batch)
    assert traced_counts(_plain(), groups) is None  # another model than the traced one
    assert traced_counts(model, []) is None
    remove_(model, next(g for g in groups if g.key == "2"), [0])  # "0" is the stem: kept by default
    assert traced_counts(model, groups) is None  # cut since the trace: its MACs are stale
