"""A missing optional dependency is one line naming the extra that installs it, before any slow work."""

from __future__ import annotations

import sys

import pytest
import torch

import prunus
from prunus.errors import MissingDependencyError


def test_writing_a_prn_without_constriction_names_the_compress_extra_and_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "constriction", None)  # `import constriction` raises ImportError
    model = prunus.create_model("lenet300_100", in_channels=1, width_mult=0.1)
    with pytest.raises(
        MissingDependencyError, match=r"^writing a .prn file needs constriction: pip install 'prunus\[compress\]'$"
    ):
        prunus.compress(model, torch.zeros(8, 1, 28, 28), out=tmp_path / "m.prn")
    assert list(tmp_path.iterdir()) == []


def test_the_cli_says_it_in_one_line(tmp_path, monkeypatch, capsys):
    from prunus.cli import main

    monkeypatch.setitem(sys.modules, "constriction", None)
    prunus.save(
        prunus.create_model("lenet300_100", in_channels=1, width_mult=0.1), tmp_path / "m", input_shape=(1, 28, 28)
    )
    args = ["compress", str(tmp_path / "m"), "--data", "synthetic", "--no-progress", "--out", str(tmp_path / "m.prn")]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("prunus: error: ")
    assert "pip install 'prunus[compress]'" in err
    # the README's install section quotes this line
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert err.strip() in readme


def test_report_figures_without_matplotlib_name_the_report_extra(monkeypatch):
    from prunus.report.plots import pareto_png

    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(MissingDependencyError, match=r"needs matplotlib: pip install 'prunus\[report\]'$"):
        pareto_png([{"x": 1.0, "acc": 0.5, "label": "a"}], "MACs")
