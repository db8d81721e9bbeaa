"""``JudgeModule``: the world judge's training task (batch -> tokens -> CLIP -> open_clip ClipLoss -> logs).

Batches come from :class:`dalle3.data.ShardDataModule` over the ``judge`` split: ``image`` in
[0, 1] at ``eval.judge.image_size`` and ``caption`` (its alt or its DSC caption, the blend of
``conf/stage/judge.yaml``). The loss is open_clip's own ``ClipLoss``, which all-gathers
features from every rank with gradients (rank and world size passed in, as open_clip does).
"""
from __future__ import annotations

import math
from typing import Any

import lightning.pytorch as pl
import torch
from open_clip.loss import ClipLoss

from dalle3.captioner.model import Captioner, normalize_images
from dalle3.captioner.module import can_fuse, cosine_with_warmup
from dalle3.captioner.tokenizer import build_world_tokenizer
from dalle3.config.convert import to_dataclass
from dalle3.config.eval import JudgeConfig
from dalle3.eval.model import JUDGE_MODEL_NAME, create_judge, judge_model_config, judge_stem

MAX_LOGIT_SCALE = math.log(100)
"open_clip's training clamps the learned logit scale to ln(100) (temperature >= 0.01)."


def build_judge(judge: JudgeConfig) -> Captioner:
    """A fresh world judge: its CLIP, the world tokenizer and the model config, in the bundle
    the captioner export writes and reads (:mod:`dalle3.captioner.export`)."""
    tokenizer = build_world_tokenizer(int(judge.arch.context_length))
    model_cfg = judge_model_config(judge, tokenizer)
    stem = judge_stem(judge)
    return Captioner(create_judge(model_cfg, stem), tokenizer, JUDGE_MODEL_NAME, model_cfg, stem)


class JudgeModule(pl.LightningModule):
    """Contrastive training of the world judge.

    Args:
        judge: the ``eval.judge`` block (dataclass, DictConfig or dict).
        max_steps: optimizer steps of the run (the cosine schedule's length).
    """

    def __init__(self, judge: Any, max_steps: int):
        super().__init__()
        self.cfg = to_dataclass(JudgeConfig, judge)
        self.max_steps = int(max_steps)
        self.judge = build_judge(self.cfg)
        self.model, self.tokenizer = self.judge.model, self.judge.tokenizer
        self.loss_fn = ClipLoss()

    def setup(self, stage: str) -> None:
        # rank/world are known only once the trainer has set up its strategy
        self.loss_fn = ClipLoss(local_loss=False, gather_with_grad=True, rank=self.global_rank,
                                world_size=self.trainer.world_size)

    def _features(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        images, captions = batch["image"], list(batch["caption"])
        if "twin_image" in batch:  # eval.judge.twins: one-fact hard negatives in the same batch (dalle3/eval/data.py)
            images, captions = torch.cat([images, batch["twin_image"]]), captions + list(batch["twin_caption"])
        # Not trimmed to the batch's longest caption: open_clip's CLIP adds all context_length position
        # embeddings, and with half the captions descriptive (up to 78 tokens) trimming would save little.
        text = self.tokenizer(captions).to(images.device)
        image_features = self.model.encode_image(normalize_images(images), normalize=True)
        return image_features, self.model.encode_text(text, normalize=True)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        image_features, text_features = self._features(batch)
        scale = self.model.logit_scale.exp().reshape(())
        loss = self.loss_fn(image_features, text_features, scale)
        n = len(text_features)
        self.log("train/loss", loss, prog_bar=True, batch_size=n)
        self.log("train/logit_scale", scale.detach(), batch_size=n)
        return loss

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        image_features, text_features = self._features(batch)
        logits = image_features @ text_features.T
        top1 = (logits.argmax(1) == torch.arange(len(logits), device=logits.device)).float().mean()
        loss = ClipLoss()(image_features, text_features, self.model.logit_scale.exp().reshape(()))
        self.log_dict({"val/loss": loss, "val/top1": top1}, batch_size=len(logits), sync_dist=True)

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        with torch.no_grad():
            self.model.logit_scale.clamp_(0, MAX_LOGIT_SCALE)

    def configure_optimizers(self) -> dict:
        # open_clip's rule: no weight decay on gains, biases, embeddings of positions and the logit scale
        decay, no_decay = [], []
        for name, p in self.model.named_parameters():
            skip = p.ndim < 2 or "ln" in name or "bias" in name or "logit_scale" in name or "positional" in name
            (no_decay if skip else decay).append(p)
        c = self.cfg
        opt = torch.optim.AdamW([{"params": decay, "weight_decay": c.weight_decay},
                                 {"params": no_decay, "weight_decay": 0.0}],
                                lr=c.lr, betas=(0.9, 0.98), eps=1e-6, fused=can_fuse(decay + no_decay))
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda s: cosine_with_warmup(s, c.warmup_steps, self.max_steps, c.min_lr_ratio))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
