"""The .prn file: decode == quantized model bit for bit, size on disk == size reported, ONNX, safety."""

import json
import re
import struct
import zlib

import numpy as np
import pytest
import torch

import prunus
from prunus.compress import decompress
from prunus.compress.fuzz import fuzz_file
from prunus.compress.prn import MAX_PARAMS, encode_prn
from prunus.compress.varint import pack_varints, unpack_varints
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


def _edit_table(h, t, edit):
    """Re-encode the varint coding tables after `edit(values)` (layer 0: levels, bytes, counts...)."""
    n = h["table_bytes"]
    values = unpack_varints(t["coded"][:n]).tolist()
    edit(values)
    table = pack_varints(values)
    t["coded"] = np.concatenate([table, t["coded"][n:]])
    h["table_bytes"] = int(table.size)


def _bump(i, by):
    def edit(values):
        values[i] += by

    return edit


def _unterminated(h, t):
    n = h["table_bytes"]
    t["coded"] = np.concatenate([t["coded"][:n], [np.uint8(0x80)], t["coded"][n:]]).astype(np.uint8)
    h["table_bytes"] = n + 1


HOSTILE = {
    "huge shape": lambda h, t: h["layers"]["shapes"].__setitem__(0, [1 << 24, 1 << 24]),
    "lying stream length": lambda h, t: _edit_table(h, t, _bump(1, 4)),
    "lying counts": lambda h, t: _edit_table(h, t, _bump(2, 1)),
    "counts that add up but lie": lambda h, t: _edit_table(
        h, t, lambda v: v.__setitem__(slice(2, 4), [v[2] + 1, v[3] - 1])
    ),
    "more survivors than weights": lambda h, t: _edit_table(h, t, _bump(2, 1 << 30)),
    "too many levels": lambda h, t: _edit_table(h, t, lambda v: v.__setitem__(0, 100000)),
    "table ends inside a value": _unterminated,
    "table values after the last layer": lambda h, t: _edit_table(h, t, lambda v: v.append(5)),
    "lying table length": lambda h, t: h.update(table_bytes=h["table_bytes"] - 1),
    "table too large to decode": lambda h, t: h.update(table_bytes=1 << 20),
    "huge architecture": lambda h, t: h["arch"]["kwargs"].update(width_mult=2000.0),
    "unknown model": lambda h, t: h["arch"].update(name="nope"),
    "empty arch": lambda h, t: h.update(arch={}),  # found by the fuzz benchmark: was a bare CorruptFileError
    "user factory": lambda h, t: h.update(arch={"factory": "os:system", "kwargs": {"command": "true"}}),
    "huge input": lambda h, t: h.update(input_shape=[1, 1 << 20, 1 << 20]),
    "newer version": lambda h, t: h.update(format_version=99),
    "version 1 file": lambda h, t: h.update(format_version=1),
    "foreign format": lambda h, t: h.update(format="prunus-model"),
    "bool as int": lambda h, t: h["layers"]["bits"].__setitem__(0, True),
    "unknown quantizer": lambda h, t: h["layers"]["kinds"].__setitem__(0, "magic"),
    "repeated name": lambda h, t: h["layers"]["names"].__setitem__(1, h["layers"]["names"][0]),
    "short column": lambda h, t: h["layers"]["bits"].pop(),
    "missing tensor": lambda h, t: t.pop("coded"),
    "extra tensor": lambda h, t: t.update(evil=np.zeros(3, np.uint8)),
    "values as float64": lambda h, t: t.update(values=t["values"].astype(np.float64)),
    "coded as 2-D": lambda h, t: t.update(coded=t["coded"].reshape(1, -1)),
    "layer swapped": lambda h, t: h["layers"]["names"].reverse(),
    "dense value missing": lambda h, t: t.update(values=t["values"][:-1]),
    "integer values the model lacks": lambda h, t: t.update(ints=np.array([3], np.int64)),
    "not a dict": lambda h, t: h.update(layers={"a": 1}),
    "declared params over limit": lambda h, t: h["layers"]["shapes"].__setitem__(0, [1 << 14, MAX_PARAMS >> 13]),
}

MESSAGES = {"version 1 file": "version-1 .prn file.*compress the model again", "huge shape": "parameters, more than",
            "table too large to decode": "not possible for", "more survivors than weights": "survivors of its",
            "declared params over limit": "limit", "dense value missing": "dense values",
            "integer values the model lacks": "integer values", "lying table length": "table"}  # fmt: skip


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
    if case in MESSAGES:
        assert re.search(MESSAGES[case], str(info.value)), str(info.value)


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
    counts = fuzz_file(lenet_prn[0], 630, seed=0, work_dir=tmp_path)  # 70 of each of the 9 kinds
    assert counts["format_error"] + counts["loaded"] == 630
    assert counts["format_error"] >= 530  # most changes are caught; a few (metrics, version text) are harmless
    assert counts["cannot_run"] == 0  # every file that loads gives a model that runs with finite outputs


