"""Tiny hand-made models, one per structure class that broke pruning on other people's CNNs (issue 29).

Each reproduces the pattern of a timm family (named in its docstring) with a few channels, so the
tests run in seconds without timm. `build(name)` is also the factory `prunus.load` rebuilds them
with (the tests register this module as `prunus_test_families`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

from prunus.models.info import update_info


def cbr(cin: int, cout: int, k: int = 3, **kw) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, padding=k // 2, bias=False, **kw), nn.BatchNorm2d(cout), nn.ReLU())


class MixedConv(nn.Module):
    """mixnet's MixedConv2d: `torch.split` with explicit sizes held in an attribute, one kernel size per piece."""

    def __init__(self, splits: list[int]) -> None:
        super().__init__()
        self.splits = list(splits)
        self.convs = nn.ModuleList(
            nn.Conv2d(s, s, 3 + 2 * i, padding=1 + i, groups=s, bias=False) for i, s in enumerate(splits)
        )

    def forward(self, x):
        pieces = torch.split(x, self.splits, 1)
        return torch.cat([conv(p) for conv, p in zip(self.convs, pieces, strict=True)], 1)


class MixNet(nn.Module):
    """Explicit split sizes (mixnet) and a chunk whose halves feed convs of different widths."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = cbr(3, 6)
        self.pw, self.bn1 = nn.Conv2d(6, 12, 1, bias=False), nn.BatchNorm2d(12)
        self.mix, self.bn2 = MixedConv([4, 8]), nn.BatchNorm2d(12)
        self.pwl, self.bn3 = nn.Conv2d(12, 6, 1, bias=False), nn.BatchNorm2d(6)
        self.mid = cbr(6, 10, 1)
        self.a, self.b = nn.Conv2d(5, 3, 1), nn.Conv2d(5, 7, 3, padding=1)
        self.fc = nn.Linear(10, 5)
        update_info(self, stem="stem.0", classifier="fc")

    def forward(self, x):
        x = self.stem(x)
        y = F.relu(self.bn1(self.pw(x)))
        y = F.relu(self.bn2(self.mix(y)))
        x = self.mid(x + self.bn3(self.pwl(y)))
        p, q = torch.chunk(x, 2, 1)
        x = F.relu(torch.cat([self.a(p), self.b(q)], 1))
        return self.fc(x.mean((2, 3)))


class Res2Block(nn.Module):
    """res2net's Bottle2neck: `torch.split(x, self.width)` into `scale` pieces, each added to the previous branch."""

    def __init__(self, c: int, width: int = 4, scale: int = 3) -> None:
        super().__init__()
        self.width, self.scale = width, scale
        self.conv1, self.bn1 = nn.Conv2d(c, width * scale, 1, bias=False), nn.BatchNorm2d(width * scale)
        self.convs = nn.ModuleList(nn.Conv2d(width, width, 3, padding=1, bias=False) for _ in range(scale - 1))
        self.bns = nn.ModuleList(nn.BatchNorm2d(width) for _ in range(scale - 1))
        self.conv3, self.bn3 = nn.Conv2d(width * scale, c, 1, bias=False), nn.BatchNorm2d(c)

    def forward(self, x):
        spx = torch.split(F.relu(self.bn1(self.conv1(x))), self.width, 1)
        outs, sp = [], None
        for i, (conv, bn) in enumerate(zip(self.convs, self.bns, strict=True)):
            sp = spx[i] if i == 0 else sp + spx[i]
            sp = F.relu(bn(conv(sp)))
            outs.append(sp)
        outs.append(spx[-1])
        return F.relu(self.bn3(self.conv3(torch.cat(outs, 1))) + x)


class Res2Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = cbr(3, 8)
        self.block = Res2Block(8)
        self.fc = nn.Linear(8, 5)
        update_info(self, stem="stem.0", classifier="fc")

    def forward(self, x):
        return self.fc(self.block(self.stem(x)).mean((2, 3)))


class CSPNet(nn.Module):
    """cspnet's CSPStage: `x.split(self.expand_chs // 2)` (the size computed from the whole width)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = cbr(3, 6)
        self.expand_chs = 8
        self.conv_exp = cbr(6, self.expand_chs, 1)
        self.blocks = cbr(4, 4)
        self.conv_transition = cbr(8, 6, 1)
        self.fc = nn.Linear(6, 5)
        update_info(self, stem="stem.0", classifier="fc")

    def forward(self, x):
        xs, xb = self.conv_exp(self.stem(x)).split(self.expand_chs // 2, dim=1)
        x = self.conv_transition(torch.cat([xs, self.blocks(xb)], dim=1))
        return self.fc(x.mean((2, 3)))


class DualPathBlock(nn.Module):
    """dpn's DualPathBlock: one conv writes both paths; `x[:, :r]` joins the residual sum, `x[:, r:]` the dense concat."""

    def __init__(self, cin: int, r: int, inc: int) -> None:
        super().__init__()
        self.r = r
        self.a, self.b = cbr(cin, 8, 1), cbr(8, 8)
        self.c = nn.Conv2d(8, r + inc, 1, bias=False)

    def forward(self, x):
        resid, dense = x
        x_s = self.c(self.b(self.a(torch.cat([resid, dense], 1))))
        return resid + x_s[:, : self.r], torch.cat([dense, x_s[:, self.r :]], 1)


