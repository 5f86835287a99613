"""The CLI's promise, as a table: every bad input gives exit code 2, exactly one `prunus: error:` line,
no traceback, and changes no file outside the case's own run directory.

The table is generated from the CLI's own parser where it can be: every numeric option of every
command gets NaN, +-inf, a non-number, an out-of-limit size and -1; every declared output
(`add_output_arg`) gets an existing file, a prunus directory without --force, a FIFO, a device
node, a symlink, one of the command's own inputs and places that cannot be written even by root
(under /proc and /sys, and a chattr +i file or directory where the file system allows it); every
declared input path gets a missing path, a FIFO, a device and a symlink to /dev/zero. Hand-written
rows add crafted model directories (each run through every command that loads a model), resume
misuse, torn and binary metrics logs, crafted pipeline records and result files, and the other
cases of issue 8. A command added later is covered by the generated rows the day it registers its
options with the shared helpers and gets a base invocation in `_base` (which
`test_the_base_invocations_are_valid` runs, so no row passes because its base was broken);
`test_every_path_option_is_declared` fails when a command adds a path option without them.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

import prunus
from prunus.cli import build_parser, main
from prunus.cli._common import _sub_parsers, cli_int, finite_float
from prunus.cli._config_flags import float_or_word, int_or_word


@dataclass(frozen=True)
class Case:
    id: str
    argv: Callable[[Path, Path], list[str]]  # (world, run_dir) -> argv
    command: str | None = None  # a generated case: its command's BASE_SETUP prepares run_dir


# ------------------------------------------------------------------------------- the world
def _write_model(path: Path, **kw) -> Path:
    torch.manual_seed(0)
    model = prunus.create_model("lenet5", in_channels=1, width_mult=0.25, **kw)
    return prunus.save(model, path, input_shape=(1, 28, 28))


def _edit_json(directory: Path, change: Callable[[dict], object]) -> None:
    path = directory / "model.json"
    header = json.loads(path.read_text())
    result = change(header)
    path.write_text(result if isinstance(result, str) else json.dumps(header))


def _crafted(world: Path) -> dict[str, bool]:
    """Model directories that must be refused; value: whether model.json itself is bad (so `info` refuses)."""
    base = world / "model"
    specs: dict[str, tuple[bool, Callable[[Path], None]]] = {
        "huge_input_shape": (True, lambda d: _edit_json(d, lambda h: h.update(input_shape=[3, 100000, 100000]))),
        "huge_width_mult": (False, lambda d: _edit_json(d, lambda h: h["arch"]["kwargs"].update(width_mult=1e6))),
        "huge_num_classes": (False, lambda d: _edit_json(d, lambda h: h["arch"]["kwargs"].update(num_classes=10**12))),
        "shape_string": (True, lambda d: _edit_json(d, lambda h: h.update(input_shape="1,28,28"))),
        "shape_bool": (True, lambda d: _edit_json(d, lambda h: h.update(input_shape=[True, 28, 28]))),
        "shape_negative": (True, lambda d: _edit_json(d, lambda h: h.update(input_shape=[1, -28, 28]))),
        # a 1-d input (C, L) is a valid shape now; LeNet-5 reads (C, H, W), so loading refuses it
        "shape_two_dims": (False, lambda d: _edit_json(d, lambda h: h.update(input_shape=[28, 28]))),
        "shape_wrong_channels": (False, lambda d: _edit_json(d, lambda h: h.update(input_shape=[3, 28, 28]))),
        "shape_wrong_size": (False, lambda d: _edit_json(d, lambda h: h.update(input_shape=[1, 20, 20]))),
        "kwargs_list": (True, lambda d: _edit_json(d, lambda h: h["arch"].update(kwargs=[1, 2]))),
        "kwargs_unknown": (False, lambda d: _edit_json(d, lambda h: h["arch"]["kwargs"].update(bogus=1))),
        "kwargs_wrong_type": (False, lambda d: _edit_json(d, lambda h: h["arch"]["kwargs"].update(width_mult="x"))),
        "arch_name_int": (True, lambda d: _edit_json(d, lambda h: h["arch"].update(name=5))),
        "arch_name_unknown": (False, lambda d: _edit_json(d, lambda h: h["arch"].update(name="nonet"))),
        "arch_string": (True, lambda d: _edit_json(d, lambda h: h.update(arch="lenet5"))),
        "arch_factory": (False, lambda d: _edit_json(d, lambda h: h.update(arch={"factory": "os:system"}))),
        "history_dict": (True, lambda d: _edit_json(d, lambda h: h.update(history={"a": 1}))),
        "metrics_list": (True, lambda d: _edit_json(d, lambda h: h.update(metrics=[1]))),
        "version_string": (True, lambda d: _edit_json(d, lambda h: h.update(format_version="one"))),
        "version_newer": (True, lambda d: _edit_json(d, lambda h: h.update(format_version=99))),
        "format_other": (True, lambda d: _edit_json(d, lambda h: h.update(format="other"))),
        "json_nan_literal": (
            True,
            lambda d: _edit_json(d, lambda h: json.dumps(h).replace('"arch"', '"x": NaN, "arch"')),
        ),
        "json_torn": (True, lambda d: _edit_json(d, lambda h: json.dumps(h)[:50])),
        "json_binary": (True, lambda d: (d / "model.json").write_bytes(b"\xff\xfe\x00binary")),
        "json_empty": (True, lambda d: (d / "model.json").write_bytes(b"")),
        "json_list": (True, lambda d: (d / "model.json").write_text("[]")),
        "json_huge": (True, lambda d: (d / "model.json").write_bytes(b" " * (17 << 20))),
        "json_fifo": (True, lambda d: ((d / "model.json").unlink(), os.mkfifo(d / "model.json"))),
        "json_dev_zero": (True, lambda d: ((d / "model.json").unlink(), (d / "model.json").symlink_to("/dev/zero"))),
        "json_dir": (True, lambda d: ((d / "model.json").unlink(), (d / "model.json").mkdir())),
        "json_loop": (True, lambda d: ((d / "model.json").unlink(), (d / "model.json").symlink_to(d / "model.json"))),
        "weights_int8": (False, lambda d: _int8_weights(d)),
        "weights_missing": (False, lambda d: (d / "model.safetensors").unlink()),
        "weights_truncated": (False, lambda d: (d / "model.safetensors").write_bytes(b"\x08\x00\x00")),
        "weights_fifo": (False, lambda d: ((d / "model.safetensors").unlink(), os.mkfifo(d / "model.safetensors"))),
        "weights_other_arch": (False, lambda d: _other_weights(d)),
    }
    bad_header = {}
    for name, (header_bad, make) in specs.items():
        target = world / "crafted" / name
        shutil.copytree(base, target)
        make(target)
        bad_header[name] = header_bad
    return bad_header


def _int8_weights(directory: Path) -> None:
    from safetensors.torch import load_file, save_file

    state = load_file(str(directory / "model.safetensors"))
    save_file({k: v.to(torch.int8) for k, v in state.items()}, str(directory / "model.safetensors"))


def _other_weights(directory: Path) -> None:
    from safetensors.torch import save_file

    other = prunus.create_model("lenet5", in_channels=1, width_mult=0.5)
    save_file({k: v.contiguous() for k, v in other.state_dict().items()}, str(directory / "model.safetensors"))


TRAIN_FLAGS = ["--model", "lenet5", "--width-mult", "0.25", "--data", "synthetic", "--subset", "64"]
TRAIN_FLAGS += ["--val-size", "0", "--batch-size", "32", "--epochs", "1", "--no-progress"]


# A pipeline of one tiny training stage (4-16 channels, 8x8 images): `run` and `report` read it.
RECIPE = """version: 1
name: tiny
model: {name: resnet20, width_mult: 0.25}
data: {name: synthetic, num_samples: 64, image_size: 8, channels: 1, num_classes: 4, val_size: 16, batch_size: 32}
train: {threads: 1, device: cpu}
stages:
  - {stage: train, name: baseline, train: {epochs: 1}}
