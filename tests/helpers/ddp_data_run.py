"""Train a trivial model with 2-process DDP on the CPU over ShardDataModule; record what each rank read.

    python tests/helpers/ddp_data_run.py SHARD_DIR OUT_DIR [--resampled 0|1] [--max-steps N]

Lightning's launcher re-runs this very file for rank 1, so it must be a real script.
Each rank writes ``OUT_DIR/rank{r}.json`` with the train/val keys it saw.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `helpers.*`

import lightning.pytorch as pl  # noqa: E402
import torch  # noqa: E402

from dalle3.callbacks import DataStats  # noqa: E402
from dalle3.config.schema import CaptionConfig, DataConfig  # noqa: E402
from dalle3.data.datamodule import ShardDataModule  # noqa: E402
from helpers.lightning_probe import KeyProbe  # noqa: E402


class ValProbe(KeyProbe):
    def __init__(self, out: Path):
        super().__init__()
        self.out, self.val_keys = out, []

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self.val_keys += batch["key"]

    def on_fit_end(self) -> None:
        dm = self.trainer.datamodule
        record = {"rank": self.global_rank, "world": self.trainer.world_size, "train_keys": self.keys,
                  "val_keys": self.val_keys, "epochs": self.epochs, "n_skipped": self.n_skipped,
                  "train_shards": dm.train_dataset().shards, "batches_per_epoch": len(dm.train_dataset())}
        (self.out / f"rank{self.global_rank}.json").write_text(json.dumps(record))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("shards")
    parser.add_argument("out")
    parser.add_argument("--resampled", type=int, default=1)
    parser.add_argument("--max-steps", type=int, default=20)
    args = parser.parse_args()
    torch.set_num_threads(1)
    data = DataConfig(train_shards=args.shards, val_shards=args.shards, global_batch_size=8, num_workers=2,
                      epoch_samples=64, resampled=bool(args.resampled), shuffle_buffer=16, image_size=32,
                      val_samples=8)
    dm = ShardDataModule(data, CaptionConfig(source="blend", ratio=0.5))
    trainer = pl.Trainer(accelerator="cpu", strategy="ddp", devices=2, max_steps=args.max_steps,
                         val_check_interval=5, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, callbacks=[DataStats()])
    trainer.fit(ValProbe(Path(args.out)), datamodule=dm)


if __name__ == "__main__":
    main()
