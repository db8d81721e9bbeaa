"""ShardDataModule: batch format, fixed epochs, rank/worker splits, epochs, skips, config errors."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from dalle3.config.schema import CaptionConfig, DataConfig
from dalle3.config.validate import ConfigError
from dalle3.data.captions import pick_caption
from dalle3.data.datamodule import ShardDataModule
from dalle3.data.pipeline import build_pipeline
from helpers.shards import BAD_REASON, alt_text, dsc_text, sample_key, scene_of, shard_of, ssc_text, write_shards


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("train")
    write_shards(folder, 3, 8, size=32)
    return folder


def make(folder, rank=0, world=1, monkeypatch=None, caption=None, **data) -> ShardDataModule:
    if monkeypatch is not None:  # a torchrun-style environment: what dist_env() reads without a Trainer
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", str(world))
    cfg = dict(train_shards=str(folder), val_shards=str(folder), global_batch_size=4 * world, num_workers=0,
               epoch_samples=40 * world, shuffle_buffer=10, image_size=32, val_samples=1000)
    cfg.update(data)
    return ShardDataModule(DataConfig(**cfg), caption or CaptionConfig(source="dsc"))


def keys_of(loader) -> list[str]:
    return [k for batch in loader for k in batch["key"]]


def test_batch_format(shards):
    batch = next(iter(make(shards).train_dataloader()))
    assert set(batch) >= {"image", "caption", "caption_kind", "key", "scene", "n_skipped", "skipped"}
    assert batch["image"].shape == (4, 3, 32, 32) and batch["image"].dtype == torch.float32
    assert 0.0 <= batch["image"].min() and batch["image"].max() <= 1.0
    assert batch["caption"] == [dsc_text(k) for k in batch["key"]] and batch["caption_kind"] == ["dsc"] * 4
    assert [json.loads(s) for s in batch["scene"]] == [scene_of(k) for k in batch["key"]]
    assert batch["n_skipped"].dtype == torch.int64 and batch["n_skipped"].ndim == 0
    assert batch["alt"] == [alt_text(k) for k in batch["key"]] and batch["ssc"] == [ssc_text(k) for k in batch["key"]]


@pytest.mark.parametrize("workers", [0, 2])
@pytest.mark.parametrize("resampled", [True, False])
def test_train_epochs_have_a_fixed_number_of_full_batches(shards, workers, resampled):
    dm = make(shards, num_workers=workers, resampled=resampled, epoch_samples=44)  # 44 // 1 // 4 = 11
    loader = dm.train_dataloader()
    assert len(loader) == 11
    for epoch in range(2):
        dm.set_epoch(epoch)
        sizes = [len(b["key"]) for b in loader]
        assert sizes == [4] * 11


def test_cycled_epochs_read_every_sample_before_repeating_one(shards):
    dm = make(shards, resampled=False, shuffle_buffer=0, epoch_samples=24, global_batch_size=4)
    keys = keys_of(dm.train_dataloader())
    assert sorted(keys) == sorted(sample_key(s, i) for s in range(3) for i in range(8))


def test_each_rank_reads_only_its_own_shards(shards, monkeypatch):
    seen = {}
    for rank in (0, 1):
        dm = make(shards, rank, 2, monkeypatch, resampled=False, epoch_samples=96)
        seen[rank] = {shard_of(k) for k in keys_of(dm.train_dataloader())}
    assert seen == {0: {0, 2}, 1: {1}}  # assign_shards: shard i -> rank i % 2


def test_too_few_shards_for_the_ranks_fails_at_setup_with_one_line(tmp_path, monkeypatch):
    write_shards(tmp_path, 1, 4, size=32)
    dm = make(tmp_path, 0, 2, monkeypatch)
    with pytest.raises(ConfigError, match=r"1 shard\(s\) for 2 ranks") as err:
        dm.setup("fit")
    assert "\n" not in str(err.value) and "datagen.shard_size" in str(err.value)


def test_other_setup_errors_name_their_key(shards, tmp_path):
    with pytest.raises(ConfigError, match="data.epoch_samples=3"):
        make(shards, epoch_samples=3).setup("fit")
    with pytest.raises(ConfigError, match="data.train_shards=.*nowhere"):
        make(tmp_path / "nowhere").setup("fit")
    with pytest.raises(ConfigError, match="caption.ratio"):
        make(shards, caption=CaptionConfig(ratio=2.0))


@pytest.mark.parametrize("workers", [0, 2])
def test_the_blend_redraws_each_epoch_in_persistent_workers(shards, workers):
    dm = make(shards, num_workers=workers, caption=CaptionConfig(source="blend", ratio=0.5, seed=7))
    loader = dm.train_dataloader()
    per_epoch = []
    for epoch in (0, 1):
        dm.set_epoch(epoch)
        batches = list(loader)
        for batch in batches:
            for key, caption, kind in zip(batch["key"], batch["caption"], batch["caption_kind"]):
                assert (caption, kind) == pick_caption(key, alt_text(key), ssc_text(key), dsc_text(key), "blend",
                                                       "dsc", 0.5, 7, epoch)
        per_epoch.append({k: kind for b in batches for k, kind in zip(b["key"], b["caption_kind"])})
    common = per_epoch[0].keys() & per_epoch[1].keys()
    assert any(per_epoch[0][k] != per_epoch[1][k] for k in common)


@pytest.mark.parametrize("workers", [0, 2])
def test_val_reads_every_sample_once_in_a_fixed_order(shards, workers):
    dm = make(shards, num_workers=workers)
    first, second = keys_of(dm.val_dataloader()), keys_of(dm.val_dataloader())
    assert first == second and sorted(first) == sorted(sample_key(s, i) for s in range(3) for i in range(8))
    assert len(keys_of(make(shards, num_workers=workers, val_samples=7).val_dataloader())) == 7


@pytest.mark.parametrize("n_shards", [1, 3])
def test_val_ranks_are_disjoint_and_covering(tmp_path, monkeypatch, n_shards):
    write_shards(tmp_path, n_shards, 9, size=32)  # 1 shard < 2 ranks: every rank strides through it
    per_rank = [keys_of(make(tmp_path, r, 2, monkeypatch, num_workers=2).val_dataloader()) for r in (0, 1)]
    assert not set(per_rank[0]) & set(per_rank[1])
    assert sorted(per_rank[0] + per_rank[1]) == sorted(sample_key(s, i) for s in range(n_shards) for i in range(9))


def test_skip_counts_cross_worker_boundaries_exactly(tmp_path):
    bad = {1: "truncated", 3: "bad_json", 6: "empty"}
    write_shards(tmp_path, 4, 9, size=32, bad=bad)
    batches = list(make(tmp_path, num_workers=2).val_dataloader())
    expected = sorted((sample_key(s, i), BAD_REASON[kind]) for s in range(4) for i, kind in bad.items())
    assert sorted(s for b in batches for s in zip(b["skipped"]["key"], b["skipped"]["reason"])) == expected
    assert sum(int(b["n_skipped"]) for b in batches) == len(expected)
    assert len(keys_of(batches)) == 4 * 9 - len(expected)


def test_sample_transform_hook_adds_tensors_and_can_drop(shards):
    def tokenise(sample):
        if sample["key"].endswith("3"):
            return None
        sample["tokens"] = torch.tensor([len(sample["caption"]), 1])
        return sample
    dm = ShardDataModule(make(shards).data_cfg, CaptionConfig(source="alt"), sample_transform=tokenise)
    batch = next(iter(dm.val_dataloader()))
    assert batch["tokens"].shape == (4, 2) and batch["tokens"][:, 0].tolist() == [len(c) for c in batch["caption"]]
    assert not any(k.endswith("3") for k in keys_of(dm.val_dataloader()))


def test_config_nodes_and_dicts_are_accepted(shards):
    root = OmegaConf.create({"paths": {"data_dir": str(shards)},
                             "data": {"train_shards": "${paths.data_dir}", "val_shards": "", "global_batch_size": 4,
                                      "num_workers": 0, "epoch_samples": 8, "image_size": 32},
                             "caption": {"source": "ssc"}})
    dm = ShardDataModule(root.data, root.caption)
    assert dm.data_cfg.train_shards == str(shards) and dm.data_cfg.shuffle_buffer == DataConfig().shuffle_buffer
    batch = next(iter(dm.train_dataloader()))
    assert batch["caption"] == [ssc_text(k) for k in batch["key"]]
    assert dm.val_dataloader() == []
    assert ShardDataModule(dict(root.data) | {"train_shards": str(shards)}).data_cfg.global_batch_size == 4


def test_unreadable_shards_raise_instead_of_hanging(tmp_path):
    write_shards(tmp_path, 2, 2, size=32, bad={0: "truncated", 1: "no_image"})
    paths = sorted(str(p) for p in tmp_path.glob("*.tar"))
    pipeline = build_pipeline(paths, batch_size=2, mode="resample", n_batches=1)
    with pytest.raises(RuntimeError, match="no usable sample"):
        next(iter(pipeline))
