"""The candidate evaluator: P weight tensors of one layer at once, and the prefix cached once per layer."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from prunus.compress.runner import Runner, candidate_outputs


@pytest.mark.parametrize(
    "conv",
    [
        nn.Conv1d(3, 5, 3, padding=1, stride=2),
        nn.Conv3d(3, 4, 3, padding=1, bias=False),
        nn.Conv2d(3, 5, 3, padding=1, bias=True),
        nn.Conv2d(3, 4, 3, stride=2, padding=2, dilation=2, bias=False),
        nn.Conv2d(4, 4, 3, padding=1, groups=4),  # depthwise: the per-candidate loop
        nn.Conv2d(3, 6, 1),
    ],
)
def test_candidate_outputs_equal_one_conv_per_candidate(conv):
    torch.manual_seed(0)
    x = torch.randn(7, conv.in_channels, *[9] * (conv.weight.dim() - 2))
    weights = torch.randn(4, *conv.weight.shape)
    got = candidate_outputs(conv, x, weights)
    conv_nd = {3: F.conv1d, 4: F.conv2d, 5: F.conv3d}[conv.weight.dim()]
    want = torch.cat([conv_nd(x, w, conv.bias, conv.stride, conv.padding, conv.dilation, conv.groups) for w in weights])
    assert got.shape == want.shape
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("shape", [(5, 6), (5, 4, 6), (5, 3, 4, 6)])  # (B, in), tokens, channels-last maps
def test_candidate_outputs_linear(shape):
    torch.manual_seed(0)
    fc = nn.Linear(6, 3)
    x, weights = torch.randn(*shape), torch.randn(2, 3, 6)
    want = torch.cat([F.linear(x, w, fc.bias) for w in weights])
    torch.testing.assert_close(candidate_outputs(fc, x, weights), want, atol=1e-6, rtol=1e-6)


def test_head_of_the_big_batch_is_the_small_batchs_state():
    import prunus

    torch.manual_seed(0)
    model = prunus.create_model("resnet20", in_channels=1, width_mult=0.25).eval()
    runner = Runner(model)
    assert runner.gm is not None  # the fx path (the hooks path has no env to slice)
    x = torch.randn(12, 1, 16, 16)
    name = "layer2.0.conv2"
    head, direct = runner.head(runner.enter(x, name), 5), runner.enter(x[:5], name)
    torch.testing.assert_close(head.input, direct.input)
    module = runner.modules[name]
    weights = torch.stack([module.weight.detach(), torch.zeros_like(module.weight)])
    outputs = candidate_outputs(module, head.input, weights)
    got, want = runner.suffix(head, outputs, 2), runner.suffix(direct, outputs, 2)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    with torch.no_grad():
        torch.testing.assert_close(got[:5], model(x[:5]), atol=1e-5, rtol=1e-5)  # candidate 0 = the model itself


def test_one_teacher_pass_serves_the_search_and_the_budget():
    """The teacher's logits are computed once on every calibration image and sliced: the report's
    teacher accuracy is the teacher's own on the budget batch (its first rescore_size images)."""
    from prunus.compress import CompressConfig, compress

    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 32), nn.Linear(32, 10)).eval()  # predictions vary by image
    x = torch.randn(96, 1, 28, 28, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        logits = model(x)
    y = logits.argmax(1)  # the teacher is right on every image, and only on its own images:
    assert float((logits[32:96].argmax(1) == y[:64]).float().mean()) < 0.9  # a wrong slice would show
    cfg = CompressConfig(sparsity=0.5, bits=8, calib_size=32, rescore_size=64, cycles=1, population=2, elite=1,
                         generations=1, finetune_steps=2)  # fmt: skip
    report = compress(model, (x, y), cfg, baselines=False)
    assert report.teacher_acc == 1.0


@pytest.mark.parametrize("family", ["resnet20", "mobilenetv2"])
def test_enter_keeps_only_what_crosses_the_cut_and_the_suffix_is_the_model(family):
    """The prefix pass holds the values a node at or after the layer reads, nothing else (holding every
    activation took 7.8 GB on MobileNetV2 at 512 images), and continuing from them gives the model's logits."""
    import prunus

    torch.manual_seed(0)
    model = prunus.create_model(family, in_channels=1, width_mult=0.25).eval()
    runner = Runner(model)
    assert runner.gm is not None
    x = torch.randn(3, 1, 16, 16)
    with torch.no_grad():
        want = model(x)
    order = {n: i for i, n in enumerate(runner.gm.graph.nodes)}
    for name, module in runner.modules.items():
        cut = order[runner.nodes[name]]
        crossing = {n for n in order if order[n] < cut and any(order[u] >= cut for u in n.users)}
        state = runner.enter(x, name)
        assert set(state.env) == crossing, name
        weights = module.weight.detach().unsqueeze(0)
        got = runner.suffix(state, candidate_outputs(module, state.input, weights), 1)
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_candidates_are_scored_in_calls_whose_outputs_fit_the_chunk():
    """`chunk_elements` bounds the layer outputs of one call over the whole batch (the suffix's activations
    grow with them), and splitting the candidates over calls leaves every score as it was."""
    import torch.nn.functional as F

    from prunus.compress.search import _Evaluator

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(2, 6, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(6 * 8 * 8, 4)).eval()
    runner = Runner(model)
    x = torch.randn(10, 2, 8, 8)
    teacher_logp = F.log_softmax(model(x).detach(), dim=-1)
    state = runner.enter(x, "0")
    one_candidate = 10 * 6 * 8 * 8  # the conv's outputs for the batch of 10
    calls: list[int] = []
    small = _Evaluator(runner, state, teacher_logp, chunk=3 * one_candidate + 5)
    inner = small.layer
    small.layer = lambda w: calls.append(w.shape[0]) or inner(w)
    big = _Evaluator(runner, state, teacher_logp, chunk=1 << 30)
    pool = torch.arange(20)
    sets = torch.rand(7, 20, generator=torch.Generator().manual_seed(1)) < 0.5
    torch.testing.assert_close(small(pool, sets), big(pool, sets), atol=1e-6, rtol=1e-5)
    assert calls == [3, 3, 1]


class _SamePadConv(nn.Conv2d):
    """timm's Conv2dSame: the input is padded in forward (TF 'SAME'), the conv itself has padding 0."""

    def forward(self, x):
        ih, iw = x.shape[-2:]
        kh, kw = self.kernel_size
        ph = max((-(-ih // self.stride[0]) - 1) * self.stride[0] + kh - ih, 0)
        pw = max((-(-iw // self.stride[1]) - 1) * self.stride[1] + kw - iw, 0)
        x = F.pad(x, [pw // 2, pw - pw // 2, ph // 2, ph - ph // 2])
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


class _ScaledLinear(nn.Linear):
    def forward(self, x):
        return F.linear(x, self.weight * 0.5, self.bias)


def _custom_layers():
    from ..structure import families as fam

    layers = [
        _SamePadConv(3, 4, 5, stride=2),
        fam.StdConv(3, 4, 3, padding=1),  # NF-Net: the weight standardised over each filter's inputs in forward
        fam.ScaledConv(3, 4, 3, padding=1),
        _ScaledLinear(9, 4),
    ]
    with torch.no_grad():
        for layer in layers[1:3]:
            layer.gain.uniform_(0.5, 2.0)  # a gain of 1 would hide a forward that ignores it
    return layers


@pytest.mark.parametrize("index", range(4))
def test_a_layer_with_its_own_forward_scores_candidates_through_that_forward(index):
    """Candidates of a conv/Linear subclass that pads, scales or standardises in forward are the module's own
    outputs with each weight (a plain F.conv2d of the weight scored a layer the model does not have, or failed)."""
    import copy

    torch.manual_seed(0)
    layer = _custom_layers()[index]
    x = torch.randn(5, 3, 9, 9) if not isinstance(layer, nn.Linear) else torch.randn(5, 3, 9)
    weights = torch.randn(3, *layer.weight.shape)
    want = []
    for w in weights:
        one = copy.deepcopy(layer)
        with torch.no_grad():
            one.weight.copy_(w)
            want.append(one(x))
    torch.testing.assert_close(candidate_outputs(layer, x, weights), torch.cat(want), atol=1e-5, rtol=1e-5)
