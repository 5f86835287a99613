"""Every registered method on an encoder-decoder with a ConvTranspose2d (a U-Net's upsampling path).

A transposed conv stores its weight as (in, out, *kernel): its filters are columns. The structure
layer cuts and masks them along that dim; here every method runs a short training on such a model
and what it scores, masks or merges is checked on the transposed conv itself.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from prunus.criteria import score
from prunus.engine import Trainer
from prunus.methods import create_method, list_methods, method_example
from prunus.methods._clustering import unsupported_reason
from prunus.models.info import update_info
from prunus.structure import build_groups, soft_mask_

from ._tiny import tiny_config, tiny_data


class TinyUNet(nn.Module):
    def __init__(self, in_channels: int, num_classes: int) -> None:
        super().__init__()
        self.stem, self.bn0 = nn.Conv2d(in_channels, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8)
        self.down, self.bn1 = nn.Conv2d(8, 16, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(16)
        self.up, self.bn2 = nn.ConvTranspose2d(16, 8, 2, stride=2, bias=False), nn.BatchNorm2d(8)
        self.fuse, self.bn3 = nn.Conv2d(16, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8)
        self.fc = nn.Linear(8, num_classes)
        update_info(self, stem="stem", classifier="fc", input_shape=(in_channels, 12, 12))

    def forward(self, x):
        s = F.relu(self.bn0(self.stem(x)))
        u = F.relu(self.bn2(self.up(F.relu(self.bn1(self.down(s))))))
        return self.fc(F.relu(self.bn3(self.fuse(torch.cat([s, u], 1)))).mean((2, 3)))


def _model(data) -> TinyUNet:
    torch.manual_seed(0)
    return TinyUNet(data.in_channels, data.num_classes)


X = torch.randn(2, 1, 12, 12, generator=torch.Generator().manual_seed(0))


def test_a_transposed_convs_filters_are_its_columns_for_the_criteria_and_the_masks():
    model = TinyUNet(1, 10).eval()
    up = {g.key: g for g in build_groups(model, X)}["up"]
    torch.testing.assert_close(score(model, up, "l1"), model.up.weight.abs().sum((0, 2, 3)))
    soft_mask_(model, up, [1, 6])
    assert model.up.weight[:, [1, 6]].abs().sum() == 0
    assert model.up.weight[:, [0, 2, 3, 4, 5, 7]].abs().min() > 0  # its other columns and no rows
    assert model.up.weight[[1, 6]].abs().sum() > 0


def test_csgd_says_why_it_does_not_cluster_a_transposed_convs_filters_and_clusters_its_inputs():
    model = TinyUNet(1, 10).eval()
    groups = {g.key: g for g in build_groups(model, X)}
    assert unsupported_reason(groups["up"], model) == (
        "up.weight holds its channels along dim 1 (a transposed conv's filters)"
    )
    assert unsupported_reason(groups["down"], model) is None  # the transposed conv only reads these: merged columns


@pytest.mark.parametrize("name", list_methods())
def test_every_method_trains_a_model_with_a_transposed_conv(name):
    data = tiny_data()
    model = _model(data)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    trainer = Trainer(model, data, tiny_config(), [create_method(name, **method_example(name))], None,
                      progress=False)  # fmt: skip
    trainer.fit()
    assert trainer.epoch == 2
    out = trainer.model.eval()(X)
    assert out.shape == (2, data.num_classes)
    assert torch.isfinite(out).all()
    changed = trainer.model.up.weight.shape != before["up.weight"].shape or not torch.equal(
        trainer.model.up.weight, before["up.weight"]
    )
    assert changed  # the transposed conv is trained (and cut, by the methods that prune)