"""
# outputs no one may write, even root: a pseudo file system, and chattr +i where it works
IMMUTABLE = ("immutable_dir", "immutable_file")


def _lock(w: Path, flag: str) -> bool:
    import subprocess

    paths = [str(w / name) for name in IMMUTABLE]
    return subprocess.run(["chattr", flag, *paths], capture_output=True).returncode == 0


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Files every case may read but none may change (snapshotted around each case)."""
    w = tmp_path_factory.mktemp("world")
    _write_model(w / "model")
    assert main(["train", *TRAIN_FLAGS, "--out", str(w / "run")]) == 0
    (w / "exp").mkdir()  # the recipe's own directory: `run --out` there would overwrite it
    (w / "exp" / "recipe.yaml").write_text(RECIPE)
    assert main(["run", str(w / "exp" / "recipe.yaml"), "--out", str(w / "pipe"), "--no-progress"]) == 0
    (w / "results").mkdir()  # a directory of someone else's files
    (w / "results" / "engine.json").write_text('{"ratio": 1.01, "target": "<= 1.05"}')
    (w / "immutable_dir").mkdir()
    (w / "immutable_file").write_text("locked\n")
    (w / "config.yaml").write_text("model: {name: lenet5, width_mult: 0.25}\ndata: {name: synthetic}\n")
    (w / "notutf8.yaml").write_bytes(b"model: {name: \xff\xfe}\n")
    (w / "badyaml.yaml").write_text("model: [unclosed\n")
    (w / "list.yaml").write_text("- 1\n- 2\n")
    (w / "nan.yaml").write_text("train: {lr: .nan}\n")
    (w / "unknown.yaml").write_text("train: {lrate: 0.1}\n")
    (w / "file.txt").write_text("a user's file\n")
    (w / "weights.bin").write_bytes(b"a user's weights\n")  # what an OpenVINO export's .bin must not replace
    (w / "empty_dir").mkdir()
    (w / "foreign").mkdir()
    (w / "foreign" / "notes.txt").write_text("not ours\n")
    os.mkfifo(w / "fifo")
    try:
        os.mknod(w / "dev", 0o666 | stat.S_IFCHR, os.makedev(1, 3))  # a /dev/null of our own
    except (PermissionError, OSError):
        os.mkfifo(w / "dev")  # not root: a FIFO stands in (the guard refuses both the same way)
    (w / "zero_link").symlink_to("/dev/zero")
    (w / "loop_link").symlink_to(w / "loop_link")
    (w / "out_link").symlink_to(w / "file.txt")
    (w / "dir_link").symlink_to(w / "empty_dir")
    (w / "crafted").mkdir()
    _crafted(w)
    locked = _lock(w, "+i")
    (w / ".locked").write_text("yes" if locked else "")
    yield w
    if locked:
        _lock(w, "-i")  # else pytest could never delete the directory


