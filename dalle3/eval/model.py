"""The world judge: open_clip's ``CLIP`` built from ``eval.judge.arch``, no Lightning, no distributed code.

The judge of CLIP score must see what the alt-text-pretrained captioner cannot (colours,
sizes, counts, positions), so it is a network of its own, trained contrastively on the
ground-truth captions of the ``judge`` split (:mod:`dalle3.eval.module`). It is also never
an LDM's text encoder (:mod:`dalle3.ldm.text`): a model should not be graded by its own eyes.

Image tower: open_clip's ViT with the captioner's conv stem in place of its patch
embedding (:mod:`dalle3.captioner.stem`; 32 px -> 8x8 tokens with the defaults), fixed 2D
sin-cos position embeddings. Text tower: open_clip's text transformer over the world's
word-level vocabulary (:func:`dalle3.captioner.tokenizer.build_world_tokenizer`), pooled at
the end token (``pool_type: eos``; open_clip's default ``argmax`` assumes the end token
has the largest id, which holds for its BPE vocabulary and not for ours, where it is 2).
"""
from __future__ import annotations

import math
from typing import Any, Optional

from torch import nn

from dalle3.captioner.model import create_coca
from dalle3.captioner.stem import StemSpec
from dalle3.captioner.tokenizer import WordTokenizer

JUDGE_MODEL_NAME = "dalle3_judge_clip"
"Name under which the world judge's model config is registered in open_clip."


def judge_model_config(judge: Any, tokenizer: WordTokenizer) -> dict:
    """The open_clip ``CLIP`` config (JSON-serialisable) of an ``eval.judge`` block.

    ``nonscalar_logit_scale``: DeepSpeed broadcasts parameters as byte views, which a
    0-dim ``logit_scale`` cannot give (as for the captioner).
    """
    a = judge.arch
    return {
        "embed_dim": int(a.embed_dim),
        "vision_cfg": dict(image_size=int(judge.image_size), patch_size=int(a.patch_size), width=int(a.vision_width),
                           layers=int(a.vision_layers), head_width=int(a.vision_head_width),
                           pos_embed_type="sin_cos_2d"),
        "text_cfg": dict(context_length=int(a.context_length), vocab_size=tokenizer.vocab_size, width=int(a.text_width),
                         heads=int(a.text_heads), layers=int(a.text_layers), pad_id=tokenizer.pad_token_id,
                         eos_id=tokenizer.eot_token_id, pool_type="eos"),
        "init_logit_scale": math.log(1 / float(judge.init_temperature)),
        "nonscalar_logit_scale": True,
    }


def judge_stem(judge: Any) -> StemSpec:
    """The conv stem of the world judge (no normalisation: colour must stay absolute, README)."""
    return StemSpec(tuple(int(c) for c in judge.arch.stem_channels), "none")


def create_judge(model_cfg: dict, stem: Optional[StemSpec], weights: Optional[str] = None,
                 name: str = JUDGE_MODEL_NAME) -> nn.Module:
    """``open_clip.create_model(name, pretrained=weights)`` on the registered config, plus the conv stem.

    The captioner's builder is model-agnostic (register config -> open_clip -> stem -> strict
    safetensors load), so the judge reuses it rather than repeat it.
    """
    return create_coca(name, model_cfg, stem, weights)
