"""CoCa's loss: λ_con · CLIP contrastive + λ_cap · captioning (Yu et al. 2022; open_clip's CoCaLoss).

The contrastive term all-gathers image and text features from every rank (rank and world
size are passed in, as open_clip does), with gradients through the gather, so each
rank's logits see the global batch.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from open_clip.loss import CoCaLoss
from torch import nn


class FocalCrossEntropy(nn.Module):
    """Token cross-entropy weighted by ``(1 - p)^gamma`` (Lin et al. 2017), mean over non-pad tokens.

    A drop-in for the ``nn.CrossEntropyLoss`` inside open_clip's ``CoCaLoss`` (logits
    ``(B, V, T)``, labels ``(B, T)``). Descriptive captions are mostly template words the
    model soon predicts; the weighting moves the gradient to the tokens it still gets wrong.
    On the tiny preset it did not pay at full length (count 0.80 vs 0.85 at γ = 1,
    benchmarks/RESULTS.md), so the default is ``gamma=0``: plain cross-entropy.
    """

    def __init__(self, gamma: float, ignore_index: int):
        super().__init__()
        self.gamma, self.ignore_index = float(gamma), int(ignore_index)

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        logp = F.log_softmax(logits.float(), dim=1).gather(1, labels.clamp(min=0).unsqueeze(1)).squeeze(1)
        valid = labels != self.ignore_index
        weight = (1 - logp.exp()).pow(self.gamma) if self.gamma else 1.0
        return -(weight * logp)[valid].sum().div(valid.sum().clamp(min=1)).to(logits.dtype)


def build_loss(cfg: Any, pad_id: int, rank: int = 0, world_size: int = 1) -> CoCaLoss:
    """open_clip's ``CoCaLoss`` from the ``captioner`` block.

    Args:
        cfg: ``CaptionerConfig`` (``contrastive_weight``, ``caption_weight``, ``caption_focal_gamma``).
        pad_id: the tokenizer's pad id (ignored by the caption loss).
        rank, world_size: this process in the data-parallel group.
    """
    loss = CoCaLoss(caption_loss_weight=float(cfg.caption_weight), clip_loss_weight=float(cfg.contrastive_weight),
                    pad_id=pad_id, local_loss=False, gather_with_grad=True, rank=rank, world_size=world_size)
    if cfg.caption_focal_gamma:
        loss.caption_loss = FocalCrossEntropy(cfg.caption_focal_gamma, pad_id)
    return loss


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
