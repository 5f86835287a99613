"""CLI smoke tests: every command has --help with an example; errors are one line + exit 2."""

from __future__ import annotations

import json
import os
import re

import pytest

import prunus
from prunus.cli import build_parser, main


def _commands():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    return sorted(sub.choices)


@pytest.mark.parametrize("command", _commands())
def test_every_command_has_help_with_an_example(command, capsys):
    with pytest.raises(SystemExit) as exc:
        main([command, "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "example:" in out
    assert f"prunus {command}" in out


def test_train_eval_info_end_to_end(tmp_path, capsys):
    out = tmp_path / "run"
    rc = main(
        [
            "train",
            "--model",
            "lenet5",
            "--width-mult",
            "0.5",
            "--data",
            "synthetic",
            "--epochs",
            "2",
            "--batch-size",
            "32",
            "--val-size",
            "64",
            "--no-progress",
            "--out",
            str(out),
        ]
    )
    assert rc == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["metrics"]["final_test_acc"] > 0.3
    assert summary["config"]["train"]["epochs"] == 2
    assert (out / "config.yaml").exists()
    capsys.readouterr()
    assert main(["info", str(out / "model"), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["kind"] == "model"
    assert info["arch"]["name"] == "lenet5"
    assert main(["info", str(out / "checkpoint.pt"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["epochs_done"] == 2
    # a second train into the same dir without --resume is refused; with --resume it is a no-op
    assert main(["train", "--data", "synthetic", "--out", str(out), "--no-progress"]) == 2
    assert "--resume" in capsys.readouterr().err
    assert main(["train", "--resume", "--out", str(out), "--no-progress"]) == 0


def test_yaml_config_is_overridden_by_flags(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        "model: {name: lenet5, width_mult: 0.5}\ndata: {name: synthetic, val_size: 0}\ntrain: {epochs: 3, lr: 0.02}\n"
    )
    out = tmp_path / "run"
    assert main(["train", "--config", str(cfg), "--epochs", "1", "--no-progress", "--out", str(out)]) == 0
    saved = (out / "config.yaml").read_text()
    assert "epochs: 1" in saved  # the flag won
    assert "lr: 0.02" in saved  # the YAML value beat the default


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["train", "--model", "nonet"], "invalid choice"),
        (["train", "--data", "synthetic", "--epochs", "0"], "epochs=0 is not valid"),
        (["train", "--data", "synthetic", "--lr", "-1"], "lr=-1.0 is out of range"),
        (["train", "--data", "synthetic", "--rate", "0.4"], "no --method"),
        (["eval", "/nonexistent/model"], "model directory not found"),
        (["info", "/nonexistent/x"], "no such file"),
    ],
)
def test_bad_input_gives_one_line_error_and_exit_2(argv, message, capsys):
    try:
        rc = main(argv)
    except SystemExit as exc:  # argparse usage errors
        rc = exc.code
    err = capsys.readouterr().err
    assert rc == 2
    assert message in err
    assert "Traceback" not in err


def test_corrupt_model_file_gives_one_line_error(tmp_path, capsys):
    prunus.save(prunus.create_model("lenet5", in_channels=1), tmp_path, input_shape=(1, 28, 28))
    (tmp_path / "model.safetensors").write_bytes(b"\x00" * 10)
    assert main(["eval", str(tmp_path), "--data", "synthetic"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("prunus: error:")
    assert "corrupt" in err
    assert len(err.splitlines()) == 1


def test_eval_prints_the_accuracy_a_hand_written_loop_computes(tmp_path, capsys):
    import torch

    from prunus.data import DataConfig, build_loaders

    torch.manual_seed(3)
    model = prunus.create_model("lenet5", in_channels=1, width_mult=0.5).eval()
    prunus.save(model, tmp_path, input_shape=(1, 28, 28))
    assert main(["eval", str(tmp_path), "--data", "synthetic", "--batch-size", "64"]) == 0
    out = capsys.readouterr().out
    data = build_loaders(DataConfig(name="synthetic", eval_batch_size=64, augment=False))
    hits = {"argmax": 0, "argmin": 0}
    total = 0
    with torch.no_grad():
        for x, y in data.test:
            logits = model(x)
            hits["argmax"] += int((logits.argmax(1) == y).sum())
            hits["argmin"] += int((logits.argmin(1) == y).sum())
            total += len(y)
    shown = {k: f"{100 * v / total:.2f}%" for k, v in hits.items()}
    assert shown["argmax"] != shown["argmin"]  # the check below can tell the two apart
    printed = re.search(r"test accuracy\W+([0-9.]+%)", out)
    assert printed is not None, out
    assert printed.group(1) == shown["argmax"]


USER_NET = """
import torch
from prunus.models.info import update_info


def build():
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.Conv2d(4, 16, 3, padding=1), torch.nn.BatchNorm2d(16),
        torch.nn.ReLU(), torch.nn.Conv2d(16, 16, 3, padding=1), torch.nn.BatchNorm2d(16), torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(16, 10),
    )
    update_info(net, stem="0", classifier="9")
    return net
"""


def test_warnings_reach_the_terminal_as_one_formatted_line_each(tmp_path):
    import subprocess
    import sys

    (tmp_path / "usernet.py").write_text(USER_NET)
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
    }
    save = "import prunus, usernet; prunus.save(usernet.build(), 'm', input_shape=(1, 16, 16), factory='usernet:build')"
    subprocess.run([sys.executable, "-c", save], cwd=tmp_path, env=env, check=True, timeout=120)
    # keep_macs=0.5 with round_to=8 lands at 0.309 on this net: BudgetNotMetWarning, said in one line
    argv = [sys.executable, "-m", "prunus", "prune", "m", "--keep-macs", "0.5", "--round-to", "8", "--trust-factory",
            "--out", "o"]  # fmt: skip
    proc = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr
    warned = [line for line in proc.stderr.splitlines() if line.strip()]
    assert warned, "the budget miss must be said"
    assert all(line.startswith("prunus: warning: ") for line in warned), proc.stderr
    assert "keep_macs=0.5: the closest cut keeps 0.309" in warned[0]
    assert ".py:" not in proc.stderr  # no file path and line number, no source line


def test_a_number_or_word_flag_takes_one_value_and_says_so():
    """`--cycles auto` / `--cycles 6` and `--round-to auto` / `--round-to 8`: one value, not a list."""
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices
    compress = {a.dest: a for a in sub["compress"]._actions}
    prune = {a.dest: a for a in sub["prune"]._actions}
    for action in (compress["cycles"], compress["calib_size"], compress["quant_drop"], prune["round_to"]):
        assert action.metavar is None, action.dest  # argparse prints the dest's name, as for any number
    args = parser.parse_args(["compress", "m", "--out", "x.prn", "--cycles", "6", "--quant-drop", "auto"])
    assert (args.cycles, args.quant_drop) == (6, "auto")
