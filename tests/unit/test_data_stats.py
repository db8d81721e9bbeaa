"""The DataStats callback logs the caption mix and skip count the model actually saw."""
from __future__ import annotations

import logging

import lightning.pytorch as pl
import pytest
import torch

from dalle3.callbacks import DataStats
from dalle3.callbacks.data_stats import batch_counts, summarize, summary_line
from dalle3.config.schema import CaptionConfig, DataConfig
from dalle3.data.datamodule import ShardDataModule
from helpers.lightning_probe import KeyProbe
from helpers.shards import write_shards


def test_batch_counts_and_summary():
    batch = {"caption_kind": ["dsc", "alt", "dsc", "dsc"], "caption_fallback": [False, True, False, False],
             "n_skipped": torch.tensor(3),
             "skipped": {"key": ["a", "b", "c"], "reason": ["bad_json", "bad_json", "too_large"]}}
    stats = summarize(batch_counts(batch) + batch_counts({**batch, "caption_kind": ["alt"] * 4,
                                                          "n_skipped": torch.tensor(0), "skipped": {}}))
    assert stats["samples"] == 8 and stats["synthetic_share"] == pytest.approx(3 / 8)
    assert stats["skipped"] == 3 and stats["skip/bad_json"] == 2 and stats["skip/too_large"] == 1
    line = summary_line(4, stats)
    assert "\n" not in line and "epoch 4" in line and "0.375" in line and "bad_json: 2" in line
    assert stats["synthetic_fallback_alt"] == 2 and "synthetic caption 2," in line  # the failed recaption, twice


def test_callback_logs_epoch_totals_of_what_the_model_saw(tmp_path):
    write_shards(tmp_path, 2, 16, size=32, bad={5: "bad_json", 9: "truncated"})
    data = DataConfig(train_shards=str(tmp_path), val_shards="", global_batch_size=4, num_workers=0,
                      epoch_samples=48, shuffle_buffer=8, image_size=32)
    dm = ShardDataModule(data, CaptionConfig(source="blend", ratio=0.5))
    probe, stats = KeyProbe(), DataStats()
    lines = []
    handler = logging.Handler()
    handler.emit = lambda record: lines.append(record.getMessage())
    logging.getLogger("dalle3").addHandler(handler)
    try:
        trainer = pl.Trainer(accelerator="cpu", devices=1, max_epochs=2, callbacks=[stats], logger=False,
                             enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
        trainer.fit(probe, datamodule=dm)
    finally:
        logging.getLogger("dalle3").removeHandler(handler)
    assert probe.epochs.count(1) == 12  # the second epoch: 48 samples / 4
    last_epoch_kinds = probe.kinds[-48:]
    share = sum(k != "alt" for k in last_epoch_kinds) / 48
    assert stats.last["samples"] == 48 and stats.last["synthetic_share"] == pytest.approx(share)
    assert trainer.callback_metrics["data/synthetic_share"].item() == pytest.approx(share)
    assert 0 < share < 1
    assert probe.n_skipped > 0  # both epochs: bad samples are read and reported
    assert any(line.startswith("data epoch 1: 48 samples") for line in lines)
