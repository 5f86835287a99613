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


def _from_target(node: ast.ImportFrom, path: Path, root: Path) -> str:
    """The module a `from X import ...` names, relative imports resolved against `path`'s package."""
    module = _module_name(path, root)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    if not node.level:
        return node.module or ""
    base = package.split(".")[: len(package.split(".")) - node.level + 1]
    return ".".join([*base, *([node.module] if node.module else [])])


def _imports(path: Path, root: Path = ROOT) -> list[tuple[int, str]]:
    """(line, imported prunus module) for every import in the file, at any depth."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] == "prunus"]
        elif isinstance(node, ast.ImportFrom):
            target = _from_target(node, path, root)
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
        "def f():\n    from prunus.cli import main\n    from ..methods import sfp\n    import prunus.training.x\n"
        "    from prunus import cli, create_model\n"
    )
    found = [t for _, t in _imports(f, tmp_path)]
    assert found == ["prunus.engine", "prunus.cli", "prunus.methods", "prunus.training.x", "prunus.cli", "prunus"]


@pytest.mark.parametrize(("module", "unit"), [("prunus", "prunus"), ("prunus.structure.groups", "structure")])
def test_units(module, unit):
    assert _unit(module) == unit


def _module_edges(path: Path, root: Path = ROOT) -> set[str]:
    """The prunus modules `path` imports, at any depth: `from a.b import c` is a.b.c when c is a module."""
    module = _module_name(path, root)
    found: set[str] = set()

    def is_module(name: str) -> bool:
        where = root.joinpath(*name.split("."))
        return (where / "__init__.py").exists() or where.with_suffix(".py").exists()

    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "prunus"}
        elif isinstance(node, ast.ImportFrom):
            target = _from_target(node, path, root)
            if target.split(".")[0] != "prunus":
                continue
            for a in node.names:
                found.add(f"{target}.{a.name}" if is_module(f"{target}.{a.name}") else target)
    return found - {module}


def _cycles(modules: list[Path], root: Path = ROOT) -> list[list[str]]:
    """Strongly connected groups of more than one module in the import graph (Tarjan)."""
    graph = {_module_name(p, root): _module_edges(p, root) for p in modules}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in graph:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycles():
    # lazy imports count: a cycle hidden inside a function still means neither module stands alone
    cycles = _cycles(MODULES)
    assert not cycles, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in cycles)


def test_the_cycle_finder_sees_a_lazy_cycle(tmp_path):
    pkg = tmp_path / "prunus" / "x"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from prunus.x import b\n")
    (pkg / "b.py").write_text("def f():\n    from prunus.x.a import g\n")
    (pkg / "c.py").write_text("from prunus.x.a import g\n")
    mods = sorted(tmp_path.rglob("*.py"))
    assert _cycles(mods, tmp_path) == [["prunus.x.a", "prunus.x.b"]]


RUN_FILES = {"config.yaml", "metrics.jsonl", "checkpoint.pt", "checkpoint.prev.pt", "summary.json", "stage.json",
             "stage.start.json", "records.json", "recipe.yaml", "report.html", "summary.md", "model.prn", "bench.json"}  # fmt: skip
OWNER = PACKAGE / "formats" / "run_dir.py"


def _string_literals(path: Path) -> list[tuple[int, str]]:
    """(line, value) of every string constant that is not a docstring."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    docstrings = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                docstrings.add(id(first.value))
    return [
        (node.lineno, node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings
    ]


def test_run_directory_file_names_are_spelled_in_one_module():
    # formats/run_dir.py owns a run's layout: a second spelling of a name is a second owner waiting to diverge
    found = [
        f"{path.relative_to(ROOT)}:{line} spells {value!r}"
        for path in [*MODULES, *sorted((ROOT / "benchmarks").glob("*.py"))]
        if path != OWNER
        for line, value in _string_literals(path)
        if value in RUN_FILES
    ]
    assert not found, "use prunus.formats.run_dir.RunDir instead:\n" + "\n".join(found)
