"""The command line on the models users bring that are not images: a 1-d (audio) and a 3-d (volume) CNN go
through prune -> export -> bench like an image model, and a model with two inputs is refused in one line."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch

import prunus
from prunus.cli import main

from ..structure import families as fam


@pytest.fixture
def user_models(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "prunus_test_families", fam)  # the factory the model files name

    def saved(name: str):
        torch.manual_seed(0)
        x = fam.inputs(name)
        shape = tuple(x.shape[1:]) if isinstance(x, torch.Tensor) else tuple(tuple(t.shape[1:]) for t in x)
        return prunus.save(fam.build(name).eval(), tmp_path / name, input_shape=shape), x

    return saved


# tcn: weight_norm, dilated padding="same"; decoder1d: ConvTranspose1d
@pytest.mark.parametrize("name", ["conv1d", "conv3d", "tcn", "decoder1d"])
def test_prune_export_and_bench_a_cnn_of_another_rank(name, user_models, tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    import onnxruntime as ort

    dense, x = user_models(name)
    shape = list(x.shape[1:])
    assert (
        main(["prune", str(dense), "--remove-channels", "0.5", "--out", str(tmp_path / "run"), "--trust-factory"]) == 0
    )
    pruned = tmp_path / "run" / "01-prune" / "model"
    model = prunus.load(pruned, trust_factory=True).eval()
    assert list(prunus.models.info.get_info(model).input_shape) == shape
    assert prunus.count(model, tuple(shape)).macs < prunus.count(fam.build(name), tuple(shape)).macs

    assert main(["export", str(pruned), "--format", "onnx", "--trust-factory"]) == 0
    session = ort.InferenceSession(str(pruned / "model.onnx"), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    with torch.no_grad():
        np.testing.assert_allclose(got, model(x).numpy(), atol=1e-4, rtol=1e-4)

    out = tmp_path / "bench.json"
    argv = ["bench", str(dense), str(pruned), "--batch-sizes", "1", "--repeats", "2", "--warmup", "0"]
    assert main([*argv, "--runtimes", "torch", "--threads", "1", "--json", str(out), "--trust-factory"]) == 0
    data = json.loads(out.read_text())
    assert data["input_shape"] == shape
    d, p = data["models"]
    assert p["macs_ratio"] == d["macs"] / p["macs"] > 1
    capsys.readouterr()


def test_a_model_with_two_inputs_is_refused_by_export_and_bench_in_one_line(user_models, capsys):
    path, _ = user_models("tuple_io")
    for argv in (["export", str(path), "--format", "onnx"], ["bench", str(path), "--repeats", "1"]):
        assert main([*argv, "--trust-factory"]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1
        assert (
            "takes several inputs (((3, 8, 8), (1, 8, 8))); prunus export and bench handle models with one input" in err
        )


class _FixedSize(torch.nn.Module):
    """timm's fixed-size models assert their input size in forward (an AssertionError, not a RuntimeError)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3)
        self.fc = torch.nn.Linear(4, 5)

    def forward(self, x):
        assert x.shape[-1] == 8, f"Input width ({x.shape[-1]}) doesn't match model (8)."
        return self.fc(self.conv(x).mean((2, 3)))


@pytest.mark.parametrize("command", ["export", "eval"])
def test_a_shape_a_fixed_size_model_asserts_against_is_one_line(command, tmp_path, monkeypatch, capsys):
    import types

    module = types.ModuleType("prunus_test_fixed_size")
    module.build = _FixedSize
    monkeypatch.setitem(sys.modules, "prunus_test_fixed_size", module)
    saved = prunus.save(
        _FixedSize().eval(), tmp_path / "fixed", input_shape=(3, 8, 8), factory="prunus_test_fixed_size:build"
    )
    argv = (["export", str(saved), "--format", "onnx", "--input-shape", "3,9,9"] if command == "export"
            else ["eval", str(saved), "--data", "synthetic"])  # fmt: skip
    assert main([*argv, "--trust-factory"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "does not fit the model: Input width (" in err