class DPN(nn.Module):
    """Two dual-path blocks on a stream split by slices whose bounds live in attributes."""

    def __init__(self, literal: bool = False) -> None:
        super().__init__()
        self.literal = literal
        self.stem = cbr(3, 10)
        self.proj = nn.Conv2d(10, 10, 1, bias=False)
        self.resid = 6
        self.b1, self.b2 = DualPathBlock(10, 6, 3), DualPathBlock(13, 6, 2)
        self.bn = nn.BatchNorm2d(15)
        self.fc = nn.Linear(15, 5)
        update_info(self, stem="stem.0", classifier="fc")

    def forward(self, x):
        x = self.proj(self.stem(x))
        # a bound written in the code cannot follow a cut: that stream must be left whole
        x = (x[:, :6], x[:, 6:]) if self.literal else (x[:, : self.resid], x[:, self.resid :])
        x = self.b2(self.b1(x))
        return self.fc(F.relu(self.bn(torch.cat(x, 1))).mean((2, 3)))


class SelectiveKernel(nn.Module):
    """skresnet's SelectiveKernel: input split in equal pieces, paths stacked, summed, attention over paths."""

    def __init__(self, c: int, paths: int = 2) -> None:
        super().__init__()
        self.split_size = c // paths
        self.paths = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(self.split_size, c, 3, padding=1 + i, dilation=1 + i, bias=False),
                nn.BatchNorm2d(c),
                nn.ReLU(),
            )
            for i in range(paths)
        )
        self.num_paths = paths
        self.fc_reduce, self.bn = nn.Conv2d(c, 4, 1, bias=False), nn.BatchNorm2d(4)
        self.fc_select = nn.Conv2d(4, c * paths, 1, bias=False)

    def forward(self, x):
        x_paths = torch.stack([p(t) for p, t in zip(self.paths, torch.split(x, self.split_size, 1), strict=True)], 1)
        a = self.fc_select(F.relu(self.bn(self.fc_reduce(x_paths.sum(1).mean((2, 3), keepdim=True)))))
        b, c, h, w = a.shape
        a = torch.softmax(a.view(b, self.num_paths, c // self.num_paths, h, w), dim=1)
        return (x_paths * a).sum(1)


class SKNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = cbr(3, 6)
        self.pre = cbr(6, 8)
        self.sk = SelectiveKernel(8)
        self.conv = nn.Conv2d(8, 8, 1, bias=False)
        self.fc = nn.Linear(8, 5)
        update_info(self, stem="stem.0", classifier="fc")

    def forward(self, x):
        x = F.relu(self.conv(self.sk(self.pre(self.stem(x)))))
        return self.fc(x.mean((2, 3)))


class ScaledConv(nn.Conv2d):
    """A conv whose module holds a per-output-channel gain: `weight * gain` (exact on both sides)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.gain = nn.Parameter(torch.ones(self.out_channels, 1, 1, 1))

    def forward(self, x):
        return self._conv_forward(x, self.weight * self.gain, self.bias)


class StdConv(nn.Conv2d):
    """nf-resnet's ScaledStdConv2d: the weight standardised over each filter's inputs, times a per-channel gain."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.gain = nn.Parameter(torch.ones(self.out_channels, 1, 1, 1))
        self.scale = self.weight[0].numel() ** -0.5

    def forward(self, x):
        w = F.batch_norm(
            self.weight.reshape(1, self.out_channels, -1), None, None,
            weight=(self.gain * self.scale).view(-1), training=True, momentum=0.0, eps=1e-6,
        ).reshape_as(self.weight)  # fmt: skip
        return self._conv_forward(x, w, self.bias)


class NFNet(nn.Module):
    """Per-output-channel gains: `a`/`b` scale their weight, `c` standardises it. `c`'s outputs go
    (a plain conv reads them); its inputs stay (standardising over them changes every output when
    one goes), so the group feeding it is left whole."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.a = ScaledConv(8, 12, 3, padding=1)
        self.b = ScaledConv(12, 8, 1)
        self.d = ScaledConv(8, 10, 1)
        self.c = StdConv(10, 12, 3, padding=1)
        self.e = nn.Conv2d(12, 8, 1)
        self.fc = nn.Linear(8, 5)
        update_info(self, stem="stem", classifier="fc")

    def forward(self, x):
        x = F.relu(self.stem(x))
        x = F.relu(self.b(F.relu(self.a(x))))
        x = F.relu(self.e(F.relu(self.c(F.relu(self.d(x))))))
        return self.fc(x.mean((2, 3)))


class GNNet(nn.Module):
    """GroupNorm everywhere: channels go in whole GroupNorm groups; GroupNorm(1, C) leaves its group whole."""

    def __init__(self, one_group: bool = False) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.c1, self.gn1 = nn.Conv2d(8, 12, 3, padding=1, bias=False), nn.GroupNorm(4, 12)
        self.c2, self.gn2 = nn.Conv2d(12, 8, 1, bias=False), nn.GroupNorm(1 if one_group else 2, 8)
        self.c3 = nn.Conv2d(8, 8, 1)
        self.fc = nn.Linear(8, 5)
        update_info(self, stem="stem", classifier="fc")

    def forward(self, x):
        x = F.relu(self.stem(x))
        x = F.relu(self.gn2(self.c2(F.relu(self.gn1(self.c1(x))))))
        return self.fc(F.relu(self.c3(x)).mean((2, 3)))


class Conv1dNet(nn.Module):
    """An audio-style 1-d CNN with a residual block; input (C, L)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv1d(2, 8, 5, padding=2)
        self.c1, self.bn1 = nn.Conv1d(8, 12, 3, padding=1, bias=False), nn.BatchNorm1d(12)
        self.c2, self.bn2 = nn.Conv1d(12, 8, 3, padding=1, bias=False), nn.BatchNorm1d(8)
        self.c3 = nn.Conv1d(8, 10, 1)
        self.fc = nn.Linear(10, 5)

    def forward(self, x):
        x = F.relu(self.stem(x))
        x = F.relu(x + self.bn2(self.c2(F.relu(self.bn1(self.c1(x))))))
        return self.fc(F.relu(self.c3(x)).mean(2))


class Conv3dNet(nn.Module):
    """A volumetric CNN; input (C, D, H, W)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv3d(1, 6, 3, padding=1)
        self.c1, self.bn1 = nn.Conv3d(6, 8, 3, padding=1, bias=False), nn.BatchNorm3d(8)
        self.c2, self.bn2 = nn.Conv3d(8, 6, 1, bias=False), nn.BatchNorm3d(6)
        self.c3 = nn.Conv3d(6, 8, 3, padding=1, stride=2)
        self.fc = nn.Linear(8, 5)

    def forward(self, x):
        x = F.relu(self.stem(x))
        x = F.relu(x + self.bn2(self.c2(F.relu(self.bn1(self.c1(x))))))
        return self.fc(F.relu(self.c3(x)).mean((2, 3, 4)))


class TwoInOut(nn.Module):
    """Two inputs (an image and an auxiliary map), two outputs (a classifier and a regressor head)."""

    def __init__(self) -> None:
        super().__init__()
        self.ia, self.ib = nn.Conv2d(3, 6, 3, padding=1), nn.Conv2d(1, 6, 3, padding=1)
        self.c1, self.bn1 = nn.Conv2d(6, 10, 3, padding=1, bias=False), nn.BatchNorm2d(10)
        self.c2 = nn.Conv2d(10, 6, 1)
        self.head_a, self.head_b = nn.Linear(6, 5), nn.Linear(6, 2)
        update_info(self, stem="ia", classifier="head_a")

    def forward(self, img, aux):
        x = F.relu(self.ia(img) + self.ib(aux))
        f = F.relu(self.c2(F.relu(self.bn1(self.c1(x))))).mean((2, 3))
        return self.head_a(f), self.head_b(f)


class ECA(nn.Module):
    """ecaresnet's ECA: a 1-d conv across the channel means (mixes neighbouring channels: its stream stays)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(1, 1, 3, padding=1, bias=False)

    def forward(self, x):
        y = self.conv(x.mean((2, 3)).view(x.shape[0], 1, -1)).view(x.shape[0], -1, 1, 1).sigmoid()
        return x * y.expand_as(x)


class GlobalContext(nn.Module):
    """gcresnet's GlobalContext: a spatial softmax pools every channel (a matmul), an MLP scales them."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv_attn = nn.Conv2d(c, 1, 1)
        self.fc1, self.bn, self.fc2 = nn.Conv2d(c, 4, 1), nn.BatchNorm2d(4), nn.Conv2d(4, c, 1)

    def forward(self, x):
        b, c, h, w = x.shape
        attn = F.softmax(self.conv_attn(x).reshape(b, 1, h * w), dim=-1).unsqueeze(3)
        context = (x.reshape(b, 1, c, h * w) @ attn).view(b, c, 1, 1)
        return x * self.fc2(F.relu(self.bn(self.fc1(context)))).sigmoid()


class AttentionNet(nn.Module):
    """Channel attention (ECA, global context) and a one-channel spatial gate."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = cbr(3, 8)
        self.c1, self.eca = cbr(8, 12), ECA()
        self.c2, self.gc = cbr(12, 8), GlobalContext(8)
        self.gate = nn.Conv2d(8, 1, 1)  # a one-channel spatial gate over all channels
        self.fc = nn.Linear(8, 5)
        update_info(self, stem="stem.0", classifier="fc")

    def forward(self, x):
        x = self.gc(self.c2(self.eca(self.c1(self.stem(x)))))
        x = x * torch.sigmoid(self.gate(x))
        return self.fc(x.mean((2, 3)))


class Shuffle(nn.Module):
    """shufflenet: grouped convs around a channel shuffle (view, transpose, reshape), and a
    shufflenet-v2 block: chunk in halves, one half through a branch, concat, shuffle."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = cbr(3, 8)
        self.g = nn.Conv2d(8, 8, 3, padding=1, groups=2, bias=False)
        self.c = nn.Conv2d(8, 8, 1, groups=2, bias=False)
        self.pre = cbr(8, 8, 1)
        self.branch = cbr(4, 4)
        self.post = nn.Conv2d(8, 6, 1)
        self.fc = nn.Linear(6, 5)
        update_info(self, stem="stem.0", classifier="fc")

    @staticmethod
    def shuffle(x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        return x.view(b, 2, c // 2, h, w).transpose(1, 2).reshape(b, c, h, w)

    def forward(self, x):
        x = self.shuffle(F.relu(self.g(self.stem(x))))
        x = self.pre(F.relu(self.c(x)))
        x1, x2 = x.chunk(2, dim=1)
        x = self.shuffle(torch.cat([x1, self.branch(x2)], 1))
        return self.fc(F.relu(self.post(x)).mean((2, 3)))


class ScalarArgs(nn.Module):
    """Element-wise ops with scalar arguments between convs: StarReLU's `s * relu(x) ** 2` (MetaFormer /
    PoolFormer v2), clamp (ReLU6 written by hand) and threshold; each keeps a masked channel at zero."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.a, self.b, self.c = nn.Conv2d(8, 12, 1), nn.Conv2d(12, 10, 3, padding=1), nn.Conv2d(10, 8, 1)
        self.scale = nn.Parameter(torch.tensor(0.8))
        self.fc = nn.Linear(8, 5)
        update_info(self, stem="stem", classifier="fc")

    def forward(self, x):
        x = F.relu(self.stem(x))
        x = self.scale * F.relu(self.a(x)) ** 2  # StarReLU (its bias left out: a constant on a masked channel)
        x = torch.clamp(self.b(x), min=0.0, max=6.0)
        x = F.threshold(self.c(x), 0.1, 0.0)
        return self.fc(x.mean((2, 3)))


class SizeFromInput(nn.Module):
    """A branch reshaped with the channel count of the block's INPUT (timm's LambdaLayer reshapes its
    value path with `C = x.shape[1]`): right only while both widths agree, so neither may be cut."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.pre, self.v, self.post = nn.Conv2d(8, 8, 1), nn.Conv2d(8, 8, 1), nn.Conv2d(8, 8, 1)
        self.fc = nn.Linear(8, 5)
        update_info(self, stem="stem", classifier="fc")

    def forward(self, x):
        x = F.relu(self.pre(F.relu(self.stem(x))))
        b, c, h, w = x.shape
        out = self.v(x).reshape(b, c, h * w).reshape(b, c, h, w)
        return self.fc(F.relu(self.post(out)).mean((2, 3)))


class SizeOneFromInput(SizeFromInput):
    """The same, with the width read by `x.size(1)` (one dim of the shape, the channel one)."""

    def forward(self, x):
        x = F.relu(self.pre(F.relu(self.stem(x))))
        c = x.size(1)  # the only size read from `x`: it alone marks `pre` for the trial cut
        v = self.v(x)
        out = v.reshape(-1, c, v.size(2) * v.size(3)).reshape(v.shape)
        return self.fc(F.relu(self.post(out)).mean((2, 3)))


class SpatialReads(nn.Module):
    """Reads of `x.ndim` and of spatial sizes (`x.size(-1)`, timm's `_assert(x.ndim == 4)` in every
    BatchNormAct2d): no channel width, so nothing here needs the trial cut."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.a, self.b = nn.Conv2d(8, 8, 3, padding=1), nn.Conv2d(8, 8, 1)
        self.fc = nn.Linear(8, 5)
        update_info(self, stem="stem", classifier="fc")

    def forward(self, x):
        y = F.relu(self.a(F.relu(self.stem(x))))
        assert y.ndim == 4
        y = F.interpolate(y, size=(y.size(-2), y.size(3)))
        return self.fc(F.relu(self.b(y)).mean((2, 3)))


class StarReLU(nn.Module):
    """MetaFormer's `s * relu(x) ** 2 + b` with scalar s and b: a masked channel leaves it as b, not 0."""

    def __init__(self) -> None:
        super().__init__()
        self.scale, self.bias = nn.Parameter(torch.tensor(0.8)), nn.Parameter(torch.tensor(-0.3))

    def forward(self, x):
        return self.scale * F.relu(x) ** 2 + self.bias


class ConstantChannels(nn.Module):
    """Masked channels that reach their reader as a nonzero constant (a scalar bias after the activation:
    StarReLU in PoolFormer v2 / ConvFormer, HGNetV2's learnable affine block): into a 1x1 conv without a
    bias (it gets one), a Linear on channels-last tokens, and a padded 3x3 conv, where the constant
    is not one shift at the borders (left whole)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.fc1, self.act1, self.fc2 = nn.Conv2d(8, 16, 1, bias=False), StarReLU(), nn.Conv2d(16, 8, 1, bias=False)
        self.lin1, self.act2, self.lin2 = nn.Linear(8, 12), StarReLU(), nn.Linear(12, 8)
        self.c3, self.c4 = nn.Conv2d(8, 6, 1), nn.Conv2d(6, 8, 3, padding=1)
        self.lab_scale, self.lab_bias = nn.Parameter(torch.tensor(1.2)), nn.Parameter(torch.tensor(0.4))
        self.fc = nn.Linear(8, 5)
        update_info(self, stem="stem", classifier="fc")

    def forward(self, x):
        x = F.relu(self.stem(x))
        x = x + self.fc2(self.act1(self.fc1(x)))
        t = x.permute(0, 2, 3, 1)
        x = (t + self.lin2(self.act2(self.lin1(t)))).permute(0, 3, 1, 2)
        x = x + self.c4(self.lab_scale * F.relu(self.c3(x)) + self.lab_bias)
        return self.fc(x.mean((2, 3)))


class InputShift(nn.Module):
    """A masked channel that reaches a 1x1 conv as a value that depends on the input (the mean over the
    channels of another tensor, broadcast onto every channel): no constant to fold, so it stays whole."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.a, self.b = nn.Conv2d(8, 6, 1), nn.Conv2d(6, 8, 1)
        self.fc = nn.Linear(8, 5)
        update_info(self, stem="stem", classifier="fc")

    def forward(self, x):
        x = F.relu(self.stem(x))
        return self.fc(F.relu(self.b(F.relu(self.a(x)) + x.mean(1, keepdim=True))).mean((2, 3)))


class QKAttention(nn.Module):
    """Single-head spatial self-attention with separate q, k, v 1x1 convs: the logits `q^T @ k` sum over
    the q and k channels, so channel i of q and channel i of k can only go together."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.q, self.k, self.v = nn.Conv2d(8, 6, 1), nn.Conv2d(8, 6, 1), nn.Conv2d(8, 10, 1)
        self.proj = nn.Conv2d(10, 8, 1)
        self.fc = nn.Linear(8, 5)
        update_info(self, stem="stem", classifier="fc")

    def forward(self, x):
        x = F.relu(self.stem(x))
        b, _, h, w = x.shape
        q, k, v = self.q(x).flatten(2), self.k(x).flatten(2), self.v(x).flatten(2)
        attn = (q.transpose(-2, -1) @ k * 0.5).softmax(-1)
        out = (v @ attn.transpose(-2, -1)).reshape(b, -1, h, w)
        return self.fc(F.relu(x + self.proj(out)).mean((2, 3)))


class FusedQKV(nn.Module):
    """One 1x1 conv writes q, k and v, split by a stored list of sizes: q_i and k_i go as a pair (the logits
    sum over them), each v channel alone. Units of unequal sizes, packed into pairs to be prunable."""

    def __init__(self, v: int = 8) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.sections = [4, 4, v]
        self.qkv, self.proj = nn.Conv2d(8, 8 + v, 1), nn.Conv2d(v, 8, 1)
        self.mlp1, self.mlp2 = nn.Conv2d(8, 12, 1), nn.Conv2d(12, 8, 1)
        self.fc = nn.Linear(8, 5)
        update_info(self, stem="stem", classifier="fc")

    def forward(self, x):
        x = F.relu(self.stem(x))
        b, _, h, w = x.shape
        q, k, v = (t.flatten(2) for t in self.qkv(x).split(self.sections, dim=1))
        attn = (q.transpose(-2, -1) @ k * 0.5).softmax(-1)
        x = x + self.proj((v @ attn.transpose(-2, -1)).reshape(b, -1, h, w))
        return self.fc(F.relu(x + self.mlp2(F.relu(self.mlp1(x)))).mean((2, 3)))


class RmsNorm2d(nn.Module):
    """timm's RmsNorm2d, written out: each position divided by the root mean square over its channels."""

    def __init__(self, channels: int, eps: float) -> None:
        super().__init__()
        self.eps, self.normalized_shape = eps, (channels,)
        self.weight = nn.Parameter(torch.ones(channels))

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(1, keepdim=True) + self.eps) * self.weight.reshape(1, -1, 1, 1)


