"""Compression of the models users bring (the structure families of issue 29): 1-d and 3-d convs, Linear
layers on channels-last tokens, attention, splits, grouped convs. Each is searched by DE (not magnitude
alone), written to a .prn and read back to the same logits bit for bit; several inputs or outputs are
refused with a message."""

from __future__ import annotations

import copy
import re
import sys
import warnings

import pytest
import torch
from torch import nn

from prunus.compress import CompressConfig, compress, decompress
from prunus.compress.runner import PRUNABLE
from prunus.errors import ConfigError
from prunus.structure.parametrized import bake_

from ..structure import families as fam
from ..structure.conftest import randomize_
from .conftest import FAST

SINGLE_INPUT = sorted(n for n in fam.MODELS if isinstance(fam.inputs(n), torch.Tensor))


def _dense(name: str) -> nn.Module:
    torch.manual_seed(0)
    return randomize_(fam.build(name), 0).eval()


def test_the_families_cover_every_conv_rank_and_channels_last_linears():
    assert {"conv1d", "conv3d", "constant_channels", "stat_norms"} <= set(SINGLE_INPUT)
    assert len(SINGLE_INPUT) >= 20


@pytest.mark.parametrize("name", SINGLE_INPUT)
def test_a_user_model_compresses_and_decodes_to_the_same_logits(name, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "prunus_test_families", fam)  # the factory the file names
    model, x = _dense(name), fam.inputs(name, batch=48)
    path = tmp_path / "m.prn"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        report = compress(model, x, CompressConfig(**FAST, sparsity=0.7, bits=4), out=path, baselines=False)
    layers = {f"{n}.weight" for n, m in model.named_modules() if isinstance(m, (nn.modules.conv._ConvNd, nn.Linear))}
    assert {r.name for r in report.layers} == layers  # every conv of every rank, transposed too, and Linear is coded
    for r in report.layers:
        assert abs(r.sparsity - 0.7) < 1.5 / r.params + 1e-9, r.name
        assert r.bits == 4
    back = decompress(path, trust_factory=True)
    assert torch.equal(back(x), report.model(x))  # bit for bit
    assert list(back.state_dict()) == list(bake_(copy.deepcopy(model)).state_dict())  # parametrizations baked


def test_several_inputs_or_outputs_are_refused_with_what_to_do():
    two_in = _dense("tuple_io")
    img = fam.inputs("tuple_io", batch=8)[0]
    with pytest.raises(ConfigError, match=re.escape("TwoInOut.forward needs 2 (img, aux). Wrap it")):
        compress(two_in, img, CompressConfig(**FAST, sparsity=0.5, bits=8), baselines=False)

    class TwoHeads(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.c, self.a, self.b = nn.Conv2d(1, 4, 3), nn.Linear(4, 3), nn.Linear(4, 2)

        def forward(self, x):
            f = self.c(x).mean((2, 3))
            return self.a(f), self.b(f)

    with pytest.raises(ConfigError, match="returns tuple. Wrap it"):
        compress(TwoHeads().eval(), torch.randn(8, 1, 6, 6), CompressConfig(**FAST, sparsity=0.5, bits=8))


def test_prunable_layers_are_every_conv_rank_and_linear():
    assert set(PRUNABLE) == {nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d,
                             nn.ConvTranspose3d, nn.Linear}  # fmt: skip


def test_a_transposed_conv_called_with_output_size_is_scored_with_it():
    """U-Nets call their ConvTranspose with output_size= (here 8x8, where the default would be 7x7): DE's
    candidates of that layer run with it, so their outputs fit the concat after it and score as the model."""
    from prunus.compress.runner import Runner, candidate_outputs

    model, x = _dense("unet"), fam.inputs("unet", batch=4)
    runner = Runner(model)
    for hooks in (False, True):  # traced by torch.fx, and with forward hooks when it does not trace
        if hooks:
            runner.gm = None
        state = runner.enter(x, "up")
        assert tuple(state.kwargs["output_size"]) == (8, 8)
        w = model.up.weight.detach()
        outs = candidate_outputs(model.up, state.input, torch.stack([w, torch.zeros_like(w)]), state.kwargs)
        assert outs.shape == (8, 6, 8, 8)
        logits = runner.suffix(state, outs, 2)
        with torch.no_grad():
            torch.testing.assert_close(logits[:4], model(x), rtol=1e-5, atol=1e-6)


def test_calibration_samples_the_model_cannot_read_are_one_config_error():
    model = _dense("conv1d")  # reads (2, L) samples
    with pytest.raises(
        ConfigError, match=re.escape("Conv1dNet does not run on calibration samples of shape (1, 28, 28): ")
    ):
        compress(model, torch.randn(8, 1, 28, 28), CompressConfig(**FAST, sparsity=0.5, bits=8), baselines=False)


def test_a_model_that_asserts_its_input_size_is_one_config_error():
    class FixedSize(nn.Module):  # timm's `_assert(H == self.img_size[0], ...)` in patch embeddings
        def __init__(self) -> None:
            super().__init__()
            self.c, self.fc = nn.Conv2d(1, 2, 3), nn.Linear(2, 3)

        def forward(self, x):
            assert x.shape[-1] == 32, f"Input height ({x.shape[-1]}) doesn't match model (32)."
            return self.fc(self.c(x).mean((2, 3)))

    with pytest.raises(ConfigError, match=re.escape("FixedSize does not run on calibration samples of shape")):
        compress(FixedSize().eval(), torch.randn(8, 1, 28, 28), CompressConfig(**FAST, sparsity=0.5, bits=8))
