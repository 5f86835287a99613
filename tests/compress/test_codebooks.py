"""Codebook fine-tuning keeps the coding tied, lowers the KL, and round-trips through the .prn bit for bit."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import prunus
from prunus.compress import CompressConfig, compress, decompress
from prunus.compress.codebooks import finetune_codebooks
from prunus.compress.pack import apply_quantized
from prunus.compress.quantize import choose
from prunus.errors import ConfigError

from .conftest import FAST


def _kl(teacher, student, x):
    t = F.log_softmax(teacher(x), -1)
    return float((t.exp() * (t - F.log_softmax(student(x), -1))).sum(-1).mean())


def test_codebooks_train_tied_and_lower_the_kl():
    torch.manual_seed(0)
    teacher = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 5)).eval()
    student = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 5))
    student.load_state_dict(teacher.state_dict())
    x = torch.randn(256, 16)
    coded = {}
    for i in (0, 2):
        w = student[i].weight
        mask = w.abs() > w.abs().median()
        coded[f"{i}.weight"] = apply_quantized(w, mask, choose(w.detach()[mask], 2))
    with torch.no_grad():
        before = _kl(teacher, student, x)
    out = finetune_codebooks(student, teacher, x, coded, steps=60, lr=3e-3, temperature=1.0, seed=0)
    with torch.no_grad():
        after = _kl(teacher, student, x)
    assert after < 0.7 * before
    for name, c in out.items():
        w = dict(student.named_parameters())[name]
        assert torch.equal(c.mask, coded[name].mask)  # the symbols' mask is kept
        assert torch.equal(w[c.mask], c.quantizer.codebook[c.indices])
        assert bool((w[~c.mask] == 0).all())
        book = c.quantizer.codebook
        assert torch.equal(book, book.to(torch.float16).float())
        assert bool((book[1:] >= book[:-1]).all())
        assert not torch.equal(book, coded[name].quantizer.codebook)  # the values did move


def test_compress_with_codebook_finetune_round_trips(tmp_path):
    torch.manual_seed(0)
    model = prunus.create_model("lenet300_100", in_channels=1, width_mult=0.1).eval()
    x = torch.randn(64, 1, 28, 28)
    cfg = CompressConfig(**{**FAST, "sparsity": 0.7, "bits": 3, "codebook_steps": 5, "codebook_lr": 1e-2})
    report = compress(model, x, cfg, out=tmp_path / "m.prn", baselines=False)
    assert "codebook_finetune" in report.seconds
    assert torch.equal(decompress(tmp_path / "m.prn")(x), report.model(x))


def test_quant_drop_is_measured_against_the_pruned_model(tmp_path):
    # the teacher budget max_drop=0 would keep 8 bits; quantization's own unlimited share takes them to min_bits
    torch.manual_seed(0)
    model = prunus.create_model("lenet300_100", in_channels=1, width_mult=0.1).eval()
    x = torch.randn(64, 1, 28, 28)
    base = {**FAST, "sparsity": 0.7, "bits": "auto", "max_drop": 0.0, "min_bits": 3}
    report = compress(model, x, CompressConfig(**base, quant_drop=100.0), baselines=False)
    assert [r.bits for r in report.layers] == [3, 3, 3]
    with pytest.raises(ConfigError, match="quant_drop"):
        CompressConfig(quant_drop=-1.0)
    with pytest.raises(ConfigError, match="codebook_steps"):
        CompressConfig(codebook_steps=-1)
