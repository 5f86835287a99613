"""`prunus compress`, `prunus eval model.prn`, `prunus info model.prn` end to end on synthetic data."""

import json

import pytest

import prunus
from prunus.cli import main


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("m") / "model"
    prunus.save(prunus.create_model("lenet300_100", in_channels=1, width_mult=0.1), d, input_shape=(1, 28, 28))
    return d


def test_compress_eval_info(model_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")  # rich would shorten the table's cells on a narrow terminal
    out = tmp_path / "m.prn"
    args = ["compress", str(model_dir), "--data", "synthetic", "--sparsity", "0.8", "--bits", "4", "--calib", "64",
            "--search-batch", "32", "--set", "cycles=2", "--set", "generations=1", "--no-progress", "--json",
            "--out", str(out)]  # fmt: skip
    assert main(args) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["file_bytes"] == out.stat().st_size
    assert report["sparsity"] == pytest.approx(0.8, abs=1e-3)
    assert {r["bits"] for r in report["layers"]} == {4}
    assert main(["info", str(out), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["kind"] == "prn"
    assert info["bytes"] == out.stat().st_size
    assert [r["bytes"] for r in info["layers"]] == [r["bytes"] for r in report["layers"]]
    assert [r["bound_bits"] for r in info["layers"]] == pytest.approx([r["bound_bits"] for r in report["layers"]])
    assert main(["info", str(out)]) == 0
    table = capsys.readouterr().out
    assert "fc1.weight" in table
    assert "bytes/bound" in table
    assert main(["eval", str(out), "--data", "synthetic"]) == 0
    assert "accuracy" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("extra", "match"),
    [
        (["--sparsity", "1.5"], "sparsity"),
        (["--bits", "9"], "bits=9"),
        (["--set", "population=0"], "population=0"),
        (["--set", "nope=1"], "no argument 'nope'"),
        (["--bits", "auto", "--max-drop", "-1"], "max_drop"),
    ],
)
def test_bad_flags_are_one_line_errors(model_dir, tmp_path, capsys, extra, match):
    rc = main(["compress", str(model_dir), "--data", "synthetic", "--out", str(tmp_path / "x.prn"), *extra])
    err = capsys.readouterr().err
    assert rc == 2
    assert match in err
    assert err.count("\n") == 1
    assert not (tmp_path / "x.prn").exists()


def test_out_must_be_prn_and_corrupt_prn_is_one_line(model_dir, tmp_path, capsys):
    assert main(["compress", str(model_dir), "--data", "synthetic", "--out", str(tmp_path / "x.bin")]) == 2
    assert ".prn" in capsys.readouterr().err
    bad = tmp_path / "bad.prn"
    bad.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}")
    assert main(["eval", str(bad), "--data", "synthetic"]) == 2
    assert main(["info", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.count("prunus: error:") == 2


def _user_cnn(width: int = 6):
    """A user's own image CNN, rebuilt by this factory (not from prunus's registry)."""
    from torch import nn

    from prunus.models.info import update_info

    model = nn.Sequential(nn.Conv2d(1, width, 3, stride=2), nn.ReLU(), nn.Flatten(), nn.Linear(width * 13 * 13, 10))
    update_info(model, arch={"factory": "prunus_test_user_cnn:build", "kwargs": {"width": width}})
    return model


def test_a_user_factory_model_compresses_only_with_trust_factory(tmp_path, capsys, monkeypatch):
    import sys
    import types

    module = types.ModuleType("prunus_test_user_cnn")
    module.build = _user_cnn
    monkeypatch.setitem(sys.modules, "prunus_test_user_cnn", module)
    model_dir = prunus.save(_user_cnn().eval(), tmp_path / "user", input_shape=(1, 28, 28))
    out = tmp_path / "u.prn"
    args = ["compress", str(model_dir), "--data", "synthetic", "--sparsity", "0.5", "--bits", "8", "--calib", "64",
            "--preset", "mlp", "--set", "cycles=1", "--no-progress", "--json", "--out", str(out)]  # fmt: skip
    assert main(args) == 2  # the file names code to import: refused unless the user says so
    assert "--trust-factory" in capsys.readouterr().err
    assert not out.exists()
    assert main([*args, "--trust-factory"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["sparsity"] == pytest.approx(0.5, abs=1e-3)
    assert main(["eval", str(out), "--data", "synthetic", "--trust-factory"]) == 0
    assert "accuracy" in capsys.readouterr().out


@pytest.fixture
def signal_model(tmp_path, monkeypatch):
    """A 1-D decoder (Conv1d + ConvTranspose1d) saved with its (2, 16) input shape: no bundled dataset fits it."""
    import sys

    import torch

    from tests.structure import families as fam
    from tests.structure.conftest import randomize_

    monkeypatch.setitem(sys.modules, "prunus_test_families", fam)
    model = randomize_(fam.build("decoder1d"), 0).eval()
    gen = torch.Generator().manual_seed(0)
    tensors = {"x": torch.randn(300, 2, 16, generator=gen), "holdout_x": torch.randn(200, 2, 16, generator=gen),
               "test_x": torch.randn(64, 2, 16, generator=gen), "test_y": torch.randint(0, 5, (64,), generator=gen)}  # fmt: skip
    with torch.no_grad():  # centred logits: a random net would otherwise predict one class for every input
        model.fc.bias -= model(tensors["x"]).mean(0)
    return prunus.save(model, tmp_path / "signal", input_shape=(2, 16)), tensors


FAST_FILE = ["--sparsity", "0.5", "--set", "cycles=1", "--set", "generations=1", "--set", "finetune_steps=0",
             "--set", "recovery_steps=0", "--no-progress", "--trust-factory"]  # fmt: skip


def test_a_1d_model_compresses_from_a_calibration_file_of_its_own_tensors(signal_model, tmp_path, capsys):
    import torch
    from safetensors.torch import save_file

    model_dir, tensors = signal_model
    calib = tmp_path / "calib.safetensors"
    save_file(tensors, str(calib))
    out = tmp_path / "s.prn"
    assert main(["compress", str(model_dir), "--out", str(out), "--data", "synthetic", *FAST_FILE]) == 2
    assert "does not run on calibration samples of shape (1, 28, 28)" in capsys.readouterr().err  # why the file
    assert main(["compress", str(model_dir), "--calib-file", str(calib), "--out", str(out), "--test", "--json",
                 *FAST_FILE]) == 0  # fmt: skip
    report = json.loads(capsys.readouterr().out)
    assert report["file_bytes"] == out.stat().st_size
    assert report["sparsity"] == pytest.approx(0.5, abs=1e-3)
    # the budget came from holdout_x: 200 images split into the budget batch and the verdict's 100
    assert report["budget"]["held_out"] is True
    assert report["budget"]["images"] == 100
    model = prunus.load(model_dir, trust_factory=True).eval()
    from prunus.compress import decompress

    decoded = decompress(out, trust_factory=True).eval()
    test_x, test_y = tensors["test_x"], tensors["test_y"]
    with torch.no_grad():
        assert report["test_acc_input"] == float((model(test_x).argmax(1) == test_y).float().mean())
        assert report["test_acc"] == float((decoded(test_x).argmax(1) == test_y).float().mean())


@pytest.mark.parametrize(
    ("change", "extra", "match"),
    [
        (lambda t: t.pop("x"), [], "has no 'x' tensor"),
        (lambda t: t.update(holdout=t.pop("holdout_x")), [], "unknown tensor(s) 'holdout'"),
        (lambda t: t.update(y=__import__("torch").zeros(7, dtype=__import__("torch").long)), [], "'y' must be 300"),
        (lambda t: t.update(y=__import__("torch").zeros(300)), [], "'y' must be 300 integer labels"),
        (lambda t: t.pop("test_y"), [], "'test_x' and 'test_y' go together"),
        (lambda t: t.update(holdout_x=t["holdout_x"][:, :, :8]), [], "'holdout_x' holds inputs of shape (2, 8)"),
        (lambda t: t["x"].__setitem__((0, 0, 0), float("nan")), [], "'x' holds NaN"),
        (lambda t: [t.pop("test_x"), t.pop("test_y")], ["--test"], "--test needs test_x and test_y"),
        (lambda t: None, ["--data", "synthetic"], "--calib-file and --data/--data-dir both"),
    ],
)
def test_a_bad_calibration_file_is_one_line_before_any_work(signal_model, tmp_path, capsys, change, extra, match):
    from safetensors.torch import save_file

    model_dir, tensors = signal_model
    tensors = {k: v.clone() for k, v in tensors.items()}
    change(tensors)
    calib = tmp_path / "calib.safetensors"
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(calib))
    out = tmp_path / "s.prn"
    rc = main(["compress", str(model_dir), "--calib-file", str(calib), "--out", str(out), *extra, *FAST_FILE])
    err = capsys.readouterr().err
    assert rc == 2
    assert match in err
    assert err.count("\n") == 1
    assert not out.exists()


def test_a_calibration_file_that_is_not_safetensors_is_refused_unread(signal_model, tmp_path, capsys):
    import pickle

    model_dir, _ = signal_model
    calib = tmp_path / "calib.pt"
    calib.write_bytes(pickle.dumps({"x": [1.0]}))  # a pickle is never unpickled
    rc = main(["compress", str(model_dir), "--calib-file", str(calib), "--out", str(tmp_path / "s.prn"), *FAST_FILE])
    err = capsys.readouterr().err
    assert rc == 2
    assert "is not a safetensors file" in err
    rc = main(["compress", str(model_dir), "--calib-file", str(tmp_path / "none.safetensors"), "--out",
               str(tmp_path / "s.prn"), *FAST_FILE])  # fmt: skip
    assert rc == 2
    assert "none.safetensors" in capsys.readouterr().err


def test_test_accuracies_are_each_models_own_on_the_files_test_tensors(signal_model, tmp_path, capsys):
    """Labels = the input model's own predictions: it scores 100%, and a 2-bit, 90%-sparse copy less."""
    import torch
    from safetensors.torch import save_file

    from prunus.compress import decompress

    model_dir, tensors = signal_model
    model = prunus.load(model_dir, trust_factory=True).eval()
    with torch.no_grad():
        tensors = {**tensors, "test_y": model(tensors["test_x"]).argmax(1)}
    calib = tmp_path / "calib.safetensors"
    save_file(tensors, str(calib))
    out = tmp_path / "s.prn"
    assert main(["compress", str(model_dir), "--calib-file", str(calib), "--out", str(out), "--test", "--json",
                 *FAST_FILE, "--sparsity", "0.9", "--bits", "2"]) == 0  # fmt: skip
    report = json.loads(capsys.readouterr().out)
    with torch.no_grad():
        decoded = decompress(out, trust_factory=True).eval()(tensors["test_x"]).argmax(1)
    assert report["test_acc_input"] == 1.0
    assert report["test_acc"] == float((decoded == tensors["test_y"]).float().mean()) < 1.0