def _snapshot(root: Path) -> dict[str, tuple]:
    state = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st = os.lstat(p)
            entry: tuple = (stat.S_IFMT(st.st_mode), st.st_size, st.st_mtime_ns, st.st_ino)
            if stat.S_ISREG(st.st_mode) and st.st_size < (1 << 20):
                entry += (hashlib.sha1(p.read_bytes()).hexdigest(),)
            elif stat.S_ISLNK(st.st_mode):
                entry += (os.readlink(p),)
            state[str(p.relative_to(root))] = entry
    return state


# --------------------------------------------------------------------------- the cases
# A valid, quick invocation of each command; a case appends its bad option (argparse: last wins).
def _base(command: str, w: Path, r: Path) -> list[str]:
    model = str(w / "model")
    return {
        "train": ["train", *TRAIN_FLAGS, "--out", str(r / "out")],
        "eval": ["eval", model, "--data", "synthetic"],
        "prune": ["prune", model, "--remove-channels", "0.25", "--out", str(r / "pruned")],
        "csgd": ["csgd", model, "--out", str(r / "csgd"), "--epochs", "1", "--data", "synthetic", "--subset", "64"]
        + ["--val-size", "0", "--batch-size", "32", "--no-progress"],
        "export": ["export", model, "--out", str(r / "m.onnx"), "--no-check"],
        "bench": ["bench", model, "--batch-sizes", "1", "--repeats", "1", "--warmup", "0", "--runtimes", "torch"],
        "info": ["info", model],
        "models": ["models", "lenet5"],
        "datasets": ["datasets", "synthetic"],
        "compress": ["compress", model, "--data", "synthetic", "--out", str(r / "m.prn"), "--bits", "4"]
        + [
            "--rescore-size",
            "32",
            "--calib-size",
            "16",
            "--set",
            "cycles=1",
            "--set",
            "generations=1",
            "--finetune-steps",
            "0",
            "--no-progress",
        ],
        "run": ["run", str(w / "exp" / "recipe.yaml"), "--out", str(r / "pipe"), "--dry-run", "--no-progress"],
        "report": ["report", str(r / "pipe")],
    }[command]


def _positional_base(command: str, dest: str, w: Path, r: Path) -> tuple[list[str], str]:
    """A valid invocation for a case that replaces the positional `dest`, and the value it replaces."""
    if command == "run":
        return _base(command, w, r), str(w / "exp" / "recipe.yaml")
    if (command, dest) == ("report", "run_dir"):
        return _base(command, w, r), str(r / "pipe")
    return _base(command, w, r), str(w / "model")


def _report_setup(r: Path, w: Path) -> None:
    shutil.copytree(w / "pipe", r / "pipe", symlinks=True)  # report rewrites files in the run: the case's own copy


# prepares the case's run directory for a command's base invocation
BASE_SETUP: dict[str, Callable[[Path, Path], None]] = {"report": _report_setup}


# options that only act together with another option
NEEDS = {
    ("prune", "--lr"): ["--finetune-epochs", "1", "--data", "synthetic"],
    ("prune", "--weight-decay"): ["--finetune-epochs", "1", "--data", "synthetic"],
    ("prune", "--seed"): ["--finetune-epochs", "1", "--data", "synthetic"],
    ("prune", "--threads"): ["--finetune-epochs", "1", "--data", "synthetic"],
    ("prune", "--subset"): ["--finetune-epochs", "1", "--data", "synthetic"],
    ("prune", "--val-size"): ["--finetune-epochs", "1", "--data", "synthetic"],
    ("prune", "--batch-size"): ["--finetune-epochs", "1", "--data", "synthetic"],
    ("train", "--rate"): ["--method", "sfp"],
    ("train", "--interval"): ["--method", "sfp"],
    ("train", "--width"): ["--method", "csgd"],
    ("train", "--eps"): ["--method", "csgd"],
    ("train", "--keep-macs"): ["--method", "sfp"],
    ("train", "--keep-params"): ["--method", "sfp"],
    ("train", "--keep-latency"): ["--method", "csgd"],
    ("train", "--latency-batch"): ["--method", "sfp", "--keep-macs", "0.5"],
    # the deprecated names of the budget flags (hidden from --help) are checked like the new ones
    ("train", "--macs-ratio"): ["--method", "sfp"],
    ("train", "--params-ratio"): ["--method", "sfp"],
    ("train", "--latency-ratio"): ["--method", "csgd"],
}
# -1 is a legitimate value here (seeds are any integer)
MINUS_ONE_OK = {"--seed"}


BASE_COMMANDS = ("train", "eval", "prune", "csgd", "compress", "export", "bench", "run", "report", "info", "models")
BASE_COMMANDS += ("datasets",)


