"""Recipes and files from someone else, and careless flags, cannot be turned against the user.

A table of cases over `prunus run` (a downloaded recipe, changed with `--set`), `prunus compress`
(every CompressConfig field), `.prn` files read by `eval` / `info` / `export` / `bench`, and `--force`
over files prunus did not write. Each case: exit code 2, exactly one `prunus: error:` line, no
traceback, and a snapshot of the whole case directory (the inputs and where the outputs would go)
equal before and after: nothing created, nothing changed. The bounds a recipe may ask for are
`prunus.config.BOUNDS`; each bound has a case just past it.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

import prunus
from prunus.cli import main
from prunus.config import BOUNDS

RECIPE = """\
version: 1
name: tiny
model: {name: lenet5, width_mult: 0.25}
data: {name: synthetic, num_samples: 64, image_size: 28, channels: 1, val_size: 16, batch_size: 32}
train: {threads: 1}
stages:
  - {stage: train, name: baseline, train: {epochs: 1}}
  - {stage: prune, remove_channels: 0.5}
  - {stage: finetune, train: {epochs: 1}}
  - {stage: compress, compress: {sparsity: 0.5, bits: 4, calib_size: 16, rescore_size: 16, cycles: 1, finetune_steps: 0}}
  - {stage: export}
  - {stage: bench, batch_sizes: [1], runtimes: [torch], repeats: 1, warmup: 0}
