"""The .prn file: decode == quantized model bit for bit, size on disk == size reported, ONNX, safety."""

import json
import struct
import zlib

import numpy as np
import pytest
import torch

import prunus
from prunus.compress import decompress
from prunus.compress._fuzz import fuzz_file
from prunus.compress.prn import MAX_PARAMS, encode_prn
from prunus.errors import FormatError, PrunusError
from prunus.models import list_models

from .conftest import tiny_compress

# every registered model, at a width where a one-cycle DE stays fast
WIDTHS = {"vgg16_bn": 0.125, "resnet110": 0.25, "mobilenetv2": 0.25}


@pytest.mark.parametrize("name", list_models())
def test_decoded_logits_equal_quantized_logits(name, tmp_path):
    path = tmp_path / "m.prn"
    # population 1: magnitude sets without scoring (the search itself is tested on small nets)
    report, x = tiny_compress(name, path, width_mult=WIDTHS.get(name, 0.25), population=1, images=8)
    model = decompress(path)
    assert type(model) is type(report.model)
    assert torch.equal(model(x), report.model(x))  # bit for bit, BatchNorm and biases included
    assert path.stat().st_size == report.file_bytes
    assert 0.69 <= report.sparsity <= 0.71
    for r in report.layers:  # every layer got its target and the bits asked for
        assert abs(r.sparsity - 0.7) < 1.5 / r.params + 1e-9
        assert r.bits == 4


def test_load_dispatches_prn_and_exports_to_onnx(lenet_prn, tmp_path):
    path, report, x = lenet_prn
    model = prunus.load(path)
    assert torch.equal(model(x), report.model(x))
    import onnxruntime as ort

    onnx_path = tmp_path / "m.onnx"
    torch.onnx.export(model, (x[:2],), str(onnx_path), input_names=["x"], dynamo=False)
    got = ort.InferenceSession(str(onnx_path)).run(None, {"x": x[:2].numpy()})[0]
    assert np.allclose(got, report.model(x[:2]).detach().numpy(), atol=1e-5)


def test_report_numbers_are_consistent(lenet_prn):
    path, report, _ = lenet_prn
    js = report.to_json()
    assert js["file_bytes"] == path.stat().st_size
    assert js["ratio"] == pytest.approx(report.fp32_bytes / path.stat().st_size)
    assert js["stream_over_bound"] < 1.1
    # the reported sparsity is the file's: count the decoded zeros
    model = decompress(path)
    zeros = sum(int((m.weight == 0).sum()) for m in model.modules() if isinstance(m, torch.nn.Linear))
    total = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))
    assert zeros >= round(report.sparsity * total)  # a codebook level may also round to 0


def _parts(blob: bytes):
    (n,) = struct.unpack("<Q", blob[:8])
    frame = json.loads(blob[8 : 8 + n])
    from safetensors.numpy import load

    return json.loads(frame["__metadata__"]["prunus"]), load(blob)


def _resign(header, tensors) -> bytes:
    """A hostile file: arbitrary header, correct checksum."""
    from safetensors.numpy import save

    text = json.dumps(header)
    crc = zlib.crc32(text.encode())
    for name in sorted(tensors):
        crc = zlib.crc32(np.ascontiguousarray(tensors[name]).tobytes(), crc)
    return save(tensors, metadata={"prunus": text, "crc32": f"{crc:08x}"})


HOSTILE = {
    "huge shape": lambda h, t: h["layers"][0].update(shape=[1 << 24, 1 << 24]),
    "lying stream length": lambda h, t: h["layers"][0].update(bytes=h["layers"][0]["bytes"] + 4),
    "lying counts": lambda h, t: h["layers"][0]["counts"].__setitem__(0, h["layers"][0]["counts"][0] + 1),
    "counts that add up but lie": lambda h, t: h["layers"][0].update(
        counts=[h["layers"][0]["counts"][0] - 1, h["layers"][0]["counts"][1] + 1, *h["layers"][0]["counts"][2:]]
    ),
    "huge architecture": lambda h, t: h["arch"]["kwargs"].update(width_mult=2000.0),
    "unknown model": lambda h, t: h["arch"].update(name="nope"),
    "empty arch": lambda h, t: h.update(arch={}),  # found by the fuzz benchmark: was a bare CorruptFileError
    "user factory": lambda h, t: h.update(arch={"factory": "os:system", "kwargs": {"command": "true"}}),
    "huge input": lambda h, t: h.update(input_shape=[1, 1 << 20, 1 << 20]),
    "newer version": lambda h, t: h.update(format_version=99),
    "foreign format": lambda h, t: h.update(format="prunus-model"),
    "too many levels": lambda h, t: h["layers"][0].update(levels=100000),
    "negative count": lambda h, t: h["layers"][0]["counts"].__setitem__(1, -5),
    "bool as int": lambda h, t: h["layers"][0].update(bits=True),
    "missing tensor": lambda h, t: t.pop("c.0"),
    "extra tensor": lambda h, t: t.update(evil=np.zeros(3, np.uint8)),
    "dense dtype lie": lambda h, t: h.update(dense_dtype="float32"),
    "layer swapped": lambda h, t: h["layers"].reverse(),
    "dense shape lie": lambda h, t: h["dense"][0].update(shape=[h["dense"][0]["shape"][0] + 1]),
    "not a dict": lambda h, t: h.update(layers={"a": 1}),
    "declared params over limit": lambda h, t: h["dense"].append({"name": "x", "shape": [MAX_PARAMS + 1]}),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_files_raise_the_format_error(case, lenet_prn, tmp_path):
    header, tensors = _parts(lenet_prn[0].read_bytes())
    HOSTILE[case](header, tensors)
    bad = tmp_path / "bad.prn"
    bad.write_bytes(_resign(header, tensors))
    with pytest.raises(PrunusError) as info:
        decompress(bad)
    if case != "user factory":  # that one is refused for safety, not as corrupt
        assert isinstance(info.value, FormatError)
    assert "\n" not in str(info.value)


def test_foreign_and_empty_files(tmp_path, lenet_prn):
    from safetensors.numpy import save

    cases = {
        "empty.prn": b"",
        "text.prn": b"hello, this is not a model file at all",
        "plain.safetensors": save({"w": np.zeros(3, np.float32)}),
        "huge-header.prn": struct.pack("<Q", 1 << 60) + b"{}",
        "re-encoded.prn": encode_prn({"arch": {}}, {}),
    }
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(FormatError):
            decompress(tmp_path / name)
    with pytest.raises(PrunusError, match="no such"):
        decompress(tmp_path / "missing.prn")


def test_fuzzed_files_only_raise_the_format_error(lenet_prn, tmp_path):
    # 600 seeded mutations (the benchmark benchmarks/fuzz_prn.py runs 10,000+); anything but the
    # format error (or a clean load of a harmless change) propagates and fails the test
    counts = fuzz_file(lenet_prn[0], 600, seed=0, work_dir=tmp_path)
    assert counts["format_error"] + counts["loaded"] == 600
    assert counts["format_error"] >= 500  # most changes are caught; a few (metrics, version text) are harmless