def _commands(all_commands: bool = False) -> dict[str, argparse.ArgumentParser]:
    """The commands with a quick valid invocation in `_base` (all of them for the declaration check)."""
    parser = build_parser()
    found = {p.prog.split()[-1]: p for p in _sub_parsers(parser)[1:]}
    return found if all_commands else {k: v for k, v in found.items() if k in BASE_COMMANDS}


def _numeric_cases() -> list[Case]:
    cases = []
    for command, parser in _commands().items():
        for action in parser._actions:
            # a number-or-word flag (--cycles auto, --round-to auto) parses any word: the config refuses it
            if action.type not in (finite_float, cli_int, float_or_word, int_or_word) or not action.option_strings:
                continue
            flag = action.option_strings[0]
            huge = "1e999" if action.type in (finite_float, float_or_word) else str(2**31)
            values = {"nan": "nan", "inf": "inf", "neginf": "-inf", "word": "ten", "huge": huge}
            if flag not in MINUS_ONE_OK:
                values["minus1"] = "-1"
            for label, value in values.items():
                extra = NEEDS.get((command, flag), [])
                cases.append(
                    Case(
                        f"{command}{flag}={label}",
                        lambda w, r, c=command, f=flag, v=value, e=extra: [*_base(c, w, r), *e, f"{f}={v}"],
                        command,
                    )
                )
    return cases


# path values an OUTPUT must refuse; (name, path under world or a callable, needs --force to be a test)
OUTPUT_BAD = {
    "existing_file": lambda w: w / "file.txt",
    "existing_model": lambda w: w / "model",
    "existing_run": lambda w: w / "run",
    "foreign_dir": lambda w: w / "foreign",
    "fifo": lambda w: w / "fifo",
    "device": lambda w: w / "dev",
    "symlink_file": lambda w: w / "out_link",
    "symlink_dir": lambda w: w / "dir_link",
    "the_input": lambda w: w / "model",
    "under_a_file": lambda w: w / "file.txt" / "sub",
    # cannot be written even by root: a pseudo file system refuses to create files (os.access says yes)
    "proc": lambda w: Path("/proc/prunus-out"),
    "sys": lambda w: Path("/sys/prunus-out"),
    "proc_deeper": lambda w: Path("/proc/prunus-out/a/b"),
    # chattr +i (skipped where the file system or the user cannot set it)
    "immutable_parent": lambda w: w / "immutable_dir" / "out",
    "immutable_existing": lambda w: w / "immutable_dir",
}
# what "the_input" is for commands whose input is not the model directory
THE_INPUT = {
    "export": lambda w: w / "model" / "model.json",
    "run": lambda w: w / "exp",  # holds recipe.yaml, the file a pipeline directory is known by
}
# path values an INPUT must refuse
INPUT_BAD = {
    "missing": lambda w: w / "missing",
    "fifo": lambda w: w / "fifo",
    "device": lambda w: w / "dev",
    "dev_zero_link": lambda w: w / "zero_link",
    "symlink_loop": lambda w: w / "loop_link",
    "a_file": lambda w: w / "file.txt",
}


def _path_cases() -> list[Case]:
    cases = []
    for command, parser in _commands().items():
        has_force = any("--force" in a.option_strings for a in parser._actions)
        for action in parser._actions:
            flag = action.option_strings[0] if action.option_strings else None
            kind = getattr(action, "prunus_output", None)
            if kind:
                for label, where in OUTPUT_BAD.items():
                    if label == "the_input":
                        where = THE_INPUT.get(command, where)
                    if label == "existing_file" and kind == "rewrite":
                        continue  # rewriting an existing regular file is what --readme/--markdown are for
                    if label in ("existing_model", "existing_run") and kind == "file":
                        continue
                    if label == "immutable_existing" and kind in ("file", "rewrite"):
                        where = lambda w: w / "immutable_file"  # noqa: E731
                    forced = label in ("fifo", "device", "symlink_file", "foreign_dir", "immutable_existing")
                    forced |= label == "existing_file" and kind == "file"  # --force never replaces a user's file
                    for force in (False, True) if forced and has_force else (False,):
                        name = f"{command}{flag}={label}" + ("+force" if force else "")
                        cases.append(
                            Case(
                                name,
                                lambda w, r, c=command, f=flag, p=where, fo=force: [
                                    *_base(c, w, r),
                                    f,
                                    str(p(w)),
                                    *(["--force"] if fo else []),
                                ],
                                command,
                            )
                        )
            elif getattr(action, "prunus_input", False):
                for label, where in INPUT_BAD.items():
                    if label == "a_file" and (flag in ("--config",) or command == "info"):
                        continue  # a regular file is a valid --config / info path
                    if flag is None:  # the positional: replace the base's value of it
                        argv = lambda w, r, c=command, d=action.dest, p=where: [  # noqa: E731
                            str(p(w)) if a == value else a
                            for base, value in [_positional_base(c, d, w, r)]
                            for a in base
                        ]
                    else:
                        argv = lambda w, r, c=command, f=flag, p=where: [*_base(c, w, r), f, str(p(w))]  # noqa: E731
                    cases.append(Case(f"{command}{flag or ':' + action.dest}={label}", argv, command))
    return cases


