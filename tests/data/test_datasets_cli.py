"""`prunus datasets` through the real CLI entry point."""

from __future__ import annotations

from prunus.cli import main


def test_lists_every_dataset(capsys):
    assert main(["datasets"]) == 0
    out = capsys.readouterr().out
    for name in ("fashion-mnist", "mnist", "cifar10", "cifar100", "imagefolder", "synthetic"):
        assert name in out
    assert "3x32x32" in out
    assert "60000 / 10000" in out
    assert "apt-get install dataset-fashion-mnist" in out  # the hermetic fixture hides the system copy
    assert "synthetic" in out
    assert "generated" in out


def test_data_dir_shows_where_files_are(tmp_path, write_mnist, capsys):
    write_mnist(tmp_path / "mnist")
    assert main(["datasets", "mnist", "--data-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert f"mnist: {tmp_path / 'mnist'}" in out
    assert "found" in out
    assert "cifar10" not in out


def test_no_match_is_a_one_line_error(capsys):
    assert main(["datasets", "zz*"]) == 2
    err = capsys.readouterr().err
    assert err.strip() == (
        "prunus: error: no dataset matches 'zz*'; available: cifar10, cifar100, fashion-mnist, imagefolder, mnist, synthetic"
    )
