"""The layers of docs/architecture.md, enforced: no module imports a module of a higher layer.

Every import is read with `ast` from every module of the package, including imports inside
functions (lazy imports) and under `if TYPE_CHECKING:`, because a lazy upward import is still a
dependency cycle waiting to happen. The layer table is parsed from docs/architecture.md, so the
document and the check cannot drift apart: placing a new package means editing the document.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "prunus"
DOC = ROOT / "docs" / "architecture.md"
# a table line of the layer block: "<n>  <name>: unit unit ..."
LINE = re.compile(r"^\s*(\d+)\s+[\w/ -]+:\s+(.+?)\s*$")


def _layers() -> dict[str, int]:
    text = DOC.read_text(encoding="utf-8")
    block = re.search(r"```text layers\n(.*?)```", text, re.S)
    assert block, f"{DOC} has no ```text layers block"
    layers: dict[str, int] = {}
    for line in block.group(1).splitlines():
        m = LINE.match(line)
        if m:
            for unit in m.group(2).split():
                assert unit not in layers, f"{unit} is listed twice in the layer table"
                layers[unit] = int(m.group(1))
    return layers


LAYERS = _layers()


def _module_name(path: Path, root: Path = ROOT) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _unit(module: str) -> str:
    """The layer unit of a prunus module: its top-level subpackage or module ("prunus" = the facade)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "prunus"


def _imports(path: Path, root: Path = ROOT) -> list[tuple[int, str]]:
    """(line, imported prunus module) for every import in the file, at any depth."""
    module = _module_name(path, root)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] == "prunus"]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join([*base, *([node.module] if node.module else [])])
            else:
                target = node.module or ""
            if target.split(".")[0] != "prunus":
                continue
            if target == "prunus":  # "from prunus import x": a submodule x, or a name of the facade
                for a in node.names:
                    sub = root / "prunus" / a.name
                    is_module = sub.is_dir() or sub.with_suffix(".py").exists()
                    out.append((node.lineno, f"prunus.{a.name}" if is_module else "prunus"))
            else:
                out.append((node.lineno, target))
    return out


MODULES = sorted(PACKAGE.rglob("*.py"))


def test_every_unit_has_a_layer():
    units = {_unit(_module_name(p)) for p in MODULES}
    missing = sorted(units - set(LAYERS))
    assert not missing, f"place these in the layer table of docs/architecture.md: {missing}"


def test_no_upward_imports():
    upward = []
    for path in MODULES:
        src = _unit(_module_name(path))
        for line, target in _imports(path):
            dst = _unit(target)
            if dst not in LAYERS or src not in LAYERS:
                continue  # reported by test_every_unit_has_a_layer
            if LAYERS[dst] > LAYERS[src]:
                rel = path.relative_to(ROOT)
                upward.append(
                    f"{rel}:{line} imports {target} ({src}, layer {LAYERS[src]} -> {dst}, layer {LAYERS[dst]})"
                )
    assert not upward, "upward imports:\n" + "\n".join(upward)


def test_the_walker_sees_lazy_and_relative_imports(tmp_path):
    # the check is only as good as its import reader: a lazy import inside a function and a
    # relative import must both be found
    pkg = tmp_path / "prunus" / "models"
    pkg.mkdir(parents=True)
    (tmp_path / "prunus" / "cli").mkdir()
    f = pkg / "lazy.py"
    f.write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from prunus.engine import Trainer\n"
        "def f():\n    from prunus.cli import main\n    from ..methods import sfp\n    import prunus.recipes.x\n"
        "    from prunus import cli, create_model\n"
    )
    found = [t for _, t in _imports(f, tmp_path)]
    assert found == ["prunus.engine", "prunus.cli", "prunus.methods", "prunus.recipes.x", "prunus.cli", "prunus"]


@pytest.mark.parametrize(("module", "unit"), [("prunus", "prunus"), ("prunus.structure.groups", "structure")])
def test_units(module, unit):
    assert _unit(module) == unit
