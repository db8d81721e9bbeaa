"""Shards in img2dataset's layout load end to end through ShardDataModule.

Plain img2dataset shards (JPEG, .txt alt-text, .json without our fields) train on their
alt-text whatever the caption source; shards with our ssc/dsc fields (or recaption's
.ssc.txt/.dsc.txt members) deliver exactly the caption each source asks for.
"""
from __future__ import annotations

import pytest
import torch

from dalle3.config.schema import CaptionConfig, DataConfig
from dalle3.data.captions import pick_caption
from dalle3.data.datamodule import ShardDataModule
from helpers.shards import alt_text, dsc_text, sample_key, ssc_text, write_shards

N_SHARDS, PER_SHARD = 3, 40
ALL_KEYS = sorted(sample_key(s, i) for s in range(N_SHARDS) for i in range(PER_SHARD))


def img2dataset_folder(folder, **kwargs):
    write_shards(folder, N_SHARDS, PER_SHARD, fmt="jpg", size=64, prefix="0000", **kwargs)
    for s in range(N_SHARDS):  # img2dataset's side files next to each tar are not shards
        (folder / f"0000-{s:05d}.parquet").write_bytes(b"PAR1")
        (folder / f"0000-{s:05d}_stats.json").write_text("{}")
    return folder


def read(folder, caption: CaptionConfig, workers: int = 2) -> list[dict]:
    data = DataConfig(train_shards=str(folder), val_shards=str(folder), global_batch_size=16, num_workers=workers,
                      image_size=32, val_samples=10_000)
    return list(ShardDataModule(data, caption).val_dataloader())


def flat(batches, name):
    return [x for b in batches for x in b[name]]


@pytest.fixture(scope="module")
def plain(tmp_path_factory):
    return img2dataset_folder(tmp_path_factory.mktemp("plain"), extra_fields=False)


@pytest.fixture(scope="module")
def ours(tmp_path_factory):
    return img2dataset_folder(tmp_path_factory.mktemp("ours"), extra_fields=True)


@pytest.mark.parametrize("source", ["alt", "dsc", "ssc", "blend"])
def test_plain_img2dataset_shards_train_on_alt_text(plain, source):
    batches = read(plain, CaptionConfig(source=source, ratio=1.0))
    keys = flat(batches, "key")
    assert sorted(keys) == ALL_KEYS
    assert flat(batches, "caption") == [alt_text(k) for k in keys]
    assert set(flat(batches, "caption_kind")) == {"alt"}
    assert set(flat(batches, "scene")) == {""} and sum(int(b["n_skipped"]) for b in batches) == 0
    images = torch.cat([b["image"] for b in batches])
    assert images.shape == (len(ALL_KEYS), 3, 32, 32) and 0 <= images.min() and images.max() <= 1


@pytest.mark.parametrize("source, expected", [("alt", alt_text), ("ssc", ssc_text), ("dsc", dsc_text)])
def test_our_fields_give_each_source_its_caption(ours, source, expected):
    batches = read(ours, CaptionConfig(source=source))
    keys = flat(batches, "key")
    assert sorted(keys) == ALL_KEYS
    assert flat(batches, "caption") == [expected(k) for k in keys]
    assert set(flat(batches, "caption_kind")) == {source}


@pytest.mark.parametrize("synthetic", ["ssc", "dsc"])
def test_blend_delivers_the_seeded_mix(ours, synthetic):
    caption = CaptionConfig(source="blend", synthetic=synthetic, ratio=0.95, seed=11)
    batches = read(ours, caption, workers=0)
    keys, kinds = flat(batches, "key"), flat(batches, "caption_kind")
    texts = {"alt": alt_text, "ssc": ssc_text, "dsc": dsc_text}
    assert flat(batches, "caption") == [texts[kind](k) for k, kind in zip(keys, kinds)]
    assert kinds == [pick_caption(k, alt_text(k), ssc_text(k), dsc_text(k), "blend", synthetic, 0.95, 11)[1]
                     for k in keys]
    assert 0.85 < sum(kind == synthetic for kind in kinds) / len(kinds) < 1.0


def test_recaptioned_txt_members_override_the_json_fields(tmp_path):
    folder = img2dataset_folder(tmp_path, extra_fields=True, txt_captions=True)
    batches = read(folder, CaptionConfig(source="dsc"))
    assert flat(batches, "caption") == [f"txt {dsc_text(k)}" for k in flat(batches, "key")]
