"""CLIP score = 100 · max(cos(image embedding, text embedding), 0), as torchmetrics and the paper.

The scorer takes any open_clip model with ``encode_image``/``encode_text``. On the
synthetic world it is our alt-pretrained CoCa's contrastive towers (the analogue of the
paper's public CLIP, itself trained on web alt-text); at scale, pass an open_clip
export of ViT-B/32 (``open_clip.create_model("ViT-B-32", pretrained=path)``).
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from dalle3.captioner.model import to_model_input


class ClipScorer:
    def __init__(self, model: torch.nn.Module, tokenizer: Callable, image_size: int):
        self.model, self.tokenizer, self.image_size = model.eval(), tokenizer, image_size

    @classmethod
    def from_export(cls, folder: str) -> "ClipScorer":
        from dalle3.captioner.export import load_exported

        cap = load_exported(folder)
        size = cap.model_cfg.get("vision_cfg", {}).get("image_size", 224)
        return cls(cap.model, cap.tokenizer, int(size))

    @torch.no_grad()
    def __call__(self, images: torch.Tensor, texts: Sequence[str]) -> torch.Tensor:
        """Per-pair scores for images in [0, 1] and their texts."""
        img = F.normalize(self.model.encode_image(to_model_input(images, self.image_size)), dim=-1)
        txt = F.normalize(self.model.encode_text(self.tokenizer(list(texts))), dim=-1)
        return 100 * (img * txt).sum(-1).clamp(min=0)
