"""The real root config writes a world that webdataset and the data config can read."""
from __future__ import annotations

import json

import webdataset as wds

from dalle3.config import compose, validate
from dalle3.data.shards import validate_shards
from dalle3.world import Scene, analyse, write_world
from dalle3.world.facts import scene_facts


def test_composed_config_writes_a_readable_world(tmp_path):
    cfg = compose(["world=small32", f"paths.data_dir={tmp_path}", "datagen.sizes.train=40",
                   "datagen.sizes.val=8", "datagen.sizes.annotated=8", "datagen.sizes.judge=8", "datagen.shard_size=16",
                   "datagen.workers=1"])
    written = write_world(cfg.paths.data_dir, cfg.datagen, cfg.world, progress=False)
    assert [len(written[s]) for s in ("train", "val", "annotated")] == [3, 1, 1]
    validate(cfg)  # the trainers' own checks
    validate_shards("data.train_shards", cfg.data.train_shards)
    validate_shards("data.val_shards", cfg.data.val_shards)

    dataset = wds.WebDataset(written["train"], shardshuffle=False).decode("pil")
    samples = list(dataset)
    assert len(samples) == 40 and len({s["__key__"] for s in samples}) == 40
    for sample in samples:
        meta = sample["json"]
        assert sample["txt"] == meta["caption"] and meta["key"] == sample["__key__"]
        assert sample["png"].size == (32, 32)
        scene = Scene.from_dict(meta["scene"])
        assert len(scene.objects) <= 2  # world=small32 caps objects at two
        # The stored scene is what the image shows.
        assert scene_facts(analyse(sample["png"]).to_scene()) == scene_facts(scene)
    stats = json.loads((tmp_path / "train" / "_stats.json").read_text())
    assert stats["samples"] == 40 and stats["image_size"] == 32
