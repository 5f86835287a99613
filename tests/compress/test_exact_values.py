"""Compression numbers against hand computations: the masks, schedule, fitness, quantizer choice, dense
float16 storage, distillation loss and the .prn checksum (each a one-line bug the rest of the suite missed)."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import prunus
from prunus.compress import CompressConfig, compress, decompress
from prunus.compress.bits import best_quantizer
from prunus.compress.kd import kd_losses
from prunus.compress.pack import round_dense
from prunus.compress.quantize import KINDS, choose, dequantize, quantize
from prunus.compress.search import _schedule, kl_per_candidate, magnitude_masks
from prunus.errors import FormatError

from .conftest import FAST


def test_magnitude_masks_remove_the_smallest_absolute_values():
    net = nn.Sequential(nn.Linear(3, 2, bias=False))
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([[-5.0, 0.1, 3.0], [-0.2, 4.0, -0.05]]))
    mask = magnitude_masks(net, {"0": 0.5})["0"]
    # |w| = 5, 0.1, 3, 0.2, 4, 0.05: the three smallest are 0.05, 0.1 and 0.2 (two of them negative)
    assert mask.tolist() == [[True, False, True], [False, True, False]]


def test_sparsity_schedule_is_cubic_fast_early_and_reaches_the_target():
    target, cycles = 0.9, 8
    values = [_schedule(target, c, cycles) for c in range(cycles + 1)]
    assert values == pytest.approx([target * (1 - (1 - c / cycles) ** 3) for c in range(cycles + 1)])
    assert values[0] == 0.0
    assert values[-1] == pytest.approx(target)
    steps = np.diff(values)
    assert (steps[:-1] > steps[1:]).all()  # every cycle removes fewer weights than the one before


def test_fitness_is_kl_from_the_teacher_to_the_student():
    gen = torch.Generator().manual_seed(0)
    teacher = torch.randn(5, 4, generator=gen)
    students = torch.randn(3 * 5, 4, generator=gen) * 2  # three candidates of the same 5 images
    got = kl_per_candidate(F.log_softmax(teacher, -1), students)
    p = F.softmax(teacher.double(), -1).numpy()
    for c in range(3):
        q = F.softmax(students[c * 5 : (c + 1) * 5].double(), -1).numpy()
        expected = float(np.mean(np.sum(p * (np.log(p) - np.log(q)), axis=1)))  # KL(teacher || student)
        reverse = float(np.mean(np.sum(q * (np.log(q) - np.log(p)), axis=1)))
        assert float(got[c]) == pytest.approx(expected, rel=1e-5)
        assert abs(expected - reverse) > 1e-2  # the two directions differ on these logits


def test_best_quantizer_picks_the_kind_with_the_smaller_squared_error():
    gen = torch.Generator().manual_seed(0)
    values = torch.randn(1000, generator=gen) ** 3  # heavy tails: k-means puts its levels where the weights are
    errors = {}
    for kind in KINDS:
        q = choose(values, 3, kind)
        errors[kind] = float(((dequantize(quantize(values, q), q) - values) ** 2).sum())
    smaller = min(errors, key=errors.get)
    assert errors[smaller] < 0.8 * max(errors.values())
    best = best_quantizer(values, 3, "best")
    assert torch.equal(best.codebook, choose(values, 3, smaller).codebook)


def test_a_dense_value_over_the_float16_range_is_stored_as_float32(tmp_path):
    # 65504 is float16's largest value; 65530 rounds to inf in float16
    torch.manual_seed(0)
    model = prunus.create_model("lenet300_100", in_channels=1, num_classes=10, width_mult=0.1).eval()
    layers = [m for m in model.modules() if isinstance(m, nn.Linear)]
    with torch.no_grad():
        layers[0].bias[0] = 65530.0
        layers[0].bias[1] = -65510.0
    assert round_dense(model, {}) == "float32"
    assert layers[0].bias[0].item() == 65530.0
    x = torch.randn(32, 1, 28, 28)
    path = tmp_path / "big.prn"
    compress(model, x, CompressConfig(**{**FAST, "sparsity": 0.5, "bits": 4}), out=path, baselines=False)
    back = [m for m in decompress(path).modules() if isinstance(m, nn.Linear)]
    assert back[0].bias[0].item() == 65530.0
    assert back[0].bias[1].item() == -65510.0


def test_distillation_loss_is_t_squared_times_kl_at_temperature_t():
    torch.manual_seed(0)
    student, teacher = nn.Linear(6, 4), nn.Linear(6, 4)
    x = torch.randn(1, 6).repeat(16, 1)  # every sampled batch holds the same image: no dependence on the draw
    t = 4.0
    loss = next(kd_losses(student, teacher, x, steps=1, temperature=t, seed=0))
    with torch.no_grad():
        p = F.softmax(teacher(x[:1]).double() / t, -1)
        log_q = F.log_softmax(student(x[:1]).double() / t, -1)
    expected = float((p * (p.log() - log_q)).sum()) * t**2
    # float32 KL of two close distributions loses digits to cancellation (1.3e-5 relative measured on an
    # AVX-512 machine); the bugs this catches (no T^2, no T in a softmax) move it by factors, not 1e-4
    assert loss.item() == pytest.approx(expected, rel=1e-4)
    assert expected > 1e-3


def _tensor_span(blob: bytes, name: str) -> tuple[int, int]:
    """Byte range of tensor `name`'s data in a safetensors file."""
    (n,) = struct.unpack("<Q", blob[:8])
    begin, end = json.loads(blob[8 : 8 + n])[name]["data_offsets"]
    return 8 + n + begin, 8 + n + end


def test_a_flipped_value_byte_fails_the_checksum(lenet_prn, tmp_path):
    blob = bytearray(lenet_prn[0].read_bytes())
    begin, end = _tensor_span(bytes(blob), "values")
    assert end > begin
    blob[begin] ^= 0x01  # the lowest mantissa bit of the first codebook value: still a valid float16
    bad = tmp_path / "flipped.prn"
    bad.write_bytes(bytes(blob))
    with pytest.raises(FormatError, match="checksum"):
        decompress(bad)
