"""A trivial LightningModule that records which samples and captions it trained on."""
from __future__ import annotations

import lightning.pytorch as pl
import torch


class KeyProbe(pl.LightningModule):
    """A linear layer on the mean colour of each image; keeps the keys, kinds and skip counts it saw."""

    def __init__(self) -> None:
        super().__init__()
        self.head = torch.nn.Linear(3, 1)
        self.keys: list[str] = []
        self.kinds: list[str] = []
        self.n_skipped = 0
        self.epochs: list[int] = []

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        self.keys += batch["key"]
        self.kinds += batch["caption_kind"]
        self.n_skipped += int(batch["n_skipped"])
        self.epochs.append(self.current_epoch)
        return self.head(batch["image"].mean(dim=(2, 3))).pow(2).mean()

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.01)
