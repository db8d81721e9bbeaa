"""``CaptionerModule``: the CoCa training task (batch → tokens → model → loss → logs).

Batches come from :class:`dalle3.data.ShardDataModule`: ``image`` in [0, 1] and
``caption`` strings (the caption kind this run trains on). CLIP normalisation and
tokenisation happen here; the loss lives in :mod:`dalle3.captioner.losses`.
"""
from __future__ import annotations

import math
from typing import Any, Optional

import lightning.pytorch as pl
import torch

from dalle3.captioner.losses import build_loss, coca_losses
from dalle3.captioner.model import build_captioner, model_image_size, pad_token_id, to_model_input
from dalle3.config.captioner import CaptionerConfig
from dalle3.config.convert import to_dataclass


def can_fuse(params: list) -> bool:
    """Fused AdamW needs floating-point parameters on one CPU or CUDA device."""
    devices = {p.device.type for p in params}
    return bool(params) and len(devices) == 1 and devices <= {"cpu", "cuda"} and all(p.is_floating_point() for p in params)


def cosine_with_warmup(step: int, warmup: int, total: int, min_ratio: float) -> float:
    """LR multiplier: linear warm-up to 1, then half a cosine down to ``min_ratio`` at ``total``."""
    if step < warmup:
        return (step + 1) / max(warmup, 1)
    progress = min((step - warmup) / max(total - warmup, 1), 1.0)
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def trim_padding(tokens: torch.Tensor, pad_id: int) -> torch.Tensor:
    """Drop the pad columns after the batch's longest caption.

    Why: the world's captions run from 3 to 78 tokens; padding every batch to the
    context length makes short-caption steps several times dearer in the text tower and
    decoder. Causal attention makes the caption loss independent of trailing pads; only
    the CLS token of the contrastive branch (appended after the last column) moves with
    the batch's longest caption, so the stages trim only when λ_con = 0.
    """
    pos = torch.arange(1, tokens.shape[1] + 1, device=tokens.device)
    return tokens[:, :int(((tokens != pad_id) * pos).max())]


class CaptionerModule(pl.LightningModule):
    """CoCa captioner training: λ_con · contrastive + λ_cap · caption loss.

    Args:
        captioner: the ``captioner`` config block (dataclass, DictConfig or dict).
        max_steps: optimizer steps of the run (the cosine schedule's length).
        init_from: weights to start from (export folder or ``.safetensors``).
    """

    def __init__(self, captioner: Any, max_steps: int, init_from: Optional[str] = None):
        super().__init__()
        self.cfg = to_dataclass(CaptionerConfig, captioner)
        self.max_steps = int(max_steps)
        self.captioner = build_captioner(self.cfg, pretrained=init_from)
        self.model = self.captioner.model
        self.tokenizer = self.captioner.tokenizer
        self.pad_id = pad_token_id(self.tokenizer)
        self.image_size = model_image_size(self.model)
        self.loss_fn = build_loss(self.cfg, self.pad_id)
        self.steps_run = 0
        "Training steps run by this process (a resumed run counts only its own)."

    def setup(self, stage: str) -> None:
        # rank/world are known only once the trainer has set up its strategy
        self.loss_fn = build_loss(self.cfg, self.pad_id, self.global_rank, self.trainer.world_size)

    def model_inputs(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised images at the model's size, and token ids (trimmed if configured)."""
        images = batch["image"]
        text = self.tokenizer(list(batch["caption"])).to(images.device)
        if self.cfg.trim_text:
            text = trim_padding(text, self.pad_id)
        return to_model_input(images, self.image_size), text

    def _losses(self, batch: dict) -> dict[str, torch.Tensor]:
        images, text = self.model_inputs(batch)
        out = self.model(images, text)
        losses = coca_losses(self.loss_fn, out)
        losses["logit_scale"] = out["logit_scale"].detach()
        return losses

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        self.steps_run += 1
        losses = self._losses(batch)
        n = len(batch["caption"])
        self.log("train/loss", losses["loss"], prog_bar=True, batch_size=n)
        self.log_dict({f"train/{k}": v for k, v in losses.items() if k != "loss"}, batch_size=n)
        return losses["loss"]

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        losses = self._losses(batch)
        self.log_dict({f"val/{k}": v for k, v in losses.items() if k != "logit_scale"},
                      batch_size=len(batch["caption"]), sync_dist=True)

    def configure_optimizers(self) -> dict:
        # open_clip's rule: no weight decay on gains, biases and the logit scale
        decay, no_decay = [], []
        for name, p in self.model.named_parameters():
            if not p.requires_grad:
                continue
            skip = p.ndim < 2 or "bn" in name or "ln" in name or "bias" in name or "logit_scale" in name
            (no_decay if skip else decay).append(p)
        c = self.cfg
        # torch's fused AdamW: one kernel for all parameters instead of ~10 small ops per tensor
        # (tiny model on the CPU: optimizer step 13.6 -> 2.1 ms; benchmarks/RESULTS.md)
        opt = torch.optim.AdamW([{"params": decay, "weight_decay": c.weight_decay},
                                 {"params": no_decay, "weight_decay": 0.0}],
                                lr=c.lr, betas=(c.beta1, c.beta2), eps=c.eps, fused=can_fuse(decay + no_decay))
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda s: cosine_with_warmup(s, c.warmup_steps, self.max_steps, c.min_lr_ratio))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
