"""dalle3/utils/io.py: a reader sees the old file or the whole new one, never a part."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from dalle3.utils import io
from dalle3.utils.io import atomic_path, atomic_write_bytes, atomic_write_json, atomic_write_text


def test_writes_replace_the_file_and_leave_nothing_beside_it(tmp_path):
    target = tmp_path / "sub" / "f.json"  # the folder is created
    atomic_write_text(target, "old")
    atomic_write_json(target, {"b": 1, "a": "é"}, indent=1, sort_keys=True)
    assert target.read_bytes() == json.dumps({"b": 1, "a": "é"}, indent=1, sort_keys=True).encode()
    atomic_write_bytes(target, b"\x00new")
    assert target.read_bytes() == b"\x00new"
    assert os.listdir(target.parent) == ["f.json"]


def test_tmp_name_is_beside_the_target_and_unique_to_the_process(tmp_path):
    name = io.tmp_path(tmp_path / "f.txt")  # io.tmp_path: the fixture of the same name shadows it
    assert os.path.dirname(name) == str(tmp_path) and f"-{os.getpid()}-" in os.path.basename(name)


@pytest.mark.parametrize("folder", [False, True])
def test_a_failed_write_keeps_the_old_target_and_removes_the_tmp(tmp_path, folder):
    target = tmp_path / "out"
    atomic_write_text(target, "old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            if folder:
                os.makedirs(os.path.join(tmp, "part"))
            else:
                with open(tmp, "w") as f:
                    f.write("half")
            raise RuntimeError("killed")
    assert target.read_text() == "old"
    assert os.listdir(tmp_path) == ["out"]


def test_a_folder_is_replaced_in_one_rename(tmp_path, monkeypatch):
    target = tmp_path / "model"
    (target / "old").mkdir(parents=True)
    (target / "old" / "w.bin").write_bytes(b"old")
    renames = []
    real_replace = os.replace

    def replace(src, dst):
        renames.append((src, dst))
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    with atomic_path(target) as tmp:
        os.makedirs(tmp)
        with open(os.path.join(tmp, "w.bin"), "wb") as f:
            f.write(b"new")
        assert (target / "old" / "w.bin").exists()  # the old folder stays whole until the end
    assert renames == [(tmp, str(target))]
    assert sorted(os.listdir(target)) == ["w.bin"] and (target / "w.bin").read_bytes() == b"new"
    assert os.listdir(tmp_path) == ["model"]


def test_first_writer_wins_without_replace(tmp_path):
    target = tmp_path / "enc"
    with atomic_path(target, replace=False) as tmp:
        os.makedirs(tmp)
        (Path(tmp) / "who").write_text("first")
    with atomic_path(target, replace=False) as tmp:  # a second rank, later: its folder is dropped
        os.makedirs(tmp)
        (Path(tmp) / "who").write_text("second")
    assert (target / "who").read_text() == "first"
    one = tmp_path / "one.txt"
    for text in ("first", "second"):
        with atomic_path(one, replace=False) as tmp:
            Path(tmp).write_text(text)
    assert one.read_text() == "first" and sorted(p.name for p in tmp_path.iterdir()) == ["enc", "one.txt"]