# crafted directories whose model.json is well-formed: `info` describes them (it builds nothing)
HEADER_OK = {
    "huge_width_mult", "huge_num_classes", "shape_two_dims", "shape_wrong_channels", "shape_wrong_size",
    "kwargs_unknown", "kwargs_wrong_type", "arch_name_unknown", "arch_factory",
}  # fmt: skip


def _crafted_cases() -> list[Case]:
    cases = []
    names = [
        "huge_input_shape", "huge_width_mult", "huge_num_classes", "shape_string", "shape_bool", "shape_negative",
        "shape_two_dims", "shape_wrong_channels", "shape_wrong_size", "kwargs_list", "kwargs_unknown",
        "kwargs_wrong_type", "arch_name_int", "arch_name_unknown", "arch_string", "arch_factory", "history_dict",
        "metrics_list", "version_string", "version_newer", "format_other", "json_nan_literal", "json_torn",
        "json_binary", "json_empty", "json_list", "json_huge", "json_fifo", "json_dev_zero", "json_dir", "json_loop",
        "weights_int8", "weights_missing", "weights_truncated", "weights_fifo", "weights_other_arch",
    ]  # fmt: skip
    for name in names:
        for command in ("eval", "prune", "export", "bench", "csgd", "compress"):
            cases.append(
                Case(
                    f"crafted:{name}:{command}",
                    lambda w, r, c=command, n=name: [
                        str(w / "crafted" / n) if a == str(w / "model") else a for a in _base(c, w, r)
                    ],
                )
            )
        if not (name in HEADER_OK or name.startswith("weights_")):  # info reads model.json only
            cases.append(Case(f"crafted:{name}:info", lambda w, r, n=name: ["info", str(w / "crafted" / n)]))
    return cases


def _copy_run(r: Path, w: Path) -> Path:
    shutil.copytree(w / "run", r / "run", symlinks=True)
    return r / "run"


def _with(command: str, *extra: str) -> Callable[[Path, Path], list[str]]:
    """argv of `command`'s base invocation followed by `extra`."""
    return lambda w, r: [*_base(command, w, r), *extra]


def _recipe(name: str) -> Callable[[Path, Path], list[str]]:
    """`prunus run WORLD/name --dry-run`: a bad recipe file is refused before any plan."""
    return lambda w, r: ["run", str(w / name), "--out", str(r / "p"), "--dry-run"]


# the copy of the world's pipeline run that a case's setup changed (see _pipe_setup)
_RUN_COPY = lambda w, r: ["run", str(w / "exp" / "recipe.yaml"), "--out", str(r / "pipe"), "--no-progress"]  # noqa: E731
_REPORT_COPY = lambda w, r: ["report", str(r / "pipe")]  # noqa: E731


