"""Atomic writes: readers see the old file or the new one, never a partial one."""

from __future__ import annotations

import os
import threading

from prunus._io.atomic import write_bytes, write_json, write_text

BIG = 1 << 21  # 2 MiB: a copy into place would take many write() calls


def test_replace_is_a_rename_to_a_new_inode_and_open_readers_keep_the_old_content(tmp_path):
    path = tmp_path / "f.bin"
    old, new = b"a" * BIG, b"b" * BIG
    write_bytes(path, old)
    inode = os.stat(path).st_ino
    with open(path, "rb") as reader:  # opened before the replacement
        write_bytes(path, new)
        assert reader.read() == old  # the old inode is untouched, not truncated and rewritten
    assert os.stat(path).st_ino != inode
    assert path.read_bytes() == new
    assert [p.name for p in tmp_path.iterdir()] == ["f.bin"]  # no temporary file left behind


def test_a_reader_racing_the_writer_never_sees_a_partial_file(tmp_path):
    path = tmp_path / "f.bin"
    contents = [bytes([65 + i]) * BIG for i in range(4)]
    write_bytes(path, contents[0])
    stop = threading.Event()
    bad: list[int] = []

    def read_loop():
        while not stop.is_set():
            data = path.read_bytes()
            if data not in contents:
                bad.append(len(data))

    reader = threading.Thread(target=read_loop)
    reader.start()
    try:
        for i in range(24):
            write_bytes(path, contents[i % 4])
    finally:
        stop.set()
        reader.join()
    assert bad == []


def test_text_and_json_writes_land_whole(tmp_path):
    write_text(tmp_path / "t.txt", "héllo")
    write_json(tmp_path / "j.json", {"a": [1, 2]})
    assert (tmp_path / "t.txt").read_text(encoding="utf-8") == "héllo"
    assert (tmp_path / "j.json").read_text() == '{\n  "a": [\n    1,\n    2\n  ]\n}\n'


def test_atomic_writes_give_files_and_directories_the_permissions_of_a_plain_open(tmp_path):
    """mkstemp makes 0600 files and mkdtemp 0700 directories; an atomic write must not leave them private."""
    import os
    import stat

    from prunus._io.atomic import atomic_dir, atomic_path, write_bytes, write_json, write_text

    old = os.umask(0o022)
    try:
        write_text(tmp_path / "a.txt", "a")
        write_bytes(tmp_path / "b.bin", b"b")
        write_json(tmp_path / "c.json", {"c": 1})
        with atomic_path(tmp_path / "d.bin") as tmp:
            tmp.write_bytes(b"d")
        with atomic_dir(tmp_path / "model") as tmp:
            (tmp / "weights").write_bytes(b"w")
            os.chmod(tmp / "weights", 0o600)  # a writer that makes private files (safetensors did)
    finally:
        os.umask(old)
    mode = lambda p: stat.S_IMODE(p.stat().st_mode)  # noqa: E731
    for name in ("a.txt", "b.bin", "c.json", "d.bin", "model/weights"):
        assert mode(tmp_path / name) == 0o644, name
    assert mode(tmp_path / "model") == 0o755
