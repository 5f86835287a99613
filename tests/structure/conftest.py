"""Hand-made tiny nets covering every coupling the structure engine must handle, plus helpers."""

from __future__ import annotations

import types

import pytest
import torch
from torch import nn

from prunus.models.info import update_info
from prunus.structure import build_groups, lowest_channels


def _cbr(cin: int, cout: int, **kw) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, padding=1, bias=False, **kw), nn.BatchNorm2d(cout), nn.ReLU()]


class Chain(nn.Module):
    """conv -> conv -> conv -> pool -> fc; no declared stem/classifier, so the default rule applies."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(*_cbr(3, 8), *_cbr(8, 8), *_cbr(8, 6))
        self.fc = nn.Linear(6, 5)

    def forward(self, x):
        return self.fc(self.features(x).mean((2, 3)))


class Residual(nn.Module):
    """An identity block and a downsampling block whose stream is written by two convs (d and e)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem, self.bn0 = nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8)
        self.a, self.bna = nn.Conv2d(8, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8)
        self.b, self.bnb = nn.Conv2d(8, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8)
        self.c, self.bnc = nn.Conv2d(8, 6, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(6)
        self.d, self.bnd = nn.Conv2d(6, 6, 3, padding=1, bias=False), nn.BatchNorm2d(6)
        self.e, self.bne = nn.Conv2d(8, 6, 1, stride=2, bias=False), nn.BatchNorm2d(6)
        self.fc = nn.Linear(6, 5)
        update_info(self, stem="stem", classifier="fc")

    def forward(self, x):
        x = torch.relu(self.bn0(self.stem(x)))
        x = torch.relu(x + self.bnb(self.b(torch.relu(self.bna(self.a(x))))))
        y = self.bnd(self.d(torch.relu(self.bnc(self.c(x)))))
        x = torch.relu(y + self.bne(self.e(x)))
        return self.fc(x.mean((2, 3)))


class Concat(nn.Module):
    """Two convs concatenated, one BN over the concatenation, then a consumer conv."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.b, self.c = nn.Conv2d(4, 6, 3, padding=1), nn.Conv2d(4, 5, 1)
        self.bn = nn.BatchNorm2d(11)
        self.f, self.bnf = nn.Conv2d(11, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8)
        self.fc = nn.Linear(8, 5)
        update_info(self, stem="stem", classifier="fc")

    def forward(self, x):
        x = torch.relu(self.stem(x))
        x = torch.relu(self.bn(torch.cat([self.b(x), self.c(x)], 1)))
        return self.fc(torch.relu(self.bnf(self.f(x))).mean((2, 3)))


class Depthwise(nn.Module):
    """MobileNetV2-style block: expand 1x1 -> depthwise 3x3 -> project 1x1, with a residual."""

    def __init__(self) -> None:
        super().__init__()
        self.stem, self.bn0 = nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8)
        self.expand, self.bn1 = nn.Conv2d(8, 16, 1, bias=False), nn.BatchNorm2d(16)
        self.dw, self.bn2 = nn.Conv2d(16, 16, 3, padding=1, groups=16, bias=True), nn.BatchNorm2d(16)
        self.project, self.bn3 = nn.Conv2d(16, 8, 1, bias=False), nn.BatchNorm2d(8)
        self.head, self.bn4 = nn.Conv2d(8, 12, 1, bias=False), nn.BatchNorm2d(12)
        self.fc = nn.Linear(12, 5)
        update_info(self, stem="stem", classifier="fc")

    def forward(self, x):
        x = torch.relu(self.bn0(self.stem(x)))
        y = nn.functional.relu6(self.bn1(self.expand(x)))
        y = nn.functional.relu6(self.bn2(self.dw(y)))
        x = x + self.bn3(self.project(y))
        return self.fc(torch.relu(self.bn4(self.head(x))).mean((2, 3)))


class Grouped(nn.Module):
    """A grouped conv (groups=2) between two plain convs."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.p, self.bnp = nn.Conv2d(4, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8)
        self.g, self.bng = nn.Conv2d(8, 8, 3, padding=1, groups=2, bias=False), nn.BatchNorm2d(8)
        self.q, self.bnq = nn.Conv2d(8, 6, 3, padding=1, bias=False), nn.BatchNorm2d(6)
        self.fc = nn.Linear(6, 5)
        update_info(self, stem="stem", classifier="fc")

    def forward(self, x):
        x = torch.relu(self.stem(x))
        x = torch.relu(self.bnp(self.p(x)))
        x = torch.relu(self.bng(self.g(x)))
        return self.fc(torch.relu(self.bnq(self.q(x))).mean((2, 3)))


class Flatten(nn.Module):
    """conv -> flatten -> Linear -> Linear: each conv channel owns a block of 16 Linear inputs."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.conv, self.bn = nn.Conv2d(4, 6, 3, stride=2, padding=1), nn.BatchNorm2d(6)
        self.fc1 = nn.Linear(6 * 4 * 4, 10)
        self.fc2 = nn.Linear(10, 5)
        update_info(self, stem="stem", classifier="fc2")

    def forward(self, x):
        x = torch.relu(self.bn(self.conv(torch.relu(self.stem(x)))))
        return self.fc2(torch.relu(self.fc1(torch.flatten(x, 1))))


NETS = {"chain": Chain, "residual": Residual, "concat": Concat, "depthwise": Depthwise, "grouped": Grouped}
NETS["flatten"] = Flatten


def randomize_(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random weights and BN statistics, so no channel is accidentally zero or identical."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            # fan-in scaling keeps logits O(1), so float32 rounding stays far below the 1e-5 tolerance
            scale = (p[0].numel() ** -0.5) if p.dim() > 1 else 0.3
            p.copy_(torch.randn(p.shape, generator=gen) * scale)
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.weight.copy_(torch.rand(m.weight.shape, generator=gen) + 0.5)
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=gen) * 0.2)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=gen) + 0.5)
    return model


def pick(groups, fraction: float = 0.4, seed: int = 1) -> dict[str, list[int]]:
    """About `fraction` of the channels of every prunable group, chosen at random but valid."""
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for g in groups:
        if g.prunable:
            scores = torch.rand(g.num_channels, generator=gen)
            out[g.key] = lowest_channels(g, scores, max(g.blocks, int(g.num_channels * fraction)))
    return out


def num_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


X = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(3))


@pytest.fixture
def nets():
    """Namespace with the net classes, the input batch and the helpers above."""
    return types.SimpleNamespace(
        NETS=NETS, X=X, randomize_=randomize_, pick=pick, num_params=num_params, build_groups=build_groups
    )
