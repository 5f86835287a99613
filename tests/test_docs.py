"""Docs that the code cites exist in the repository (docstrings and comments say "see docs/x.md")."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CITED = re.compile(r"(?<![\w/.-])((?:docs/)?[A-Za-z][\w-]*\.md)\b")
# Markdown files prunus writes (prunus report: RUN_DIR/summary.md), named in code but not docs to cite
WRITTEN = {"summary.md"}


def _citations() -> list[tuple[str, str]]:
    out = []
    for path in sorted([*(ROOT / "prunus").rglob("*.py"), *(ROOT / "benchmarks").glob("*.py")]):
        for name in sorted(set(CITED.findall(path.read_text(encoding="utf-8"))) - WRITTEN):
            out.append((str(path.relative_to(ROOT)), name))
    return out


def test_some_docs_are_cited():
    assert any(name.endswith("benchmarks.md") for _, name in _citations())


@pytest.mark.parametrize(("source", "name"), _citations())
def test_cited_doc_exists(source, name):
    candidates = [ROOT / name, ROOT / "docs" / Path(name).name]
    assert any(p.is_file() for p in candidates), f"{source} cites {name}, which is not in the repository"