class GlobalResponseNorm(nn.Module):
    """ConvNeXt-V2's GRN on channels-last tokens: each channel's spatial L2 norm over their mean across channels."""

    def __init__(self, channels: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight, self.bias = nn.Parameter(torch.zeros(channels)), nn.Parameter(torch.zeros(channels))

    def forward(self, x):
        g = x.norm(p=2, dim=(1, 2), keepdim=True)
        n = g / (g.mean(dim=-1, keepdim=True) + self.eps)
        return x + torch.addcmul(self.bias, self.weight, x * n)


class CenteredNorm(nn.Module):
    """A LayerNorm over the channels written by hand: the mean it subtracts changes when a channel goes, and no
    rescale of eps and weight puts it back, so its group stays whole."""

    def __init__(self, channels: int, eps: float) -> None:
        super().__init__()
        self.eps, self.weight = eps, nn.Parameter(torch.ones(channels))

    def forward(self, x):
        x = x - x.mean(1, keepdim=True)
        return x * torch.rsqrt(x.pow(2).mean(1, keepdim=True) + self.eps) * self.weight.reshape(1, -1, 1, 1)


class StatNorms(nn.Module):
    """Normalisations by a statistic over the channels (RMSNorm channels-first, torch's nn.RMSNorm on
    channels-last tokens, GRN): exact to prune once eps and weight are rescaled. The eps values are large so a
    cut that forgets to rescale them shows in the outputs. A hand-written LayerNorm stays whole."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.a, self.rms, self.b = nn.Conv2d(8, 12, 1), RmsNorm2d(12, eps=0.5), nn.Conv2d(12, 8, 1)
        self.lin1, self.grn, self.lin2 = nn.Linear(8, 16), GlobalResponseNorm(16, eps=0.3), nn.Linear(16, 8)
        self.c, self.trms, self.d = nn.Conv2d(8, 10, 1), nn.RMSNorm(10, eps=0.4), nn.Conv2d(10, 8, 1)
        self.e, self.centered, self.f = nn.Conv2d(8, 6, 1), CenteredNorm(6, eps=0.2), nn.Conv2d(6, 8, 1)
        self.fc = nn.Linear(8, 5)
        update_info(self, stem="stem", classifier="fc")

    def forward(self, x):
        x = F.relu(self.stem(x))
        x = x + self.b(F.relu(self.rms(self.a(x))))
        t = x.permute(0, 2, 3, 1)
        x = (t + self.lin2(self.grn(F.gelu(self.lin1(t))))).permute(0, 3, 1, 2)
        x = x + self.d(F.relu(self.trms(self.c(x).permute(0, 2, 3, 1)).permute(0, 3, 1, 2)))
        x = x + self.f(F.relu(self.centered(self.e(x))))
        return self.fc(x.mean((2, 3)))


class MixedPointwise(nn.Module):
    """timm's MixedConv2d as a block's last conv: two convs' outputs concatenated, then added to the
    stream `s` writes. Each conv keeps one of its rows (a cut used to empty one: timm's mixnet_s)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.s = nn.Conv2d(8, 8, 1)
        self.expand = nn.Conv2d(8, 12, 1)
        self.pwl = nn.ModuleList([nn.Conv2d(6, 4, 1), nn.Conv2d(6, 4, 1)])
        self.fc = nn.Linear(8, 5)
        update_info(self, stem="stem", classifier="fc")

    def forward(self, x):
        x = self.s(F.relu(self.stem(x)))
        a, b = torch.split(F.relu(self.expand(x)), [6, 6], 1)
        return self.fc((x + torch.cat([self.pwl[0](a), self.pwl[1](b)], 1)).mean((2, 3)))


class SplitPiece(nn.Module):
    """Stream = s + cat(a, b); a's output is also split [2, 2] for two heads: a's pieces lie inside a's rows
    (the fixed split sizes leave the stream whole; its segments are what is under test)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.s = nn.Conv2d(8, 8, 1)
        self.a = nn.Conv2d(8, 4, 1)
        self.b = nn.Conv2d(8, 4, 1)
        self.h = nn.ModuleList([nn.Conv2d(2, 3, 1), nn.Conv2d(2, 3, 1)])
        self.fc = nn.Linear(14, 5)
        update_info(self, stem="stem", classifier="fc")

    def forward(self, x):
        x = self.s(F.relu(self.stem(x)))
        a = self.a(x)
        p, q = torch.split(a, [2, 2], 1)
        y = x + torch.cat([a, self.b(x)], 1)
        return self.fc(torch.cat([y, self.h[0](p), self.h[1](q)], 1).mean((2, 3)))


class Doubled(nn.Module):
    """A user parametrization with a right inverse: the weight used is twice the one stored."""

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return 2 * w

    def right_inverse(self, w: torch.Tensor) -> torch.Tensor:
        return w / 2


class OwnForwardConv(nn.Conv2d):
    """A user conv with a forward of its own: probed, and its groups checked by a trial cut on the model."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x)


class Parametrized(nn.Module):
    """Parametrized weights (torch.nn.utils.parametrize): a cut or mask goes through their right inverse.

    weight_norm (a user conv, whose groups the trial cut masks and cuts on the model itself and puts
    back, and the classifier) and a user parametrization are cut and masked exactly;
    spectral_norm keeps power-iteration vectors as long as its weight, so the channels it writes and
    reads stay (a cut used to leave them behind: the pruned model failed in its first forward)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.wn = nn.utils.parametrizations.weight_norm(OwnForwardConv(8, 8, 3, padding=1))
        self.scaled = nn.Conv2d(8, 8, 3, padding=1)
        parametrize.register_parametrization(self.scaled, "weight", Doubled())
        self.sn = nn.utils.parametrizations.spectral_norm(nn.Conv2d(8, 8, 3, padding=1))
        self.last = nn.Conv2d(8, 8, 1)
        self.fc = nn.utils.parametrizations.weight_norm(nn.Linear(8, 5))
        update_info(self, stem="stem", classifier="fc")

    def forward(self, x):
        x = F.relu(self.wn(F.relu(self.stem(x))))
        x = F.relu(self.last(F.relu(self.sn(F.relu(self.scaled(x))))))
        return self.fc(x.mean((2, 3)))


class TCN(nn.Module):
    """A temporal conv net (audio, sensors): weight-normed dilated Conv1d with padding="same" in residual blocks."""

    def __init__(self) -> None:
        super().__init__()
        wn = nn.utils.parametrizations.weight_norm
        self.stem = nn.Conv1d(2, 8, 3, padding="same")
        self.blocks = nn.ModuleList(
            nn.Sequential(
                wn(nn.Conv1d(8, 6, 3, padding="same", dilation=d)),
                nn.ReLU(),
                wn(nn.Conv1d(6, 8, 3, padding="same", dilation=d)),
            )  # fmt: skip
            for d in (1, 2, 4)
        )
        self.fc = nn.Linear(8, 5)
        update_info(self, stem="stem", classifier="fc")

    def forward(self, x):
        x = F.relu(self.stem(x))
        for block in self.blocks:
            x = F.relu(x + block(x))
        return self.fc(x.mean(-1))


class UNet(nn.Module):
    """An encoder-decoder (U-Net, segmentation heads): a ConvTranspose2d upsamples to the skip's size
    (`output_size=`), a BatchNorm follows it, and its channels are concatenated with the encoder's skip.
    A grouped ConvTranspose2d after them is not traced: the channels it reads and writes stay."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.down, self.bn_down = nn.Conv2d(8, 12, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(12)
        self.up, self.bn_up = nn.ConvTranspose2d(12, 6, 3, stride=2, padding=1), nn.BatchNorm2d(6)
        self.fuse = nn.Conv2d(14, 8, 3, padding=1)
        self.refine = nn.ConvTranspose2d(8, 8, 3, padding=1, groups=2)
        self.fc = nn.Linear(8, 5)
        update_info(self, stem="stem", classifier="fc")

    def forward(self, x):
        s = F.relu(self.stem(x))
        d = F.relu(self.bn_down(self.down(s)))
        u = F.relu(self.bn_up(self.up(d, output_size=s.shape[-2:])))
        y = F.relu(self.fuse(torch.cat([s, u], 1)))
        return self.fc(F.relu(self.refine(y)).mean((2, 3)))


class Decoder1d(nn.Module):
    """A 1-D decoder (audio, sensor autoencoders): dilated ConvTranspose1d layers with output_padding,
    one without a bias, feeding each other and a Conv1d."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv1d(2, 8, 3, padding=1)
        self.enc = nn.Conv1d(8, 10, 4, stride=2, padding=1)
        self.up1 = nn.ConvTranspose1d(10, 7, 3, stride=2, padding=1, output_padding=1, bias=False)
        self.up2 = nn.ConvTranspose1d(7, 6, 3, dilation=2, padding=2)
        self.out = nn.Conv1d(6, 4, 1)
        self.fc = nn.Linear(4, 5)
        update_info(self, stem="stem", classifier="fc")

    def forward(self, x):
        x = F.relu(self.enc(F.relu(self.stem(x))))
        x = F.relu(self.up2(F.relu(self.up1(x))))
        return self.fc(F.relu(self.out(x)).mean(-1))


class PixelShuffleNet(nn.Module):
    """A super-resolution tail (ESPCN): a conv writes r*r channels per output channel, pixel_shuffle moves
    them into space. Those r*r channels go together (a unit), and the conv after it loses the one they
    became (both were left whole: the conv read "positions of different channels along one channel")."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.a = nn.Conv2d(8, 8, 3, padding=1)
        self.to_space = nn.Conv2d(8, 12, 3, padding=1)
        self.shuffle = nn.PixelShuffle(2)
        self.after = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4, 5)
        update_info(self, stem="stem", classifier="fc")

    def forward(self, x):
        x = F.relu(self.a(F.relu(self.stem(x))))
        x = F.relu(self.after(self.shuffle(self.to_space(x))))
        return self.fc(x.mean((2, 3)))


class ShuffleAfterSigmoid(nn.Module):
    """pixel_shuffle blocks that mix channels after a sigmoid (not zero once masked) with plain ones: the
    shuffled channel is not zero once masked, so the conv writing them is left whole."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.a = nn.Conv2d(8, 8, 1)
        self.shuffle = nn.PixelShuffle(2)
        self.after = nn.Conv2d(2, 4, 3, padding=1)
        self.fc = nn.Linear(4, 5)
        update_info(self, stem="stem", classifier="fc")

    def forward(self, x):
        y = self.a(F.relu(self.stem(x)))
        y = torch.cat([torch.sigmoid(y[:, :2]), y[:, 2:4], torch.sigmoid(y[:, 4:6]), y[:, 6:]], 1)
        return self.fc(F.relu(self.after(self.shuffle(y))).mean((2, 3)))


MODELS = {
    "size_from_input": SizeFromInput,
    "size_one_from_input": SizeOneFromInput,
    "spatial_reads": SpatialReads,
    "scalar_args": ScalarArgs,
    "mixnet": MixNet,
    "res2net": Res2Net,
    "cspnet": CSPNet,
    "dpn": DPN,
    "sknet": SKNet,
    "nfnet": NFNet,
    "groupnorm": GNNet,
    "conv1d": Conv1dNet,
    "conv3d": Conv3dNet,
    "tuple_io": TwoInOut,
    "dict_io": TwoInOut,
    "attention": AttentionNet,
    "shuffle": Shuffle,
    "dpn_literal": lambda: DPN(literal=True),
    "groupnorm_one": lambda: GNNet(one_group=True),
    "constant_channels": ConstantChannels,
    "input_shift": InputShift,
    "qk_attention": QKAttention,
    "stat_norms": StatNorms,
    "fused_qkv": FusedQKV,
    "fused_qkv_odd": lambda: FusedQKV(v=7),  # 7 single v channels cannot fill pairs: left whole
    "mixed_pointwise": MixedPointwise,
    "split_piece": SplitPiece,
    "parametrized": Parametrized,
    "tcn": TCN,
    "pixel_shuffle": PixelShuffleNet,
    "shuffle_after_sigmoid": ShuffleAfterSigmoid,
    "unet": UNet,
    "decoder1d": Decoder1d,
}


def build(name: str) -> nn.Module:
    """The dense model `name` (the factory `prunus.load` calls)."""
    model = MODELS[name]()
    update_info(model, arch={"factory": "prunus_test_families:build", "kwargs": {"name": name}})
    return model


def inputs(name: str, batch: int = 2, seed: int = 0):
    """Example inputs of model `name`: a tensor, a tuple of tensors or a dict of keyword tensors."""
    gen = torch.Generator().manual_seed(seed)
    if name in ("conv1d", "tcn", "decoder1d"):
        return torch.randn(batch, 2, 16, generator=gen)
    if name == "conv3d":
        return torch.randn(batch, 1, 6, 6, 6, generator=gen)
    if name in ("tuple_io", "dict_io"):
        img, aux = torch.randn(batch, 3, 8, 8, generator=gen), torch.randn(batch, 1, 8, 8, generator=gen)
        return (img, aux) if name == "tuple_io" else {"img": img, "aux": aux}
    return torch.randn(batch, 3, 8, 8, generator=gen)


def run(model: nn.Module, x):
    """Call `model` the way its inputs say (positional tuple, keywords, or one tensor)."""
    if isinstance(x, dict):
        return model(**x)
    if isinstance(x, tuple):
        return model(*x)
    return model(x)


def outputs(out) -> torch.Tensor:
    """Every output tensor, flattened into one vector (for comparing models with several outputs)."""
    if isinstance(out, torch.Tensor):
        return out.flatten()
    return torch.cat([t.flatten() for t in out])