"""


def _snapshot(root: Path) -> dict[str, tuple]:
    state = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st = os.lstat(p)
            entry: tuple = (stat.S_IFMT(st.st_mode), st.st_size, st.st_mtime_ns)
            if stat.S_ISREG(st.st_mode) and st.st_size < (1 << 20):
                entry += (hashlib.sha1(p.read_bytes()).hexdigest(),)
            state[str(p.relative_to(root))] = entry
    return state


# ----------------------------------------------------------------------- prunus run --set
TOO_LONG = "n" * 101  # check_name: at most 100 characters
RUN_SETS = {
    # the recipe's name decides runs/<name>: never a path
    "name_parent": "name=../../escaped",
    "name_absolute": "name=/tmp/prunus-escaped",
    "name_nested": "name=a/b",
    "name_hidden": "name=.hidden",
    "name_nul": 'name="x\\0y"',
    "name_too_long": f"name={TOO_LONG}",
    "name_list": "name=[a]",
    "name_mapping": "name={a: 1}",
    # seeds
    "seed_negative": "seeds=[-1]",
    "seed_huge": f"seeds=[{BOUNDS['seed'] + 1}]",
    "seed_float": "seeds=[1.5]",
    "seed_bool": "seeds=[true]",
    "seeds_duplicate": "seeds=[0, 0]",
    "seeds_empty": "seeds=[]",
    "seeds_string": "seeds=abc",
    "seeds_too_many": f"seeds=[{', '.join(map(str, range(BOUNDS['seeds'] + 1)))}]",
    # data: sizes past the bounds would fail allocating memory half way
    "num_samples_huge": "data.num_samples=1.0e+11",
    "num_samples_negative": "data.num_samples=-5",
    "num_samples_string": "data.num_samples=many",
    "num_samples_list": "data.num_samples=[1]",
    "image_size_huge": "data.image_size=100000",
    "image_size_tiny": "data.image_size=2",
    "channels_huge": f"data.channels={BOUNDS['channels'] + 1}",
    "classes_one": "data.num_classes=1",
    "classes_huge": f"data.num_classes={BOUNDS['classes'] + 1}",
    "batch_huge": "data.batch_size=1.0e+8",
    "batch_zero": "data.batch_size=0",
    "eval_batch_zero": "data.eval_batch_size=0",
    "subset_zero": "data.subset=0",
    "subset_huge": f"data.subset={BOUNDS['samples'] + 1}",
    "val_size_negative": "data.val_size=-1",
    "split_seed_huge": f"data.split_seed={BOUNDS['seed'] + 1}",
    "data_name_path": "data.name=../x",
    "data_block_list": "data=[1]",
    # training: a run that would never end, or never start
    "epochs_huge": "baseline.train.epochs=1.0e+20",
    "epochs_past_bound": f"baseline.train.epochs={BOUNDS['epochs'] + 1}",
    "epochs_zero": "baseline.train.epochs=0",
    "epochs_word": "baseline.train.epochs=many",
    "epochs_list": "baseline.train.epochs=[1]",
    "lr_nan": "baseline.train.lr=.nan",
    "lr_negative": "baseline.train.lr=-1",
    "threads_zero": "train.threads=0",
    "threads_huge": f"train.threads={BOUNDS['threads'] + 1}",
    "warmup_longer_than_run": "baseline.train.warmup_epochs=5",
    "networks_huge": "baseline.networks=1.0e+11",
    "networks_zero": "baseline.networks=0",
    "finetune_epochs_huge": "finetune.train.epochs=1.0e+20",
    # stages: types, names, kinds
    "stage_kind_list": "stages=[{stage: [train]}]",
    "stage_kind_int": "stages=[{stage: 5}]",
    "stage_kind_unknown": "stages=[{stage: nope}]",
    "stage_name_nul": 'stages=[{stage: train, name: "a\\0b"}]',
    "stage_name_path": "stages=[{stage: train, name: ../x}]",
    "stage_name_too_long": f"stages=[{{stage: train, name: {TOO_LONG}}}]",
    "stage_name_is_a_key": "stages=[{stage: train, name: data}]",
    "stages_empty": "stages=[]",
    "stages_scalar": "stages=5",
    "stage_not_mapping": "stages=[train]",
    "model_before_train": "stages=[{stage: prune, remove_channels: 0.5}]",
    # prune
    "ratio_one": "prune.remove_channels=1.0",
    "ratio_negative": "prune.remove_channels=-0.1",
    "ratio_nan": "prune.remove_channels=.nan",
    "ratio_string": "prune.remove_channels=half",
    "two_targets": "prune.keep_macs=0.5",
    "criterion_unknown": "prune.criterion=nope",
    "round_to_zero": "prune.round_to=0",
    "latency_batch_huge": "prune.latency_batch=1.0e+8",
    "runtime_unknown": "prune.runtime=tvm",
    "layer_ratio_one": "prune.layer_ratios={conv1: 1.0}",
    "layer_ratio_not_mapping": "prune.layer_ratios=[1]",
    "ignore_string": "prune.ignore=conv1",
    "prune_threads_zero": "prune.threads=0",
    "prune_unknown_key": "prune.bogus=1",
    # compress: a search or fine-tune that would run until killed
    "population_huge": "compress.compress.population=1.0e+11",
    "generations_huge": f"compress.compress.generations={BOUNDS['generations'] + 1}",
    "cycles_zero": "compress.compress.cycles=0",
    "finetune_steps_huge": "compress.compress.finetune_steps=1.0e+15",
    "codebook_steps_huge": "compress.compress.codebook_steps=1.0e+15",
    "calib_size_huge": "compress.compress.calib_size=1.0e+11",
    "bits_nine": "compress.compress.bits=9",
    "sparsity_one": "compress.compress.sparsity=1.0",
    "compress_unknown_key": "compress.compress.bogus=1",
    # bench and export
    "bench_batch_huge": "bench.batch_sizes=[1.0e+8]",
    "bench_batch_zero": "bench.batch_sizes=[0]",
    "bench_batch_string": "bench.batch_sizes=x",
    "bench_repeats_huge": f"bench.repeats={BOUNDS['repeats'] + 1}",
    "bench_runtime_unknown": "bench.runtimes=[tvm]",
    "export_format_unknown": "export.formats=[pdf]",
    "export_formats_empty": "export.formats=[]",
    "export_opset_zero": "export.opset=0",
    # arms
    "arm_name_path": "arms={../x: {}}",
    "arm_name_nul": 'arms={"a\\0b": {}}',
    "arms_scalar": "arms=5",
    "arm_unknown_stage": "arms={a: {stages: [nope]}}",
    "compare_to_unknown": "compare_to=nope",
    "version_newer": "version=2",
}


def _run_case(name: str, item: str):
    def argv(r: Path) -> list[str]:
        return ["run", str(r / "recipe.yaml"), "--out", str(r / "out"), "--no-progress", "--set", item]

    return pytest.param(argv, id=f"run:{name}")


def _no_out_case(name: str, item: str):  # without --out: the recipe's name decides where the run goes
    return pytest.param(
        lambda r: ["run", str(r / "recipe.yaml"), "--no-progress", "--set", item], id=f"run-default:{name}"
    )


# ----------------------------------------------------------------------- prunus compress --set
COMPRESS_BAD = {
    "sparsity": ["1.0", "-0.1", "x", "[1]", ".nan"],
    "allocation": ["both", "[1]"],
    "bits": ["9", "1", "many", "[4]"],
    "quantizer": ["lloyd", "1"],
    "bit_order": ["fast", "1"],
    "max_drop": ["-1", "101", "x"],
    "max_kl": ["-1", "x"],
    "quant_drop": ["-1", "x"],
    "codebook_steps": ["-1", "1.0e+15", "x"],
    "codebook_lr": ["0", "-1", ".inf"],
    "min_bits": ["1", "9"],
    "max_bits": ["1", "9"],
    "calib_size": ["0", "1.0e+11"],
    "rescore_size": ["-1", "1.0e+11"],
    "population": ["0", "1.0e+11"],
    "generations": ["-1", "1.0e+9"],
    "elite": ["0", "8"],
    "pool_factor": ["0.5", "x"],
    "mutation": ["-0.1", "2"],
    "cycles": ["0", "1.0e+9"],
    "finetune_steps": ["-1", "1.0e+15"],
    "finetune_lr": ["0", ".nan"],
    "temperature": ["0", "-1"],
    "seed": ["-1", f"{BOUNDS['seed'] + 1}"],
    "progress": ["maybe", "2"],
    "bogus": ["1"],
}


def _compress_case(field: str, value: str):
    def argv(r: Path) -> list[str]:
        return ["compress", str(r / "model"), "--data", "synthetic", "--out", str(r / "m.prn"), "--no-progress",
                "--set", f"{field}={value}"]  # fmt: skip

    return pytest.param(argv, id=f"compress:{field}={value[:12]}")


# ----------------------------------------------------------------------- .prn files
def _prn_frame(blob: bytes) -> tuple[dict, bytes]:
    (n,) = struct.unpack("<Q", blob[:8])
    return json.loads(blob[8 : 8 + n]), blob[8 + n :]


def _reframe(frame: dict, data: bytes) -> bytes:
    text = json.dumps(frame).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + data


def _resign(blob: bytes, edit) -> bytes:
    """`blob` with its prunus header or tensors edited and the checksum made valid again."""
    from prunus.compress.fuzz import resign

    out = resign(blob, edit)
    assert out is not None, "the fixture .prn must be well formed"
    return out


def _unknown_dtype(blob: bytes) -> bytes:
    frame, data = _prn_frame(blob)
    frame["coded"]["dtype"] = "X9"
    return _reframe(frame, data)


def _nan_value(header: dict, tensors: dict) -> None:
    tensors["values"][0] = np.nan


PRN_CRAFTED = {
    "unknown_dtype": _unknown_dtype,
    "float64_frame": lambda b: _reframe(
        {**_prn_frame(b)[0], "values": {**_prn_frame(b)[0]["values"], "dtype": "F64"}}, _prn_frame(b)[1]
    ),  # fmt: skip
    "shape_contradicts": lambda b: _resign(b, lambda h, t: h.update(input_shape=[3, 28, 28])),
    "shape_huge": lambda b: _resign(b, lambda h, t: h.update(input_shape=[1, 8192, 8192])),
    "shape_zero": lambda b: _resign(b, lambda h, t: h.update(input_shape=[1, 0, 28])),
    "nan_weight": lambda b: _resign(b, _nan_value),
    "checksum_flip": lambda b: b[:-3] + bytes([b[-3] ^ 1]) + b[-2:],
    "truncated": lambda b: b[: len(b) // 2],
    "not_prn": lambda b: b"hello world, not a prn file",
}


def _prn_case(name: str, command: str):
    def argv(r: Path) -> list[str]:
        path = str(r / f"{name}.prn")
        return {
            "eval": ["eval", path, "--data", "synthetic"],
            "info": ["info", path],
            "export": ["export", path, "--out", str(r / "m.onnx")],
            "bench": ["bench", path, "--batch-sizes", "1", "--repeats", "1", "--runtimes", "torch"],
        }[command]

    return pytest.param(argv, id=f"prn:{name}:{command}")


# ----------------------------------------------------------------------- --force over foreign files
FOREIGN = {  # a user's file at the output path, with the suffix prunus would write
    "export_onnx": (lambda r: ["export", str(r / "model"), "--out", str(r / "f.onnx"), "--force"], "f.onnx"),
    "export_torchscript": (
        lambda r: ["export", str(r / "model"), "--format", "torchscript", "--out", str(r / "f.pt"), "--force"],
        "f.pt",
    ),
    "compress_prn": (
        lambda r: [
            "compress",
            str(r / "model"),
            "--data",
            "synthetic",
            "--out",
            str(r / "f.prn"),
            "--force",
            "--set",
            "cycles=1",
            "--set",
            "finetune_steps=0",
            "--set",
            "recovery_steps=0",
            "--set",
            "escalate=false",
            "--no-progress",
        ],  # the file's marker is what is tested: the smallest compression that writes one  # fmt: skip
        "f.prn",
    ),
    "bench_json": (
        lambda r: [
            "bench",
            str(r / "model"),
            "--batch-sizes",
            "1",
            "--repeats",
            "1",
            "--runtimes",
            "torch",
            "--json",
            str(r / "f.json"),
            "--force",
        ],  # fmt: skip
        "f.json",
    ),
}


def _foreign_case(name: str, content: bytes):
    argv, filename = FOREIGN[name]
    return pytest.param(argv, filename, content, id=f"force:{name}:{hashlib.sha1(content).hexdigest()[:6]}")


# refused commands whose output would go into a directory that does not exist yet: it must not appear
NESTED = {
    "export_opset_zero": lambda r: [
        "export",
        str(r / "model"),
        "--opset",
        "0",
        "--out",
        str(r / "new" / "deep" / "m.onnx"),
    ],
    "export_format_unknown": lambda r: [
        "export",
        str(r / "model"),
        "--format",
        "pdf",
        "--out",
        str(r / "new" / "m.pdf"),
    ],
    "compress_bad_set": lambda r: [
        "compress",
        str(r / "model"),
        "--set",
        "cycles=0",
        "--out",
        str(r / "new" / "m.prn"),
    ],
    "prune_bad_ratio": lambda r: [
        "prune",
        str(r / "model"),
        "--remove-channels",
        "1.5",
        "--out",
        str(r / "new" / "deep"),
    ],
    "csgd_bad_width": lambda r: ["csgd", str(r / "model"), "--width", "2", "--out", str(r / "new" / "deep")],
    "run_bad_set": lambda r: ["run", str(r / "recipe.yaml"), "--set", "seeds=[-1]", "--out", str(r / "new" / "deep")],
}

CASES = (
    [pytest.param(argv, id=f"nested:{name}") for name, argv in NESTED.items()]
    + [_run_case(n, i) for n, i in RUN_SETS.items()]
    + [_no_out_case(n, RUN_SETS[n]) for n in ("name_parent", "name_absolute", "name_nested", "name_nul")]
    + [_compress_case(f, v) for f, values in COMPRESS_BAD.items() for v in values]
    + [_prn_case(n, c) for n in PRN_CRAFTED for c in ("eval", "info")]
    + [_prn_case(n, c) for n in ("shape_contradicts", "nan_weight") for c in ("export", "bench")]
)
FOREIGN_CONTENT = [b"a user's notes\n", b'{"latency": [1, 2]}', b"PK\x03\x04 not ours", b"\x08" * 16]
FORCE_CASES = [_foreign_case(n, c) for n in FOREIGN for c in FOREIGN_CONTENT]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """A model, a recipe and crafted .prn files, copied into each case's directory."""
    root = tmp_path_factory.mktemp("hostile")
    torch.manual_seed(0)
    model = prunus.create_model("lenet5", in_channels=1, width_mult=0.25)
    pruned, _ = prunus.prune(model, torch.zeros(1, 1, 28, 28), remove_channels=0.5)  # a pruning history to replay
    prunus.save(pruned, root / "model", input_shape=(1, 28, 28))
    (root / "recipe.yaml").write_text(RECIPE)
    from prunus.compress import CompressConfig, compress

    cfg = CompressConfig(sparsity=0.5, bits=4, calib_size=16, rescore_size=16, cycles=1, generations=1, population=2,
                         elite=1, finetune_steps=0)  # fmt: skip
    compress(pruned, torch.randn(32, 1, 28, 28), cfg, out=root / "good.prn", baselines=False)
    blob = (root / "good.prn").read_bytes()
    for name, make in PRN_CRAFTED.items():
        (root / f"{name}.prn").write_bytes(make(blob))
    return root


