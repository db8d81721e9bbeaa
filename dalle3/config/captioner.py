"""Typed config of the CoCa captioner . Owned by dalle3/captioner.

``conf/captioner/<name>.yaml`` sets the values; the stage files
(``conf/stage/captioner_{pretrain,finetune}.yaml``) set the target caption, loss
weights and where fine-tuning starts from.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Dict, Optional, Sequence

from dalle3.config.validate import ConfigError, check_choice, check_positive, check_range

EXPORT_DIR = "export"
"""A captioner run's export folder inside its run folder: ``<run_dir>/export``. The one
place this name is spelled; YAML reaches it as ``${captioner_export:<run>}``
(:func:`dalle3.config.register_resolvers`) and code as :func:`captioner_export`."""


def captioner_run_dir(out_dir: str, run: str) -> str:
    """Run folder of captioner run ``run``: ``pretrain``, ``ssc`` or ``dsc``."""
    return os.path.join(out_dir, f"captioner_{run}")


def captioner_export(out_dir: str, run: str) -> str:
    """Export folder of captioner run ``run`` (``pretrain``, ``ssc`` or ``dsc``) under ``out_dir``."""
    return os.path.join(captioner_run_dir(out_dir, run), EXPORT_DIR)


CAPTIONER_TARGETS = ("alt", "ssc", "dsc")
"Caption kinds a captioner can be trained to write."
PRETRAIN_TARGETS = ("alt",)
"Targets of stage=captioner_pretrain."
FINETUNE_TARGETS = ("ssc", "dsc")
"Targets of stage=captioner_finetune."
TOKENIZERS = ("world", "open_clip")
"world: word-level vocabulary of the synthetic world; open_clip: the model's own (BPE) tokenizer."
DECODE_MODES = ("greedy", "beam", "sample")
"Caption decoding strategies of :mod:`dalle3.captioner.generate`."
POS_EMBED_TYPES = ("learnable", "sin_cos_2d")
"Position embeddings of open_clip's ViT image tower."
STEMS = ("patch", "conv")
"Patch embeddings of the image tower (dalle3/captioner/stem.py)."
STEM_NORMS = ("none", "group")
"""Normalisation between the conv stem's convolutions. ``group`` is GroupNorm(1, C), which
normalises each image over all its positions: an object's colour then reads relative to the
image's statistics (mostly its background), and the tiny captioner bound colours to the
wrong objects; ``none`` keeps absolute colour in every token (benchmarks/RESULTS.md)."""


@dataclass
class CaptionerArchConfig:
    """Sizes of a CoCa built from scratch (used when ``captioner.model`` is null)."""

    image_size: int = 64
    "Input image side in pixels; images of another size are resized (bicubic) on the way in."
    patch_size: int = 4
    "ViT patch side (image_size / patch_size tokens per side)."
    stem: str = "patch"
    "Patch embedding: patch (open_clip's strided convolution) | conv (overlapping 3x3 stride-2 convolutions, dalle3/captioner/stem.py; the export then loads with dalle3's load_exported, not open_clip's bare loader)."
    stem_channels: list[int] = field(default_factory=lambda: [32, 64])
    "Channels between the conv stem's layers (stem: conv); 2 ** (len + 1) must equal patch_size."
    stem_norm: str = "none"
    "Normalisation between the conv stem's layers: none | group (GroupNorm over the whole image; it blurs absolute colour, benchmarks/RESULTS.md)."
    vision_width: int = 96
    "Width of the ViT image tower."
    vision_layers: int = 3
    "Residual blocks of the image tower."
    vision_head_width: int = 32
    "Channels per attention head in the image tower (heads = width / head_width)."
    pos_embed_type: str = "learnable"
    "Image tower position embeddings: learnable | sin_cos_2d (fixed 2D sine-cosine, as in MAE)."
    attentional_pool: bool = True
    "true: an attentional pooler compresses the patch tokens into attn_pooler_queries tokens; false: the decoder attends to every patch token (vision_width must equal text_width)."
    attn_pooler_queries: int = 65
    "Queries of the attentional pooler: one pooled embedding for the contrastive loss, the rest are the image tokens the decoder attends to."
    attn_pooler_heads: int = 4
    "Heads of the attentional pooler."
    embed_dim: int = 128
    "Width of the joint embedding and of the image tokens."
    text_width: int = 128
    "Width of the unimodal text tower and the multimodal decoder."
    text_heads: int = 4
    "Attention heads of the text tower and the decoder."
    text_layers: int = 2
    "Residual blocks of the unimodal (causal) text tower."
    decoder_layers: int = 3
    "Blocks of the multimodal decoder (self-attention + cross-attention each)."


@dataclass
class CaptionerDecodeConfig:
    """How validation captions (and the recaption job) are decoded."""

    mode: str = "greedy"
    "greedy | beam | sample."
    max_new_tokens: int = 30
    "Most tokens generated per caption (EOS included)."
    min_new_tokens: int = 0
    "EOS is forbidden until this many tokens have been generated."
    num_beams: int = 4
    "Beam width (mode=beam)."
    length_penalty: float = 1.0
    "Beam score = sum log p / length ** length_penalty (mode=beam; >0 favours longer captions)."
    temperature: float = 1.0
    "Softmax temperature (mode=sample)."
    top_k: int = 0
    "Keep the k most likely tokens (mode=sample; 0: off)."
    top_p: float = 1.0
    "Nucleus: keep the smallest set of tokens with this much probability (mode=sample; 1: off)."
    repetition_penalty: float = 1.0
    "Divide positive / multiply negative logits of tokens already in the caption (1: off)."
    seed: int = 0
    "Seed of the sampler (mode=sample)."


@dataclass
class CaptionerConfig:
    name: str = "tiny"
    "Size preset (conf/captioner/): tiny | coca_ViT-B-32 | coca_ViT-L-14."
    model: Optional[str] = None
    "open_clip model config name (e.g. coca_ViT-B-32); null builds one from `arch` and registers it as dalle3_coca_<name>."
    arch: CaptionerArchConfig = field(default_factory=CaptionerArchConfig)
    "Sizes used when `model` is null."
    tokenizer: str = "world"
    "world (word-level, sized to the synthetic world) | open_clip (the model's BPE tokenizer)."
    phrases: int = 0
    "tokenizer=world: also this many multi-word glue phrases as tokens (no colour/shape/size/number/sign word inside); 0 = words only."
    context_length: Optional[int] = 80
    "Tokens per caption including start/end tokens; null keeps the open_clip model's own."
    pretrained: Optional[str] = None
    "Whole-CoCa weights: an open_clip pretrained tag (needs the hub) or a local .safetensors/.bin file."
    image_init: Optional[str] = None
    "Start the image tower from a CLIP: a checkpoint file, or `model:tag` for open_clip (needs the hub)."
    freeze_image: bool = False
    "Freeze the image trunk (patch embedding + ViT blocks); the attentional pooler stays trainable."
    target: str = "alt"
    "Caption kind this run trains on (and the caption source it reads): alt | ssc | dsc."
    init_from: Optional[str] = None
    "Weights to start from: an export folder or .safetensors file (fine-tuning: the pretrain run's export)."
    contrastive_weight: float = 1.0
    "λ_con, weight of the CLIP contrastive loss (CoCa: 1; fine-tuning: 0)."
    caption_weight: float = 2.0
    "λ_cap, weight of the captioning loss (CoCa: 2; fine-tuning: 1)."
    caption_focal_gamma: float = 0.0
    "Focal weighting of the caption loss: each token's cross-entropy times (1 - p)^γ, so tokens the model already predicts weigh less (0: plain cross-entropy, as in CoCa)."
    lr: float = 1e-3
    "Peak AdamW learning rate of this run (conf/stage/captioner_pretrain.yaml sets it to pretrain_lr)."
    pretrain_lr: float = 1e-3
    "The size preset's peak learning rate for stage=captioner_pretrain. A short alt-text pretrain at a high lr leaves weights that fine-tune far slower than fresh ones (benchmarks/RESULTS.md)."
    weight_decay: float = 0.05
    "AdamW weight decay (open_clip's rule: not on gains, biases and logit_scale)."
    beta1: float = 0.9
    "AdamW beta1."
    beta2: float = 0.98
    "AdamW beta2."
    eps: float = 1e-6
    "AdamW epsilon."
    warmup_steps: int = 100
    "Linear warm-up steps before the cosine decay."
    min_lr_ratio: float = 0.1
    "The cosine decays to lr * min_lr_ratio at trainer.max_steps."
    pretrain_steps: int = 150
    "The preset's training steps of stage=captioner_pretrain (the stage's trainer.max_steps); benchmarks/caption_quality.py measures the same."
    finetune_steps: Dict[str, int] = field(default_factory=lambda: {"ssc": 100, "dsc": 2450})
    "The preset's training steps of stage=captioner_finetune per captioner.target (the stage's trainer.max_steps)."
    trim_text: bool = False
    "Cut each batch's token rows after its longest caption: cheaper, but the contrastive CLS token then moves (fine-tuning, λ_con = 0, turns it on)."
    grad_checkpointing: bool = False
    "Recompute activations in backward (large models)."
    val_captions: int = 8
    "Fixed validation images whose generated captions are logged beside the ground truth."
    decode: CaptionerDecodeConfig = field(default_factory=CaptionerDecodeConfig)
    "Decoding of logged captions."


def validate_captioner(cfg: Any, targets: Sequence[str] = CAPTIONER_TARGETS, stage: str = "") -> None:
    """Check a root config's ``captioner`` block (one-line :class:`ConfigError`).

    Args:
        targets: the ``captioner.target`` values the calling stage trains.
        stage: the calling stage's name, for the message.
    """
    c = cfg.captioner
    if c.target not in targets:
        raise ConfigError(f"captioner.target={c.target!r} is not trained by stage={stage or cfg.stage}; "
                          f"allowed: {' | '.join(targets)}")
    check_choice("captioner.tokenizer", c.tokenizer, TOKENIZERS)
    check_choice("captioner.decode.mode", c.decode.mode, DECODE_MODES)
    check_range("captioner.contrastive_weight", c.contrastive_weight, 0.0, float("inf"))
    check_range("captioner.caption_weight", c.caption_weight, 0.0, float("inf"))
    check_range("captioner.caption_focal_gamma", c.caption_focal_gamma, 0.0, 10.0)
    check_positive("captioner.decode.max_new_tokens", c.decode.max_new_tokens)
    for key, lr in (("captioner.pretrain_lr", c.pretrain_lr), ("captioner.lr", c.lr)):
        if not lr > 0:
            raise ConfigError(f"{key}={lr!r}; allowed: a learning rate > 0")
    if not c.model:
        _validate_arch(c.arch)
    if c.tokenizer == "open_clip" and not c.model:
        raise ConfigError("captioner.tokenizer=open_clip needs captioner.model; allowed: an open_clip CoCa name "
                          "such as coca_ViT-B-32")
    if cfg.caption.source != c.target:
        raise ConfigError(f"caption.source={cfg.caption.source!r} differs from captioner.target={c.target!r}; "
                          "allowed: the same kind (the stage files set caption.source: ${captioner.target})")


def _validate_arch(a: Any) -> None:
    check_choice("captioner.arch.pos_embed_type", a.pos_embed_type, POS_EMBED_TYPES)
    check_choice("captioner.arch.stem", a.stem, STEMS)
    if a.stem == "conv":
        check_choice("captioner.arch.stem_norm", a.stem_norm, STEM_NORMS)
    if a.image_size % a.patch_size:
        raise ConfigError(f"captioner.arch.image_size={a.image_size} is not a multiple of "
                          f"captioner.arch.patch_size={a.patch_size}; allowed: a multiple")
    if not a.attentional_pool and a.vision_width != a.text_width:
        raise ConfigError(f"captioner.arch.vision_width={a.vision_width} differs from captioner.arch."
                          f"text_width={a.text_width} with attentional_pool=false; allowed: equal widths "
                          "(the decoder attends to the patch tokens directly)")