def test_every_byte_of_the_file_is_counted(lenet_prn):
    from prunus.compress.report import describe_prn

    path, report, _ = lenet_prn
    info = describe_prn(path)
    parts = info["file_parts"]
    assert parts == report.parts
    assert sum(parts.values()) == path.stat().st_size == info["bytes"]
    assert parts["streams"] == report.stream_bytes == sum(r.bytes for r in report.layers)
    levels = sum(r.levels for r in report.layers)
    assert parts["codebooks"] == 2 * levels  # float16
    assert parts["dense"] == 2 * sum(p.numel() for n, p in report.model.named_parameters() if n.endswith(".bias"))
    # the coding tables are varints (levels, bytes, one count per level), not JSON lists in the header
    assert parts["tables"] <= 3 * (2 * len(report.layers) + levels)
    header, _ = _parts(path.read_bytes())
    assert "counts" not in json.dumps(header)
    assert parts["header"] < 700
    js = report.to_json()
    floor = js["bound_bits"] / 8 + parts["codebooks"] + parts["dense"] + parts["ints"]
    assert js["file_over_floor"] == pytest.approx(path.stat().st_size / floor)
    assert js["file_over_bound"] == pytest.approx(8 * path.stat().st_size / js["bound_bits"])


# ------------------------------------------------------------------ issue 25: holes in the reader
def _resigned(blob: bytes, edit) -> bytes:
    """`blob` with its header or tensors edited and a valid checksum (the CRC alone cannot catch it)."""
    from safetensors.numpy import load

    (n,) = struct.unpack("<Q", blob[:8])
    header = json.loads(json.loads(blob[8 : 8 + n])["__metadata__"]["prunus"])
    tensors = {k: v.copy() for k, v in load(blob).items()}
    edit(header, tensors)
    header.pop("format", None), header.pop("format_version", None), header.pop("prunus_version", None)
    return encode_prn(header, tensors)


@pytest.fixture(scope="module")
def pruned_prn(tmp_path_factory):
    """A compressed model with a pruning history (its load replays it)."""
    torch.manual_seed(0)
    model = prunus.create_model("resnet20", in_channels=1, width_mult=0.25)
    prunus.prune(model, torch.zeros(1, 1, 28, 28), remove_channels=0.5)
    path = tmp_path_factory.mktemp("pruned") / "r.prn"
    cfg = prunus.CompressConfig(sparsity=0.5, bits=4, calib_size=16, rescore_size=0, cycles=1, generations=1,
                                population=2, elite=1, finetune_steps=0)  # fmt: skip
    prunus.compress(model, torch.randn(16, 1, 28, 28), cfg, out=path, baselines=False)
    return path


def test_the_same_model_gives_the_same_bytes_in_every_process(tmp_path):
    # safetensors writes its metadata map in a per-process random order; encode_prn fixes one order
    script = (
        "import sys, hashlib, numpy as np; from prunus.compress.prn import encode_prn\n"
        "t = {'coded': np.arange(9, dtype=np.uint8), 'values': np.ones(3, np.float16), 'ints': np.arange(2)}\n"
        "print(hashlib.sha256(encode_prn({'arch': {'name': 'x'}, 'b': [1, 2]}, t)).hexdigest())"
    )
    import subprocess
    import sys

    digests = {subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
               for _ in range(8)}  # fmt: skip
    assert len(digests) == 1, digests


def test_an_unknown_dtype_in_the_frame_is_a_format_error(lenet_prn, tmp_path):
    blob = lenet_prn[0].read_bytes()
    (n,) = struct.unpack("<Q", blob[:8])
    frame = json.loads(blob[8 : 8 + n])
    frame["coded"]["dtype"] = "X9"  # numpy has no such dtype: was a KeyError traceback
    text = json.dumps(frame).encode()
    text += b" " * (-len(text) % 8)
    (tmp_path / "x.prn").write_bytes(struct.pack("<Q", len(text)) + text + blob[8 + n :])
    with pytest.raises(FormatError, match="truncated or corrupt"):
        decompress(tmp_path / "x.prn")


@pytest.mark.parametrize("shape", [[3, 28, 28], [1, 20, 20], [1, 1, 1]])
def test_an_input_shape_that_contradicts_the_layers_is_refused_at_load(lenet_prn, tmp_path, shape):
    # lenet300_100 flattens 1x28x28: any other shape cannot run, so it must not load and crash later in eval
    (tmp_path / "x.prn").write_bytes(_resigned(lenet_prn[0].read_bytes(), lambda h, t: h.update(input_shape=shape)))
    with pytest.raises(FormatError, match="does not fit the architecture"):
        decompress(tmp_path / "x.prn")


