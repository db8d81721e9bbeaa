"""Shards in img2dataset's layout, byte-identical for a seed, resumable, parallel-safe."""
from __future__ import annotations

import io
import json
import os
import tarfile
from types import SimpleNamespace

import pytest
from PIL import Image

from dalle3.config.schema import DataGenConfig, SplitSizes, WorldConfig
from dalle3.config.validate import ConfigError
from dalle3.world import Scene, write_split, write_world
from dalle3.world.facts import score_caption

CFG = WorldConfig(sign_rate=0.5)


def read(path):
    with open(path, "rb") as f:
        return f.read()


def members(path):
    with tarfile.open(path) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers()}


def test_same_seed_writes_identical_bytes_and_another_seed_does_not(tmp_path):
    a = write_split(str(tmp_path / "a"), "train", 10, 4, CFG, seed=3, progress=False)
    b = write_split(str(tmp_path / "b"), "train", 10, 4, CFG, seed=3, progress=False)
    c = write_split(str(tmp_path / "c"), "train", 10, 4, CFG, seed=4, progress=False)
    assert [os.path.basename(p) for p in a] == ["00000.tar", "00001.tar", "00002.tar"]
    assert [read(p) for p in a] == [read(p) for p in b]
    assert all(read(p) != read(q) for p, q in zip(a, c))
    assert read(tmp_path / "a/train/_stats.json") == read(tmp_path / "b/train/_stats.json")


def test_shard_has_img2dataset_members_and_fields(tmp_path):
    (path,) = write_split(str(tmp_path), "val", 5, 8, CFG, seed=0, progress=False)
    files = members(path)
    keys = [f"10000{i:04d}" for i in range(5)]  # val starts at shard 10000
    assert sorted(files) == sorted(f"{k}.{ext}" for k in keys for ext in ("png", "txt", "json"))
    for key in keys:
        meta = json.loads(files[f"{key}.json"])
        assert meta["key"] == key and meta["status"] == "success"
        assert meta["caption"] == files[f"{key}.txt"].decode("utf-8")
        assert (meta["width"], meta["height"]) == (64, 64)
        image = Image.open(io.BytesIO(files[f"{key}.png"]))
        assert image.mode == "RGB" and image.size == (64, 64)
        scene = Scene.from_dict(meta["scene"])
        assert all(s["false"] == 0 and s["correct"] == s["present"]
                   for s in score_caption(meta["dsc"], scene).values())
    with tarfile.open(path) as tar:
        assert {(m.mtime, m.uid, m.gid, m.uname) for m in tar.getmembers()} == {(946684800, 0, 0, "")}


def test_keys_are_unique_across_splits(tmp_path):
    gen = DataGenConfig(sizes=SplitSizes(train=6, val=3, annotated=4, judge=2, dev=3), shard_size=4, workers=1)
    written = write_world(str(tmp_path), gen, CFG, progress=False)
    keys = [name.split(".")[0] for paths in written.values() for p in paths for name in members(p)]
    assert len(set(keys)) == 6 + 3 + 4 + 2 + 3
    stats = json.loads(read(tmp_path / "annotated/_stats.json"))
    assert (stats["samples"], stats["shards"], stats["first_shard_id"]) == (4, 1, 20000)
    # The splits hold different scenes even though they share the world seed.
    first = [json.loads(members(paths[0])[f"{os.path.basename(paths[0])[:5]}0000.json"])["scene"]
             for paths in written.values()]
    assert first[0] != first[1] != first[2]


def test_existing_shards_are_skipped_unless_overwrite(tmp_path):
    paths = write_split(str(tmp_path), "train", 6, 3, CFG, seed=0, progress=False)
    os.utime(paths[0], (1, 1))
    with open(paths[1], "wb") as f:  # a truncated shard must be rewritten
        f.write(b"broken")
    write_split(str(tmp_path), "train", 6, 3, CFG, seed=0, progress=False)
    assert os.stat(paths[0]).st_mtime == 1
    assert len(members(paths[1])) == 9
    write_split(str(tmp_path), "train", 6, 3, CFG, seed=0, overwrite=True, progress=False)
    assert os.stat(paths[0]).st_mtime != 1
    assert not [f for f in os.listdir(tmp_path / "train") if ".tmp" in f]


def test_parallel_writing_matches_serial(tmp_path):
    serial = write_split(str(tmp_path / "s"), "train", 12, 4, CFG, seed=1, workers=1, progress=False)
    parallel = write_split(str(tmp_path / "p"), "train", 12, 4, CFG, seed=1, workers=2,
                           progress=False)
    assert [read(p) for p in serial] == [read(p) for p in parallel]


def test_jpg_format_and_dictconfig_like_world(tmp_path):
    world = SimpleNamespace(**{**vars(WorldConfig()), "image_format": "jpg", "image_size": 32,
                               "jpeg_quality": 90})
    (path,) = write_split(str(tmp_path), "train", 2, 2, world, seed=0, progress=False)
    files = members(path)
    image = Image.open(io.BytesIO(files["000000000.jpg"]))
    assert image.format == "JPEG" and image.size == (32, 32)


def test_bad_values_fail_with_one_line_naming_the_key(tmp_path):
    with pytest.raises(ConfigError, match="datagen.shard_size"):
        write_split(str(tmp_path), "train", 2, 20000, CFG, seed=0, progress=False)
    with pytest.raises(ConfigError, match="world.image_size"):
        write_split(str(tmp_path), "train", 2, 2, WorldConfig(image_size=48), seed=0, progress=False)