def _hand_cases() -> list[Case]:
    def run(*extra):
        return lambda w, r: ["train", "--resume", "--out", str(r / "run"), "--no-progress", *extra]

    return [
        # resume that may not change what the run is
        Case("resume:new_model", run("--model", "resnet20")),
        Case("resume:new_data", run("--data", "fashion-mnist")),
        Case("resume:new_optimizer", run("--optimizer", "adamw")),
        Case("resume:new_weight_decay", run("--weight-decay", "0.01")),
        Case("resume:new_method", run("--method", "sfp")),
        Case("resume:fewer_epochs", run("--epochs", "0")),
        Case("resume:new_seed", run("--seed", "7")),
        Case("resume:new_batch", run("--batch-size", "16")),
        Case("resume:other_config", lambda w, r: [*run()(w, r), "--config", str(w / "config.yaml")]),
        Case("resume:metrics_symlink", run("--epochs", "2")),
        Case("resume:checkpoint_garbage", run("--epochs", "2")),
        Case("info:binary_metrics", lambda w, r: ["info", str(r / "run")]),
        Case("info:garbage_middle_line", lambda w, r: ["info", str(r / "run")]),
        Case("resume:no_out", lambda w, r: ["train", "--resume", "--no-progress"]),
        Case("train:existing_run_no_resume", lambda w, r: ["train", *TRAIN_FLAGS, "--out", str(w / "run")]),
        # config files
        Case("train:config_dir", lambda w, r: ["train", "--config", str(w / "empty_dir"), "--out", str(r / "o")]),
        Case("train:config_not_utf8", lambda w, r: ["train", "--config", str(w / "notutf8.yaml")]),
        Case("train:config_bad_yaml", lambda w, r: ["train", "--config", str(w / "badyaml.yaml")]),
        Case("train:config_list", lambda w, r: ["train", "--config", str(w / "list.yaml")]),
        Case("train:config_nan", lambda w, r: ["train", "--config", str(w / "nan.yaml")]),
        Case("train:config_unknown_key", lambda w, r: ["train", "--config", str(w / "unknown.yaml")]),
        Case("csgd:config_not_utf8", lambda w, r: [*_base("csgd", w, r), "--config", str(w / "notutf8.yaml")]),
        # --set
        Case("train:set_bad_yaml", lambda w, r: [*_base("train", w, r), "--method", "sfp", "--set", "rate=[0.3"]),
        Case("train:set_nan", lambda w, r: [*_base("train", w, r), "--method", "sfp", "--set", "rate=.nan"]),
        Case("train:set_inf", lambda w, r: [*_base("train", w, r), "--method", "sfp", "--set", "rate=.inf"]),
        Case("train:set_no_equals", lambda w, r: [*_base("train", w, r), "--method", "sfp", "--set", "rate"]),
        Case("train:set_unknown", lambda w, r: [*_base("train", w, r), "--method", "sfp", "--set", "bogus=1"]),
        Case("train:set_no_method", lambda w, r: [*_base("train", w, r), "--set", "rate=0.3"]),
        Case("csgd:set_nan", lambda w, r: [*_base("csgd", w, r), "--set", "eps=.nan"]),
        Case("csgd:set_bad_yaml", lambda w, r: [*_base("csgd", w, r), "--set", "eps={"]),
        Case("csgd:set_unknown", lambda w, r: [*_base("csgd", w, r), "--set", "nope=1"]),
        # devices, shapes, data
        Case("train:device_cuda", lambda w, r: [*_base("train", w, r), "--device", "cuda"]),
        Case("prune:device_cuda", lambda w, r: [*_base("prune", w, r), *NEEDS[("prune", "--lr")], "--device", "cuda"]),
        Case("csgd:device_cuda", lambda w, r: [*_base("csgd", w, r), "--device", "cuda"]),
        Case("export:shape_channels", lambda w, r: [*_base("export", w, r), "--input-shape", "3,28,28"]),
        Case("bench:shape_channels", lambda w, r: [*_base("bench", w, r), "--input-shape", "3,28,28"]),
        Case("bench:shape_huge", lambda w, r: [*_base("bench", w, r), "--input-shape", "1,100000,100000"]),
        Case("export:shape_words", lambda w, r: [*_base("export", w, r), "--input-shape", "a,b,c"]),
        Case("export:shape_two", lambda w, r: [*_base("export", w, r), "--input-shape", "28,28"]),
        Case("export:bad_format", lambda w, r: [*_base("export", w, r), "--format", "tflite"]),
        Case("bench:bad_runtime", lambda w, r: [*_base("bench", w, r), "--runtimes", "tvm"]),
        Case("bench:compare_without_torch", lambda w, r: [*_base("bench", w, r)[:2], str(w / "model"), *_base("bench", w, r)[2:], "--runtimes", "onnxruntime"]),
        Case("bench:compare_crafted_second", lambda w, r: [*_base("bench", w, r)[:2], str(w / "crafted" / "shape_wrong_size"), *_base("bench", w, r)[2:]]),
        Case("bench:runtime_empty", lambda w, r: [*_base("bench", w, r), "--runtimes", ","]),
        Case("export:openvino_not_xml", lambda w, r: [*_base("export", w, r), "--format", "openvino", "--out", str(r / "m.onnx")]),
        Case("export:openvino_bin_exists", lambda w, r: [*_base("export", w, r), "--format", "openvino", "--out", str(w / "weights.xml")]),
        Case("bench:bad_batches", lambda w, r: [*_base("bench", w, r), "--batch-sizes", "0,x"]),
        Case("models:shape_words", lambda w, r: ["models", "--input-shape", "a,b,c"]),
        Case("models:no_match", lambda w, r: ["models", "nonet*"]),
        Case("datasets:no_match", lambda w, r: ["datasets", "nodata*"]),
        Case("eval:data_dir_missing", lambda w, r: ["eval", str(w / "model"), "--data-dir", str(r / "typo")]),
        Case("eval:batch_zero", lambda w, r: ["eval", str(w / "model"), "--data", "synthetic", "--batch-size", "0"]),
        Case("train:data_dir_missing", lambda w, r: [*_base("train", w, r), "--data", "fashion-mnist", "--data-dir", str(r / "x")]),
        Case("prune:finetune_opts_without_epochs", lambda w, r: [*_base("prune", w, r), "--lr", "0.1"]),
        Case("prune:taylor_without_data", lambda w, r: [*_base("prune", w, r), "--criterion", "taylor"]),
        Case("prune:ratio_one", lambda w, r: [*_base("prune", w, r), "--remove-channels", "1.0"]),
        Case("prune:macs_zero", lambda w, r: ["prune", str(w / "model"), "--keep-macs", "0", "--out", str(r / "p")]),
        Case("prune:out_is_source", lambda w, r: ["prune", str(w / "model"), "--remove-channels", "0.25", "--out", str(w / "model"), "--force"]),
        Case("prune:out_contains_source", lambda w, r: ["prune", str(w / "run" / "model"), "--remove-channels", "0.25", "--out", str(w / "run"), "--force"]),
        Case("train:warmup_ge_epochs", lambda w, r: [*_base("train", w, r), "--warmup-epochs", "1"]),
        Case("train:milestones_words", lambda w, r: [*_base("train", w, r), "--milestones", "a,b"]),
        Case("train:milestones_out_of_range", lambda w, r: [*_base("train", w, r), "--schedule", "step", "--milestones", "5"]),
        Case("train:unknown_command_flag", lambda w, r: [*_base("train", w, r), "--bogus"]),
        Case("cli:unknown_command", lambda w, r: ["frobnicate"]),
        Case("train:diverges", lambda w, r: [*_base("train", w, r), "--lr", "1e30", "--optimizer", "sgd"]),
        # compress
        Case("compress:set_nan", _with("compress", "--set", "population=.nan")),
        Case("compress:set_bad_yaml", _with("compress", "--set", "cycles=[1")),
        Case("compress:set_unknown", _with("compress", "--set", "nope=1")),
        Case("compress:bits_word", _with("compress", "--bits", "many")),
        Case("compress:bits_nine", _with("compress", "--bits", "9")),
        Case("compress:out_not_prn", lambda w, r: [*_base("compress", w, r), "--out", str(r / "m.bin")]),
        Case("compress:data_dir_missing", _with("compress", "--data", "fashion-mnist", "--data-dir", "/nonexistent/x")),
        # run: the recipe, --set, the run directory
        Case("run:set_nan", _with("run", "--set", "data.subset=.nan")),
        Case("run:set_inf_epochs", _with("run", "--set", "baseline.train.epochs=.inf")),
        Case("run:set_bad_yaml", _with("run", "--set", "seeds=[0")),
        Case("run:set_no_equals", _with("run", "--set", "seeds")),
        Case("run:set_unknown_key", _with("run", "--set", "bogus=1")),
        Case("run:set_unknown_stage", _with("run", "--set", "nostage.train.epochs=1")),
        Case("run:recipe_not_utf8", _recipe("notutf8.yaml")),
        Case("run:recipe_bad_yaml", _recipe("badyaml.yaml")),
        Case("run:recipe_list", _recipe("list.yaml")),
        Case("run:recipe_is_train_config", _recipe("config.yaml")),
        Case("run:recipe_dir", _recipe("exp")),
        Case("run:out_is_the_recipe", lambda w, r: ["run", str(w / "exp" / "recipe.yaml"), "--out", str(w / "exp" / "recipe.yaml")]),
        Case("run:default_out_holds_recipe", lambda w, r: ["run", str(r / "runs" / "tiny" / "recipe.yaml"), "--dry-run"]),
        Case("run:recipe_link_in_out", lambda w, r: [*_base("run", w, r)[:-2]]),
        Case("run:changed_recipe_over_old_run", lambda w, r: ["run", str(w / "exp" / "recipe.yaml"), "--out", str(r / "pipe"), "--set", "baseline.train.epochs=2", "--no-progress"]),
        Case("run:stage_record_fifo", _RUN_COPY),
        Case("run:stage_record_garbage", _RUN_COPY),
        # report: RUN_DIR mode
        Case("report:no_run_dir", lambda w, r: ["report"]),
        Case("report:results_flag_removed", lambda w, r: ["report", str(w / "pipe"), "--results", str(w / "results")]),
        Case("report:not_a_run", lambda w, r: ["report", str(w / "empty_dir")]),
        Case("report:train_run_dir", lambda w, r: ["report", str(w / "run")]),
        Case("report:records_garbage", _REPORT_COPY),
        Case("report:records_wrong_types", _REPORT_COPY),
        Case("report:records_binary", _REPORT_COPY),
        Case("report:records_fifo", _REPORT_COPY),
        Case("report:recipe_dev_zero", _REPORT_COPY),
        Case("report:html_is_fifo", _REPORT_COPY),
        Case("report:summary_is_dir", _REPORT_COPY),
        Case("report:summary_is_link", _REPORT_COPY),
    ]  # fmt: skip


