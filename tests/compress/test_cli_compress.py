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