def test_a_huge_input_shape_is_replayed_at_a_small_probe(pruned_prn, tmp_path, monkeypatch):
    # the header may claim 1024x1024: the pruning history is replayed at a 32x32 probe, not at a megapixel
    import prunus.structure

    seen = []
    real = prunus.structure.replay
    monkeypatch.setattr(prunus.structure, "replay", lambda m, h, x: (seen.append(tuple(x.shape)), real(m, h, x))[1])
    (tmp_path / "x.prn").write_bytes(
        _resigned(pruned_prn.read_bytes(), lambda h, t: h.update(input_shape=[1, 1024, 1024]))
    )
    model = decompress(tmp_path / "x.prn")
    assert seen == [(1, 1, 32, 32)]
    reference = decompress(pruned_prn)
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(model(x), reference(x))  # the same model: the coupling does not depend on the size


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_stored_values_are_refused(lenet_prn, tmp_path, bad):
    def poison(h, t):
        t["values"][-1] = bad  # a dense value (a bias)

    (tmp_path / "x.prn").write_bytes(_resigned(lenet_prn[0].read_bytes(), poison))
    with pytest.raises(FormatError, match="NaN or infinite"):
        decompress(tmp_path / "x.prn")


# ------------------------------------------------------------------ BatchNorm statistics folded into the affine
def _random_stats(model):
    gen = torch.Generator().manual_seed(5)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=gen))
            m.running_var.copy_(torch.rand(m.num_features, generator=gen) * 3 + 0.2)
            m.weight.data.copy_(torch.randn(m.num_features, generator=gen))
            m.bias.data.copy_(torch.randn(m.num_features, generator=gen))
    return model.eval()


def test_fold_batchnorm_keeps_the_eval_function_and_leaves_the_constants():
    from prunus.compress.pack import fold_batchnorm

    torch.manual_seed(0)
    model = _random_stats(prunus.create_model("resnet20", in_channels=1, width_mult=0.25))
    x = torch.randn(4, 1, 28, 28)
    before = model(x)
    names = fold_batchnorm(model)
    bns = {n for n, m in model.named_modules() if isinstance(m, torch.nn.BatchNorm2d)}
    assert set(names) == bns
    assert len(names) == len(bns)
    assert torch.allclose(model(x), before, atol=1e-4, rtol=1e-4)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            assert not m.running_mean.any()
            assert torch.equal(m.running_var, torch.full_like(m.running_var, 1.0 - m.eps))
    plain = torch.nn.Sequential(torch.nn.BatchNorm2d(2, affine=False).eval())
    assert fold_batchnorm(plain) == []  # no affine to fold into: the statistics stay and are stored


def test_a_folded_file_stores_two_values_per_batchnorm_channel_not_four(tmp_path):
    from prunus.compress.prn import parse_prn

    report, x = tiny_compress("resnet20", tmp_path / "r.prn", width_mult=0.25, population=1, images=8)
    prn = parse_prn((tmp_path / "r.prn").read_bytes())
    model = decompress(tmp_path / "r.prn")
    bns = {n: m for n, m in model.named_modules() if isinstance(m, torch.nn.BatchNorm2d)}
    assert prn.header["folded_bn"] == list(bns)
    coded = {e.name for e in prn.layers}
    floats = sum(v.numel() for k, v in model.state_dict().items() if k not in coded and v.is_floating_point())
    stats = sum(2 * m.num_features for m in bns.values())
    assert prn.tensors["dense"].size == floats - stats
    assert torch.equal(model(x), report.model(x))


def test_a_file_without_folded_batchnorm_still_reads_its_statistics(tmp_path):
    """Files written before the fold (no folded_bn field) store all four BN tensors and decode as before."""
    from prunus.compress import api

    real = api.fold_batchnorm
    api.fold_batchnorm = lambda model: []
    try:
        report, x = tiny_compress("resnet20", tmp_path / "old.prn", width_mult=0.25, population=1, images=8)
    finally:
        api.fold_batchnorm = real
    from prunus.compress.prn import parse_prn

    assert "folded_bn" not in parse_prn((tmp_path / "old.prn").read_bytes()).header
    model = decompress(tmp_path / "old.prn")
    assert torch.equal(model(x), report.model(x))
    assert any(m.running_var.ne(1.0 - m.eps).any() for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))


@pytest.mark.parametrize("names", [["fc"], ["nope"], "bn1", [3], ["bn1", "bn1"]])
def test_a_folded_bn_list_that_does_not_name_batchnorms_is_a_format_error(names, tmp_path):
    tiny_compress("resnet20", tmp_path / "r.prn", width_mult=0.25, population=1, images=8)
    blob = _resigned((tmp_path / "r.prn").read_bytes(), lambda h, t: h.update(folded_bn=names))
    (tmp_path / "bad.prn").write_bytes(blob)
    with pytest.raises(FormatError):
        decompress(tmp_path / "bad.prn")
