"""Fixtures for the method tests: the shared tiny model/data/config (`_tiny.py`, also used by DDP workers)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest


def _load_tiny() -> ModuleType:
    # --import-mode=importlib puts no test directory on sys.path; the torchrun workers import it as a sibling
    spec = importlib.util.spec_from_file_location("_tiny", Path(__file__).with_name("_tiny.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def tiny() -> ModuleType:
    """`tiny.tiny_data()`, `tiny.tiny_model(data, seed)`, `tiny.tiny_config(**overrides)`."""
    return _load_tiny()
