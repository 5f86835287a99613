"""The two file guards: the bounded reader and the output-path check (see prunus/_io/safe.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from prunus._io.safe import read_bytes, read_json, read_text
from prunus.errors import ConfigError, CorruptFileError
from prunus.formats.outputs import check_output


def test_reader_refuses_everything_but_small_regular_files(tmp_path):
    (tmp_path / "ok.json").write_text('{"a": [1, 2]}')
    assert read_json(tmp_path / "ok.json") == {"a": [1, 2]}
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "zero").symlink_to("/dev/zero")
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    (tmp_path / "big").write_bytes(b"x" * 101)
    (tmp_path / "bin").write_bytes(b"\xff\xfe\x00")
    (tmp_path / "nan.json").write_text('{"a": NaN}')
    cases = [
        ("fifo", "is a FIFO, not a regular file"),  # returns at once: O_NONBLOCK, then fstat
        ("zero", "is a device, not a regular file"),
        ("loop", "cannot read"),
        ("big", "is 101 bytes; the limit is 100"),
        (".", "is a directory"),
        ("missing", "not found"),
    ]
    for name, message in cases:
        with pytest.raises(CorruptFileError, match=message):
            read_bytes(tmp_path / name, 100)
    with pytest.raises(CorruptFileError, match="is not UTF-8 text"):
        read_text(tmp_path / "bin", 100)
    with pytest.raises(CorruptFileError, match="NaN is not valid JSON"):
        read_json(tmp_path / "nan.json")


def test_output_check_table(tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    (model / "model.json").write_text("{}")
    (model / "model.safetensors").write_bytes(b"")
    run = tmp_path / "run"
    run.mkdir()
    (run / "checkpoint.pt").write_bytes(b"")
    (tmp_path / "file").write_text("x")
    (tmp_path / "user").mkdir()
    (tmp_path / "user" / "a.txt").write_text("x")
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "link").symlink_to(tmp_path / "file")
    pipeline = tmp_path / "pipeline"  # prunus run: recipe.yaml marks it as a pipeline's
    (pipeline / "main").mkdir(parents=True)
    (pipeline / "recipe.yaml").write_text("stages: []\n")
    empty = tmp_path / "empty"
    empty.mkdir()
    linked_recipe = tmp_path / "linked_recipe"
    linked_recipe.mkdir()
    (linked_recipe / "recipe.yaml").symlink_to(tmp_path / "file")
    (tmp_path / "ours.json").write_text('{"format": "prunus-bench", "latency": []}')
    (tmp_path / "foreign.json").write_text('{"latency": []}')
    population = tmp_path / "population"  # train --networks 2: one run per net<k>/
    (population / "net0").mkdir(parents=True)
    (population / "net0" / "checkpoint.pt").write_bytes(b"")
    (population / "config.yaml").write_text("")
    allowed = [
        (tmp_path / "new.json", "file", {}),
        (tmp_path / "ours.json", "file", {"force": True}),  # a file prunus wrote (its marker) may be replaced
        (tmp_path / "new" / "deeper" / "dir", "model", {}),
        (model, "model", {"force": True}),
        (run, "run", {"resume": True}),
        (population, "run", {"resume": True}),
        (model / "model.onnx", "file", {"sources": [model]}),  # an export next to its model
        (tmp_path / "file", "rewrite", {}),  # report --readme: an existing regular file is the purpose
        (tmp_path / "new.md", "rewrite", {}),
        (tmp_path / "new_pipeline", "pipeline", {}),
        (pipeline, "pipeline", {}),  # rerunning resumes: no --force, no --resume
        (empty, "pipeline", {}),
    ]
    for path, kind, kw in allowed:
        check_output(path, kind, **kw)
    refused = [
        (tmp_path / "file", "file", {}, "already exists; pass --force"),
        (tmp_path / "file", "file", {"force": True}, "was not written by prunus"),  # --force never takes a user's file
        (tmp_path / "foreign.json", "file", {"force": True}, "was not written by prunus"),
        (tmp_path / "fifo", "file", {"force": True}, "is a FIFO"),
        (tmp_path / "link", "file", {"force": True}, "is a symlink"),
        (tmp_path / "file" / "x", "file", {}, "Not a directory"),
        (model, "model", {}, "already holds a model; pass --force"),
        (model, "model", {"force": True, "sources": [model]}, "overlaps the input"),
        (tmp_path, "model", {"force": True, "sources": [model]}, "overlaps the input"),
        (model / "model.json", "file", {"force": True, "sources": [model]}, "overlaps the input"),
        (tmp_path / "user", "model", {"force": True}, "holds files prunus did not write"),
        (run, "run", {}, "already holds a run; pass --resume"),
        (population, "run", {}, "already holds a run; pass --resume"),
        (tmp_path / "fifo", "run", {}, "is not a directory"),
        (tmp_path / "fifo", "rewrite", {}, "is a FIFO"),
        (tmp_path / "link", "rewrite", {}, "is a symlink"),
        (tmp_path / "user", "rewrite", {}, "is a directory"),
        (tmp_path / "user", "pipeline", {}, "holds files no pipeline wrote"),
        (model, "pipeline", {}, "holds files no pipeline wrote"),
        (linked_recipe, "pipeline", {}, "holds files no pipeline wrote"),
        (tmp_path / "file", "pipeline", {}, "exists and is not a directory"),
        (tmp_path / "link", "pipeline", {}, "is a symlink"),
        (pipeline, "pipeline", {"sources": [pipeline / "recipe.yaml"]}, "overlaps the input"),
        # root passes os.access on /proc; only the file system's answer to a real create is trusted
        (Path("/proc/prunus-out.json"), "file", {}, "is not writable"),
        (Path("/proc/prunus-out"), "pipeline", {}, "is not writable"),
        (Path("/proc/prunus-out") / "deeper" / "model", "model", {}, "is not writable"),
    ]
    for path, kind, kw, message in refused:
        with pytest.raises(ConfigError, match=message):
            check_output(path, kind, **kw)


def test_immutable_outputs_are_refused_even_for_root(tmp_path):
    """chattr +i: the one write barrier root cannot pass without undoing it (skipped where unsupported)."""
    import subprocess

    locked_dir, locked_file = tmp_path / "locked", tmp_path / "locked.json"
    locked_dir.mkdir()
    locked_file.write_text("{}")
    if subprocess.run(["chattr", "+i", str(locked_dir), str(locked_file)], capture_output=True).returncode:
        pytest.skip("chattr +i is not supported here")
    try:
        for path, kind, kw in [
            (locked_file, "file", {"force": True}),
            (locked_file, "rewrite", {}),
            (locked_dir / "new.json", "file", {}),
            (locked_dir, "model", {"force": True}),
            (locked_dir, "run", {}),
            (locked_dir, "pipeline", {}),
            (locked_dir / "sub" / "run", "pipeline", {}),
        ]:
            with pytest.raises(ConfigError, match="not writable"):
                check_output(path, kind, **kw)
    finally:
        subprocess.run(["chattr", "-i", str(locked_dir), str(locked_file)], check=True)
