"""CoCa's loss: λ_con · CLIP contrastive + λ_cap · captioning (Yu et al. 2022; open_clip's CoCaLoss).

The contrastive term all-gathers image and text features from every rank (rank and world
size are passed in, as open_clip does), with gradients through the gather, so each
rank's logits see the global batch.
"""
from __future__ import annotations

from typing import Any

import torch
from open_clip.loss import CoCaLoss


def build_loss(cfg: Any, pad_id: int, rank: int = 0, world_size: int = 1) -> CoCaLoss:
    """open_clip's ``CoCaLoss`` from the ``captioner`` block.

    Args:
        cfg: ``CaptionerConfig`` (``contrastive_weight``, ``caption_weight``).
        pad_id: the tokenizer's pad id (ignored by the caption loss).
        rank, world_size: this process in the data-parallel group.
    """
    return CoCaLoss(caption_loss_weight=float(cfg.caption_weight), clip_loss_weight=float(cfg.contrastive_weight),
                    pad_id=pad_id, local_loss=False, gather_with_grad=True, rank=rank, world_size=world_size)


def coca_losses(loss_fn: CoCaLoss, out: dict) -> dict[str, torch.Tensor]:
    """Weighted losses and their sum from the model's output dict."""
    contrastive, caption = loss_fn(out["image_features"], out["text_features"], out["logits"], out["labels"],
                                   out["logit_scale"])
    contrastive = contrastive.to(caption.dtype)  # CoCaLoss returns an int 0 when λ_con = 0
    total = contrastive + caption
    if not loss_fn.clip_loss_weight:
        # The contrastive head (CLS token, projections, logit scale) gets no gradient at
        # λ_con = 0; a zero-weighted term gives it an exact zero one, so DDP and ZeRO need
        # no unused-parameter search.
        total = total + 0.0 * (out["image_features"].sum() + out["text_features"].sum() + out["logit_scale"])
    return {"loss": total, "contrastive_loss": contrastive, "caption_loss": caption}
