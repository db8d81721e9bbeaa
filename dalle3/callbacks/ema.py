"""Exponential moving average of the trained weights, for sampling and evaluation.

The shadow is an fp32 CPU-or-device copy keyed by parameter name, updated every
``every_n_steps`` optimizer steps with decay ``min(decay, (1 + n) / (10 + n))`` (the
warm-up diffusers' ``EMAModel`` uses, so short runs are not dominated by the random
init). It is read through :func:`dalle3.dist.zero.gathered`, so under ZeRO-3, where
each rank holds only a slice of every parameter, all ranks gather, update the same
full shadow, and release. The shadow is part of the checkpoint (``callbacks["EMA"]``),
so a resumed run continues with the same EMA.
"""
from __future__ import annotations

from typing import Any, Optional

import lightning.pytorch as pl
import torch
from torch import nn

from dalle3.dist.zero import gathered


def ema_decay(decay: float, n_updates: int) -> float:
    """Decay of update number ``n_updates`` (0-based) with warm-up."""
    return min(decay, (1.0 + n_updates) / (10.0 + n_updates))


class EMA(pl.Callback):
    """EMA of the parameters of ``pl_module.<target>`` (default: the whole module's trainable ones).

    Args:
        decay: the long-run decay (0.9999 for long GPU runs, ~0.999 for minutes on a CPU).
        every_n_steps: update period in optimizer steps.
        target: attribute name of the submodule to track (``"unet"``); keys keep its prefix.
    """

    def __init__(self, decay: float = 0.999, every_n_steps: int = 1, target: Optional[str] = "unet"):
        self.decay, self.every_n_steps, self.target = decay, every_n_steps, target
        self.shadow: dict[str, torch.Tensor] = {}
        self.n_updates = 0
        self._seen_step = -1
        "The optimizer step of the last update: with gradient accumulation several batches end on one."

    @property
    def state_key(self) -> str:
        return "EMA"

    def _named(self, pl_module: pl.LightningModule) -> list[tuple[str, nn.Parameter]]:
        module = getattr(pl_module, self.target) if self.target else pl_module
        prefix = f"{self.target}." if self.target else ""
        return [(prefix + n, p) for n, p in module.named_parameters() if p.requires_grad]

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # on_train_start, not on_fit_start: DeepSpeed restores checkpoints after on_fit_start
        if self.shadow:  # restored from a checkpoint
            self.shadow = {k: v.to(pl_module.device) for k, v in self.shadow.items()}
            return
        for name, p in self._named(pl_module):
            with gathered([p]):
                self.shadow[name] = p.detach().float().clone()

    @torch.no_grad()
    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any,
                           batch: Any, batch_idx: int) -> None:
        if trainer.global_step % self.every_n_steps or trainer.global_step == self._seen_step:
            return
        self._seen_step = trainer.global_step
        one_minus = 1.0 - ema_decay(self.decay, self.n_updates)
        for name, p in self._named(pl_module):
            with gathered([p]):  # collective under ZeRO-3: every rank walks the same list
                self.shadow[name].lerp_(p.detach().float(), one_minus)
        self.n_updates += 1

    def state_dict(self) -> dict:
        return {"shadow": {k: v.detach().cpu() for k, v in self.shadow.items()}, "n_updates": self.n_updates,
                "decay": self.decay}

    def load_state_dict(self, state: dict) -> None:
        self.shadow = {k: v.clone() for k, v in state["shadow"].items()}
        self.n_updates = int(state["n_updates"])

    def weights(self, prefix: Optional[str] = None) -> dict[str, torch.Tensor]:
        """The shadow; with ``prefix`` only keys under it, prefix stripped (for ``load_state_dict``)."""
        prefix = f"{self.target}." if prefix is None and self.target else (prefix or "")
        return {k.removeprefix(prefix): v for k, v in self.shadow.items() if k.startswith(prefix)}
