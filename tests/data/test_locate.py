"""File search order, the "how to get it" error, and checksummed downloads (from file:// URLs, no network)."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib

import pytest

from prunus.data import find_dataset, load_dataset, mnist
from prunus.data.locate import RemoteFile, RemoteSource, candidate_dirs, verify
from prunus.errors import DataNotFoundError


def test_search_order_root_then_env_then_system_then_cache(tmp_path, hermetic, monkeypatch):
    monkeypatch.setenv("PRUNUS_DATA", str(tmp_path / "env"))
    dirs = candidate_dirs("mnist", tmp_path / "root")
    assert dirs == [
        tmp_path / "root",
        tmp_path / "root" / "mnist",
        tmp_path / "env" / "mnist",  # also the download cache when $PRUNUS_DATA is set (not repeated)
        hermetic / "mnist",
    ]
    monkeypatch.delenv("PRUNUS_DATA")
    assert candidate_dirs("mnist")[-1] == tmp_path / "cache" / "prunus" / "mnist"


def test_missing_data_dir_is_an_error_not_a_fallback(tmp_path, hermetic, write_mnist):
    write_mnist(hermetic / "mnist", n_test=3)  # a system copy exists, yet a typo in --data-dir must not reach it
    with pytest.raises(DataNotFoundError, match="--data-dir .*/typo does not exist"):
        load_dataset("mnist", "test", root=tmp_path / "typo", download=False)
    with pytest.raises(DataNotFoundError, match="does not exist"):
        find_dataset("mnist", tmp_path / "typo")


def test_first_directory_with_files_wins(tmp_path, hermetic, write_mnist, monkeypatch):
    write_mnist(hermetic / "mnist", n_test=3)
    write_mnist(tmp_path / "env" / "mnist", n_test=4)
    write_mnist(tmp_path / "root", n_test=5)
    assert len(load_dataset("mnist", "test", download=False)) == 3  # only the system copy is visible
    monkeypatch.setenv("PRUNUS_DATA", str(tmp_path / "env"))
    assert len(load_dataset("mnist", "test", download=False)) == 4
    assert len(load_dataset("mnist", "test", root=tmp_path / "root", download=False)) == 5
    assert find_dataset("mnist", tmp_path / "root") == tmp_path / "root"


def test_incomplete_directory_is_skipped(tmp_path, write_mnist):
    write_mnist(tmp_path / "root")
    (tmp_path / "root" / "t10k-labels-idx1-ubyte.gz").unlink()
    assert find_dataset("mnist", tmp_path / "root") is None


def test_missing_fashion_mnist_says_how_to_get_it(tmp_path):
    (tmp_path / "nowhere").mkdir()  # exists but empty (a missing --data-dir has its own error)
    with pytest.raises(DataNotFoundError) as info:
        load_dataset("fashion-mnist", "train", root=tmp_path / "nowhere", download=False)
    message = str(info.value)
    assert "\n" not in message
    assert "fashion-mnist files not found" in message
    assert "download disabled" in message
    assert "apt-get install dataset-fashion-mnist" in message
    assert "--data-dir DIR" in message
    assert "$PRUNUS_DATA" in message
    assert str(tmp_path / "nowhere") in message


def test_no_download_env_blocks_downloads(tmp_path):
    with pytest.raises(DataNotFoundError, match=r"downloads disabled by \$PRUNUS_NO_DOWNLOAD.*apt-get install"):
        load_dataset("fashion-mnist", "test", root=tmp_path, download=True)


def _mirror_source(mirror_dir, written_dir, corrupt_md5=False) -> RemoteSource:
    files = []
    for f in sorted(written_dir.iterdir()):
        md5 = hashlib.md5(f.read_bytes()).hexdigest()
        files.append(RemoteFile(f.name, "0" * 32 if corrupt_md5 and "t10k-labels" in f.name else md5))
        (mirror_dir / f.name).write_bytes(f.read_bytes())
    return RemoteSource(mirrors=(mirror_dir.as_uri() + "/",), files=tuple(files))


@pytest.fixture
def mirror(tmp_path, write_mnist, monkeypatch):
    """A file:// 'mirror' serving MNIST-format files; downloads allowed for this test."""
    monkeypatch.delenv("PRUNUS_NO_DOWNLOAD")
    written = write_mnist(tmp_path / "published", n_train=12, n_test=4)
    (tmp_path / "mirror").mkdir()
    return tmp_path, written


def test_checksummed_download_into_cache(mirror, monkeypatch):
    tmp_path, written = mirror
    source = _mirror_source(tmp_path / "mirror", tmp_path / "published")
    monkeypatch.setattr(mnist, "MNIST_SOURCE", source)
    test = load_dataset("mnist", "test")
    cache = tmp_path / "cache" / "prunus" / "mnist"
    assert sorted(p.name for p in cache.iterdir()) == sorted(f.name for f in source.files)
    assert test.labels.tolist() == written["test"][1].tolist()
    # a second load uses the cache: the mirror may disappear
    for f in (tmp_path / "mirror").iterdir():
        f.unlink()
    assert len(load_dataset("mnist", "train")) == 12


def test_download_with_wrong_checksum_leaves_nothing(mirror, monkeypatch):
    tmp_path, _ = mirror
    source = _mirror_source(tmp_path / "mirror", tmp_path / "published", corrupt_md5=True)
    monkeypatch.setattr(mnist, "MNIST_SOURCE", source)
    with pytest.raises(DataNotFoundError, match=r"download failed: .*checksum mismatch for file://.*t10k-labels"):
        load_dataset("mnist", "test")
    cache = tmp_path / "cache" / "prunus" / "mnist"
    assert not (cache / "t10k-labels-idx1-ubyte.gz").exists()
    assert not list(cache.glob(".*.tmp"))  # no half-written temp files left behind


def test_verify_content_checksums(tmp_path, write_mnist):
    written_dir = tmp_path / "d"
    write_mnist(written_dir)
    files = []
    for f in sorted(written_dir.iterdir()):
        files.append(RemoteFile(f.name, "x", hashlib.sha256(gzip.decompress(f.read_bytes())).hexdigest()))
    source = RemoteSource(mirrors=(), files=tuple(files))
    assert set(verify(source, written_dir).values()) == {True}
    wrong = dataclasses.replace(source, files=(dataclasses.replace(files[0], content_sha256="0" * 64), *files[1:]))
    result = verify(wrong, written_dir)
    assert result[files[0].name] is False
    assert sum(v is True for v in result.values()) == 3
