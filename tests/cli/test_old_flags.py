"""The budget flags' names before issue 28 (`--ratio`, `--macs-ratio`, `--params-ratio`, `--latency-ratio`)
still work for one release: hidden from --help, the same run as the new flag, one warning naming the
new flag, and both flags at once refused with one error line."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings

import pytest
import torch

import prunus
from prunus.cli import build_parser, main
from prunus.cli._common import _sub_parsers
from prunus.errors import PrunusDeprecationWarning
from prunus.formats.run_dir import RunDir, resolve_model_dir

NEW_FLAGS = {
    "prune": ["--remove-channels", "--keep-macs", "--keep-params", "--keep-latency"],
    "train": ["--keep-macs", "--keep-params", "--keep-latency"],
    "csgd": ["--keep-macs", "--keep-params", "--keep-latency"],
}
OLD_FLAGS = ["--ratio", "--macs-ratio", "--params-ratio", "--latency-ratio"]


def _help(command: str) -> str:
    (parser,) = [p for p in _sub_parsers(build_parser())[1:] if p.prog.split()[-1] == command]
    return parser.format_help()


@pytest.mark.parametrize("command", sorted(NEW_FLAGS))
def test_help_lists_the_new_flags_and_hides_the_old_ones(command):
    text = _help(command)
    for flag in NEW_FLAGS[command]:
        assert f"{flag} " in text, flag
    for flag in OLD_FLAGS:
        assert f"{flag} " not in text, flag


def _model_dir(tmp_path):
    torch.manual_seed(0)
    model = prunus.create_model("lenet5", in_channels=1, width_mult=0.5)
    return prunus.save(model, tmp_path / "model", input_shape=(1, 28, 28))


def _prune(argv: list[str]) -> tuple[int, list[str]]:
    """`prunus prune ARGV` in-process: exit code and the prunus deprecation messages."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rc = main(["prune", *argv])
    return rc, [str(w.message) for w in caught if issubclass(w.category, PrunusDeprecationWarning)]


@pytest.mark.parametrize(("old", "new", "value"), [("--ratio", "--remove-channels", "0.4"),
                                                   ("--macs-ratio", "--keep-macs", "0.5"),
                                                   ("--params-ratio", "--keep-params", "0.5")])  # fmt: skip
def test_an_old_flag_prunes_like_the_new_one_with_one_warning(tmp_path, old, new, value):
    src = _model_dir(tmp_path)
    rc, said = _prune([str(src), new, value, "--out", str(tmp_path / "new")])
    assert (rc, said) == (0, [])
    rc, said = _prune([str(src), old, value, "--out", str(tmp_path / "old")])
    assert (rc, said) == (0, [f"{old} is deprecated; use {new}"])
    a, b = (prunus.load(resolve_model_dir(tmp_path / d)) for d in ("old", "new"))
    assert a.state_dict().keys() == b.state_dict().keys()
    assert all(torch.equal(a.state_dict()[k], b.state_dict()[k]) for k in a.state_dict())
    # the same stage: recorded under the new name either way, so the old command resumes the new run
    record = {d: RunDir(resolve_model_dir(tmp_path / d).parent).read_record() for d in ("old", "new")}
    assert record["old"]["config"] == record["new"]["config"]
    assert record["old"]["hash"] == record["new"]["hash"]
    rc, _ = _prune([str(src), old, value, "--out", str(tmp_path / "new")])
    assert rc == 0
    assert RunDir(resolve_model_dir(tmp_path / "new").parent).read_record() == record["new"]  # nothing ran again


def test_old_and_new_flag_together_are_one_error_line(tmp_path, capsys):
    src = _model_dir(tmp_path)
    rc = main(["prune", str(src), "--macs-ratio", "0.5", "--keep-macs", "0.5", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.strip() == "prunus: error: --macs-ratio is the deprecated name of --keep-macs; give only --keep-macs"
    assert not (tmp_path / "o").exists()


def test_the_command_prints_the_deprecation_as_one_warning_line(tmp_path):
    src = _model_dir(tmp_path)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    argv = [sys.executable, "-m", "prunus", "prune", str(src), "--ratio", "0.25", "--out", str(tmp_path / "o")]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines == ["prunus: warning: --ratio is deprecated; use --remove-channels"]


def _train_methods(argv: list[str]):
    """The methods `prunus train ARGV` would run with, and the deprecation messages (nothing is trained)."""
    from prunus.cli.train_cmd import _method_specs
    from prunus.training import resolve_run_config

    args = build_parser().parse_args(["train", *argv])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        config = resolve_run_config(None, {"methods": _method_specs(args)})
    return config.methods, [str(w.message) for w in caught if issubclass(w.category, PrunusDeprecationWarning)]


@pytest.mark.parametrize(("old", "new"), [("macs-ratio", "keep-macs"), ("params-ratio", "keep-params"),
                                          ("latency-ratio", "keep-latency")])  # fmt: skip
def test_train_takes_the_old_budget_flags_and_set_keys(old, new):
    want, said = _train_methods(["--method", "sfp", f"--{new}", "0.5"])
    assert said == []
    field = new.replace("-", "_")
    assert want[0].args[field] == 0.5
    methods, said = _train_methods(["--method", "sfp", f"--{old}", "0.5"])
    assert said == [f"--{old} is deprecated; use --{new}"]
    assert methods == want
    methods, said = _train_methods(["--method", "sfp", "--set", f"{old.replace('-', '_')}=0.5"])
    assert said == [f"{old.replace('-', '_')} is deprecated; use {field}"]
    assert methods == want


def test_csgd_takes_the_old_budget_flags_and_set_keys():
    from prunus.cli.csgd_cmd import _stage

    def stage_args(argv):
        args = build_parser().parse_args(["csgd", "m", "--out", "o", *argv])
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            _, stage = _stage(args, {})
        return stage["args"], [str(w.message) for w in caught if issubclass(w.category, PrunusDeprecationWarning)]

    assert stage_args(["--keep-macs", "0.5"]) == ({"keep_macs": 0.5}, [])
    assert stage_args(["--macs-ratio", "0.5"]) == ({"keep_macs": 0.5}, ["--macs-ratio is deprecated; use --keep-macs"])
    # --set passes the old key on; the stage moves it (tests/pipeline/test_old_names.py)
    assert stage_args(["--set", "macs_ratio=0.5"]) == ({"macs_ratio": 0.5}, [])
