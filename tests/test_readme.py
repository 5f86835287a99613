"""The README cannot drift: every command in it parses with the real CLI, every Python block compiles
and names real API, and the newcomer's path (install extras, quickstart, prune a model you have, your
own model) runs as written, shrunk where it would take minutes."""

from __future__ import annotations

import ast
import importlib
import re
import shlex
import sys
from pathlib import Path

import pytest
import tomllib

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)


def blocks(lang: str) -> list[tuple[str, str]]:
    """(heading, code) of every fenced block of `lang`, with the `##`/`###` heading it sits under."""
    found = []
    for m in FENCE.finditer(README):
        if m.group(1) == lang:
            headings = re.findall(r"^#{2,3} (.+)$", README[: m.start()], re.M)
            found.append((headings[-1] if headings else "", m.group(2)))
    return found


def commands(code: str) -> list[list[str]]:
    """The shell commands of a bash block as argv lists (comments dropped, `\\` continuations joined)."""
    out = []
    for line in code.replace("\\\n", " ").splitlines():
        argv = shlex.split(line, comments=True)
        if argv:
            out.append(argv)
    return out


def prunus_argv(argv: list[str]) -> list[str] | None:
    """The arguments given to prunus by one command line, or None when it does not run prunus."""
    if Path(argv[0]).name == "prunus":
        return argv[1:]
    if "-m" in argv and argv[argv.index("-m") + 1 : argv.index("-m") + 2] == ["prunus"]:
        return argv[argv.index("-m") + 2 :]
    return None


ALL_COMMANDS = [argv for _, code in blocks("bash") for argv in commands(code)]
PRUNUS_COMMANDS = [a for argv in ALL_COMMANDS if (a := prunus_argv(argv)) is not None]


def test_the_readme_has_commands_to_check():
    assert len(PRUNUS_COMMANDS) >= 40
    assert len(blocks("python")) >= 10


@pytest.mark.parametrize("argv", PRUNUS_COMMANDS, ids=[" ".join(a)[:80] for a in PRUNUS_COMMANDS])
def test_every_prunus_command_parses_with_the_real_cli(argv):
    from prunus.cli import build_parser

    args = build_parser().parse_args(argv)  # an unknown flag, command or bad choice exits here
    assert args.command == argv[0]


def test_every_other_command_names_a_make_target_or_an_extra_that_exists():
    targets = set(re.findall(r"^([\w-]+):", (ROOT / "Makefile").read_text(), re.M))
    extras = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"])
    for argv in ALL_COMMANDS:
        if argv[0] == "make":
            assert set(argv[1:]) <= targets, argv
        if argv[:2] == ["pip", "install"]:
            for spec in argv[2:]:
                named = re.findall(r"\[([\w,]+)\]", spec)
                assert all(set(n.split(",")) <= extras for n in named), spec
    # the extras table names every extra of pyproject, and nothing else
    table = set(re.findall(r"^\| `(\w+)` \|", README, re.M))
    assert table == extras


@pytest.mark.parametrize(("heading", "code"), blocks("python"), ids=[h[:40] for h, _ in blocks("python")])
def test_every_python_block_compiles_and_imports_real_names(heading, code):
    tree = ast.parse(code)
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "prunus":
            module = importlib.import_module(node.module)
            for alias in node.names:
                assert hasattr(module, alias.name), f"{heading}: {node.module} has no {alias.name}"
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "prunus":
            import prunus

            assert hasattr(prunus, node.attr), f"{heading}: prunus.{node.attr} does not exist"


def _block(heading: str, lang: str, contains: str) -> str:
    return next(code for h, code in blocks(lang) if h == heading and contains in code)


SHRINK = [  # the quickstart, shrunk from minutes to seconds; the flags themselves are checked above
    ("--subset 3000", "--subset 320"),
    ("--val-size 500", "--val-size 64"),
    ("--test-subset 1000", "--test-subset 128"),
    ("--epochs 2", "--epochs 1"),
    ("--batch-sizes 64 --repeats 10", "--batch-sizes 8 --repeats 2 --warmup 0"),
]


def test_the_newcomers_path_runs_as_written(tmp_path, monkeypatch, fashion_dir, capsys):
    """Quickstart (CLI, then Python), "Prune a model you have" and "Your own model", in one working directory."""
    from prunus.cli import main

    monkeypatch.chdir(tmp_path)
    quickstart = _block("Quickstart", "bash", "prunus train")
    for argv in commands(quickstart):
        line = " ".join(argv)
        for old, new in SHRINK:
            line = line.replace(old, new)
        args = shlex.split(line)[1:]
        if args[0] == "eval":
            continue  # scores the whole 10k test set: parsed above, run by tests/cli
        if args[0] in ("train", "prune"):
            args.append("--no-progress")
        assert main(args) == 0, line
    assert [p.parent.parent.name for p in (tmp_path / "runs/r20-half").rglob("model.onnx")] == ["02-finetune"]
    import yaml

    finetune = yaml.safe_load((tmp_path / "runs/r20-half/02-finetune/config.yaml").read_text())
    assert (finetune["data"]["subset"], finetune["data"]["test_subset"]) == (320, 128)  # prune's data flags reach it
    out = capsys.readouterr().out
    assert "MACs cut" in out  # bench compared the two models
    namespace: dict = {}
    exec(compile(_block("Quickstart", "python", "prunus.prune"), "README quickstart", "exec"), namespace)
    assert 0.475 <= namespace["report"].achieved_macs_ratio <= 0.5
    assert (tmp_path / "runs/r20-half-api/model.json").is_file()
    exec(compile(_block("Prune a model you have", "python", "prunus.prune"), "README prune", "exec"), {})
    exec(compile(_block("Budgets: MACs, parameters or measured latency (one-shot or while training)", "python",
                        "params_ratio"), "README budgets", "exec"), {})  # fmt: skip


def test_your_own_model_saves_and_loads_as_the_readme_says(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    heading = "Your own model: save and load, factories, timm, several inputs"
    factory = _block(heading, "python", "# mynets.py")
    (tmp_path / "mynets.py").write_text(factory)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "mynets", raising=False)
    namespace: dict = {}
    exec(compile(_block(heading, "python", "import mynets"), "README own model", "exec"), namespace)
    import torch

    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(namespace["same"](x), namespace["pruned"](x), rtol=0, atol=1e-6)
    import prunus
    from prunus.errors import PrunusError

    with pytest.raises(PrunusError, match="trust"):
        prunus.load("runs/mine")  # the README says: without the opt-in, one line saying so


def test_a_timm_model_saves_and_loads_without_a_trust_flag(tmp_path, monkeypatch):
    pytest.importorskip("timm")
    monkeypatch.chdir(tmp_path)
    heading = "Your own model: save and load, factories, timm, several inputs"
    namespace: dict = {}
    exec(compile(_block(heading, "python", "timm:resnet18"), "README timm", "exec"), namespace)
    import torch

    x = torch.randn(2, 3, 64, 64)
    namespace["pruned"].eval()
    torch.testing.assert_close(namespace["same"].eval()(x), namespace["pruned"](x), rtol=0, atol=1e-5)