def _case_dir(inputs: Path, tmp_path: Path) -> Path:
    r = tmp_path / "case"
    r.mkdir()
    for entry in inputs.iterdir():
        target = r / entry.name
        if entry.is_dir():
            import shutil

            shutil.copytree(entry, target)
        else:
            target.write_bytes(entry.read_bytes())
    return r


def _one_line_refusal(argv: list[str], capsys) -> None:
    try:
        rc = main(argv)
    except SystemExit as exc:  # argparse usage errors
        rc = exc.code
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err + captured.out
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert rc == 2, f"exit {rc} for {argv}; stderr: {captured.err[-500:]}"
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("prunus: error: "), captured.err


def test_the_table_is_big_enough():
    ids = [c.id for c in CASES] + [c.id for c in FORCE_CASES]
    assert len(ids) == len(set(ids))
    assert len(ids) >= 150


@pytest.mark.parametrize("argv", CASES)
def test_hostile_input_is_one_line_exit_2_and_creates_nothing(argv, inputs, tmp_path, capsys, monkeypatch):
    r = _case_dir(inputs, tmp_path)
    monkeypatch.chdir(r)  # a run without --out goes to runs/<name> under here: nothing may appear
    before = _snapshot(tmp_path)
    _one_line_refusal(argv(r), capsys)
    assert _snapshot(tmp_path) == before, "the refused command created or changed a file"
    assert not Path("/tmp/prunus-escaped").exists()


@pytest.mark.parametrize(("argv", "filename", "content"), FORCE_CASES)
def test_force_never_replaces_a_file_prunus_did_not_write(argv, filename, content, inputs, tmp_path, capsys):
    r = _case_dir(inputs, tmp_path)
    (r / filename).write_bytes(content)
    before = _snapshot(tmp_path)
    _one_line_refusal(argv(r), capsys)
    assert _snapshot(tmp_path) == before
    assert (r / filename).read_bytes() == content


@pytest.mark.parametrize("name", list(FOREIGN))
def test_force_replaces_a_file_prunus_wrote(name, inputs, tmp_path, capsys):
    """The other side of the rule: prunus's own earlier output (its marker inside) is replaced with --force."""
    r = _case_dir(inputs, tmp_path)
    argv, filename = FOREIGN[name]
    without_force = [a for a in argv(r) if a != "--force"]
    assert main(without_force) == 0, capsys.readouterr().err  # prunus writes it: the file carries the marker
    first = (r / filename).read_bytes()
    assert main(argv(r)) == 0, capsys.readouterr().err
    assert (r / filename).exists()
    assert first  # written twice; the second run replaced prunus's own file
