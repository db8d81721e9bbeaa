"""A toy regression trained through dalle3.trainer: exercises strategies, not models.

Usage: python toy_train.py OUT_DIR [hydra overrides...]. Writes OUT_DIR/result_rank{R}.json.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader, TensorDataset

from dalle3.config import compose
from dalle3.trainer import fit


class ToyModule(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(16, 64), torch.nn.ReLU(), torch.nn.Linear(64, 1))
        self.calls = 0  # steps run by this process (a resumed run runs only the rest)

    def training_step(self, batch, _):
        x, y = batch
        self.calls += 1
        loss = torch.nn.functional.mse_loss(self.net(x), y)
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def configure_optimizers(self):
        return torch.optim.AdamW(self.parameters(), lr=1e-2)


class ToyData(L.LightningDataModule):
    def train_dataloader(self):
        g = torch.Generator().manual_seed(0)
        x = torch.randn(512, 16, generator=g)
        return DataLoader(TensorDataset(x, x.sum(1, keepdim=True)), batch_size=32, shuffle=False)


def main() -> None:
    out = Path(sys.argv[1])
    cfg = compose([f"paths.run_dir={out}", "trainer.progress_bar=false", *sys.argv[2:]])
    module = ToyModule()
    trainer = fit(module, ToyData(), cfg, enable_model_summary=False, limit_val_batches=0)
    state = {"rank": trainer.global_rank, "world": trainer.world_size, "step": trainer.global_step, "calls": module.calls,
             "loss": float(trainer.callback_metrics["train/loss"]),
             "strategy": type(trainer.strategy).__name__}
    (out / f"result_rank{trainer.global_rank}.json").write_text(json.dumps(state))


if __name__ == "__main__":
    main()
