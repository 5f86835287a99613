"""A pruned model's history is replayed at a small probe input, unless the model only runs at its own size."""

from __future__ import annotations

import torch
from torch import nn

import prunus
from prunus.formats.limits import replay_shape
from prunus.models.info import update_info


class FixedSize(nn.Module):
    """Asserts its input size, as timm's fixed-size attention blocks (BoTNet, Visformer) do."""

    def __init__(self, side: int = 40) -> None:
        super().__init__()
        self.side = side
        self.a, self.b = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1)
        self.fc = nn.Linear(8, 4)
        update_info(self, classifier="fc")

    def forward(self, x):
        assert x.shape[-1] == self.side, f"input side {x.shape[-1]} != {self.side}"
        return self.fc(torch.relu(self.b(torch.relu(self.a(x)))).mean((2, 3)))


def build_fixed(side: int = 40) -> FixedSize:
    return FixedSize(side)


def test_a_model_that_asserts_its_input_size_is_replayed_at_that_size():
    assert replay_shape(lambda: FixedSize(40), (3, 40, 40)) == (3, 40, 40)  # its own assert rules 32 out


def test_a_pruned_fixed_size_model_saves_and_loads_to_the_same_outputs(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "fixed_net.py").write_text(
        "from tests.formats.test_replay_size import build_fixed as build\n", encoding="utf-8"
    )
    torch.manual_seed(0)
    model = build_fixed(40)
    pruned, _ = prunus.prune(model, torch.randn(1, 3, 40, 40), keep_macs=0.5)
    prunus.save(pruned, tmp_path / "m", input_shape=(3, 40, 40), factory="fixed_net:build", factory_kwargs={"side": 40})
    loaded = prunus.load(tmp_path / "m", trust_factory=True).eval()
    x = torch.randn(2, 3, 40, 40)
    torch.testing.assert_close(loaded(x), pruned.eval()(x), rtol=0, atol=0)