def _pipe_setup(case_id: str, r: Path, w: Path) -> None:
    if case_id == "run:default_out_holds_recipe":  # runs/tiny/ holds the recipe: the default --out would be it
        (r / "runs" / "tiny").mkdir(parents=True)
        shutil.copy(w / "exp" / "recipe.yaml", r / "runs" / "tiny" / "recipe.yaml")
        os.chdir(r)
        return
    if case_id == "run:recipe_link_in_out":  # a directory whose recipe.yaml is a link is not a pipeline's
        (r / "pipe").mkdir()
        (r / "pipe" / "main").mkdir()
        (r / "pipe" / "recipe.yaml").symlink_to(w / "exp" / "recipe.yaml")
        return
    pipe = r / "pipe"
    shutil.copytree(w / "pipe", pipe, symlinks=True)
    record = pipe / "main" / "seed0" / "01-baseline" / "stage.json"
    change = {
        "run:stage_record_fifo": lambda: (record.unlink(), os.mkfifo(record)),
        "run:stage_record_garbage": lambda: record.write_bytes(b"\x00\xffgarbage"),
        "report:records_garbage": lambda: (pipe / "records.json").write_text('{"records": [{"arm": "main"}]}'),
        "report:records_wrong_types": lambda: (pipe / "records.json").write_text('{"records": 5}'),
        "report:records_binary": lambda: (pipe / "records.json").write_bytes(b"\xff\xfe\x00"),
        "report:records_fifo": lambda: ((pipe / "records.json").unlink(), os.mkfifo(pipe / "records.json")),
        "report:recipe_dev_zero": lambda: ((pipe / "recipe.yaml").unlink(), (pipe / "recipe.yaml").symlink_to("/dev/zero")),
        "report:html_is_fifo": lambda: os.mkfifo(pipe / "report.html"),
        "report:summary_is_dir": lambda: (pipe / "summary.md").mkdir(),
        "report:summary_is_link": lambda: (pipe / "summary.md").symlink_to(w / "file.txt"),
    }.get(case_id)  # fmt: skip
    if change is not None:
        change()


