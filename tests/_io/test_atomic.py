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