PIPE_CASES = ("run:default_out", "run:recipe_link", "run:changed", "run:stage_record", "report:records")
PIPE_CASES += ("report:recipe", "report:html", "report:summary")


def _hand_setup(case_id: str, r: Path, w: Path) -> None:
    if case_id.startswith(PIPE_CASES):
        _pipe_setup(case_id, r, w)
        return
    if case_id.startswith(("resume:", "info:binary", "info:garbage")) and case_id != "resume:no_out":
        run = _copy_run(r, w)
        if case_id.endswith("binary_metrics"):
            (run / "metrics.jsonl").write_bytes(b"\x00\xff\xfe\x80binary\n")
        elif case_id == "info:garbage_middle_line":
            (run / "metrics.jsonl").write_text('{"epoch": 0}\nnot json\n{"epoch": 1}\n')
        elif case_id == "resume:metrics_symlink":
            (run / "metrics.jsonl").unlink()
            (run / "metrics.jsonl").symlink_to(w / "file.txt")
        elif case_id == "resume:checkpoint_garbage":
            (run / "checkpoint.pt").write_bytes(b"PK\x03\x04 not a checkpoint")


CASES = _numeric_cases() + _path_cases() + _crafted_cases() + _hand_cases()


def test_the_table_is_big_enough():
    ids = [c.id for c in CASES]
    assert len(ids) == len(set(ids)), "case ids must be unique"
    assert len(CASES) >= 150
    assert {c.id.split(":")[0].split("-")[0] for c in CASES} >= {"train", "eval", "prune", "csgd", "export", "bench"}


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_one_line_exit_2_and_touches_nothing(case, world, tmp_path, capsys, monkeypatch):
    if "immutable" in case.id and not (world / ".locked").read_text():
        pytest.skip("chattr +i is not supported here")
    monkeypatch.chdir(tmp_path)  # a case may rely on the working directory (run's default --out)
    run_dir = tmp_path / "case"
    run_dir.mkdir()
    if case.command in BASE_SETUP:
        BASE_SETUP[case.command](run_dir, world)
    _hand_setup(case.id, run_dir, world)
    argv = case.argv(world, run_dir)
    before = _snapshot(world)
    try:
        rc = main(argv)
    except SystemExit as exc:  # argparse usage errors
        rc = exc.code
    captured = capsys.readouterr()
    err = captured.err
    assert "Traceback" not in err
    assert "Traceback" not in captured.out
    lines = [line for line in err.splitlines() if line.strip()]
    assert rc == 2, f"exit {rc} for {argv}; stderr: {err[-500:]}"
    assert len(lines) == 1, err
    assert lines[0].startswith("prunus: error: "), err
    assert _snapshot(world) == before, "a file outside the case's run directory changed"


def test_every_path_option_is_declared():
    """A command that takes a path must declare it (add_output_arg / mark_input) to get the guards."""
    path_dests = ("out", "json", "config", "data_dir", "model_dir", "path", "recipe", "run_dir", "results")
    for command, parser in _commands(all_commands=True).items():
        for action in parser._actions:
            looks_like_path = action.dest in path_dests or (
                isinstance(action.metavar, str)
                and any(k in action.metavar for k in ("DIR", "PATH", "YAML", ".json", "FILE"))
            )
            if action.dest == "json" and action.nargs == 0:
                continue  # `--json` as a flag (print JSON), not a path
            declared = getattr(action, "prunus_output", None) or getattr(action, "prunus_input", False)
            if looks_like_path:
                assert declared, f"prunus {command} {action.option_strings or action.dest} is not declared"


@pytest.mark.parametrize("command", BASE_COMMANDS)
def test_the_base_invocations_are_valid(command, world, tmp_path, monkeypatch, capsys):
    """A broken base would make every case built on it pass for the wrong reason: each must exit 0."""
    monkeypatch.chdir(tmp_path)
    r = tmp_path / "case"
    r.mkdir()
    name, _, dest = command.partition(":")
    BASE_SETUP.get(name, lambda r, w: None)(r, world)
    before = _snapshot(world)
    argv = _positional_base(name, dest, world, r)[0] if dest else _base(name, world, r)
    assert main(argv) == 0, capsys.readouterr().err
    assert _snapshot(world) == before
    if name == "report":  # the report was written into the case's copy of the run
        assert (r / "pipe" / "report.html").read_text().startswith("<!DOCTYPE html>")


def test_input_directories_are_refused_before_the_command_runs(world, tmp_path, capsys):
    """mark_input(action, "dir"): the guard names the flag and the path, before any file is read."""
    for argv, message in [
        (
            ["report", str(tmp_path / "gone")],
            re.escape(f"RUN_DIR {tmp_path / 'gone'} does not exist; expected a directory"),
        ),
        (
            ["report", str(world / "file.txt")],
            r"RUN_DIR \S+/file\.txt is not a directory; expected a directory",
        ),
    ]:
        assert main(argv) == 2
        assert re.fullmatch(f"prunus: error: {message}\n", capsys.readouterr().err)
