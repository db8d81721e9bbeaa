"""Typed config of the evaluation stage (`dalle3-eval`)."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from dalle3.config.validate import ConfigError, check_choice, check_positive, check_range

PROMPT_KINDS = ("dsc", "ssc", "alt")
"The prompt kinds of the evaluation: descriptive, short synthetic and alt-text captions."


@dataclass
class JudgeArchConfig:
    patch_size: int = 4
    "Side of the image tower's tokens in pixels; the conv stem downsamples by exactly this (32 px -> 8x8 tokens)."
    stem_channels: List[int] = field(default_factory=lambda: [32])
    "Intermediate channels of the conv stem that replaces the patch embedding (one stride-2 conv each, plus the last)."
    vision_width: int = 96
    "Width of the ViT image tower."
    vision_layers: int = 2
    "Transformer blocks of the image tower."
    vision_head_width: int = 32
    "Width of one attention head of the image tower."
    text_width: int = 64
    "Width of the text tower."
    text_heads: int = 4
    "Attention heads of the text tower."
    text_layers: int = 1
    "Transformer blocks of the text tower."
    embed_dim: int = 64
    "Width of the joint image-text embedding."
    context_length: int = 80
    "Tokens per caption, start and end included (the longest descriptive caption is 78 with them)."


@dataclass
class JudgeConfig:
    model: Optional[str] = None
    "An open_clip model name (e.g. ViT-B-32) to judge with; null: the world judge CLIP that stage=judge trains."
    pretrained: Optional[str] = None
    "With model: an open_clip pretrained tag (e.g. laion2b_s34b_b79k) or a local weights file."
    export: str = "${paths.out_dir}/judge/export"
    "The world judge's export folder (safetensors + open_clip config + tokenizer): written by stage=judge, read when model is null."
    image_size: int = 32
    "Side the world judge reads images at: the LDM's output side, so it trains on what it will score."
    arch: JudgeArchConfig = field(default_factory=JudgeArchConfig)
    "Sizes of the world judge."
    lr: float = 1.0e-3
    "Peak AdamW learning rate of stage=judge."
    weight_decay: float = 0.1
    "AdamW weight decay (not on gains, biases and the logit scale)."
    warmup_steps: int = 100
    "Linear warm-up steps before the cosine decay."
    min_lr_ratio: float = 0.1
    "Learning rate at the last step, as a share of lr."
    init_temperature: float = 0.07
    "Initial softmax temperature of the contrastive logits (CLIP: 0.07); the logit scale log(1/T) is learned."
    twins: bool = True
    "Each training sample brings its scene with one fact changed, rendered and described anew, as an in-batch hard negative (dalle3/eval/data.py); a batch then holds 2 x data.global_batch_size pairs."
    twin_weights: Dict[str, float] = field(default_factory=lambda: {"colour": 1.0, "shape": 1.0, "position": 1.0,
                                                                    "count": 1.0})
    "Relative odds of the fact a twin changes (colour, shape, position, count), among those the scene allows; equal: uniform."
    val_samples: int = 512
    "val samples of the judge's own validation (retrieval and the four sensitivities)."


@dataclass
class EvalConfig:
    runs: List[str] = field(default_factory=list)
    "ldm run folders to score, each with its run.json (globs allowed: outputs/ldm/*); the pipeline passes its own runs."
    prompts: str = "${paths.data_dir}/val"
    "Held-out shards whose alt-text, SSC and DSC captions are the prompts (never used for tuning)."
    num_prompts: int = 512
    "Prompts of each kind scored per run (512: all of val)."
    kinds: List[str] = field(default_factory=lambda: ["dsc", "ssc", "alt"])
    "Prompt kinds scored on each run's final checkpoint."
    curve: bool = True
    "Also score every kept intermediate checkpoint (CLIP score and checks against training step)."
    curve_kinds: List[str] = field(default_factory=lambda: ["dsc"])
    "Prompt kinds scored on intermediate checkpoints."
    curve_prompts: int = 64
    "Prompts of each kind scored on intermediate checkpoints."
    grid_prompts: int = 8
    "Images saved per run and kind for the report's side-by-side grids (the first N prompts)."
    recaptions: Optional[str] = "${recaption.out_dir}"
    "Recaption output (mode=shards) whose captions are scored against the world's truth for the report; null: skip."
    guidance: float = 7.5
    "Classifier-free guidance of the generated images (screened on dev prompts: benchmarks/RESULTS.md, session 8)."
    steps: int = 25
    "Sampler steps."
    seed: int = 0
    "Noise seed: every run sees the same initial noise for the same prompt."
    batch_size: int = 64
    "Images generated per batch."
    out_dir: str = "${paths.out_dir}/eval"
    "Where records.jsonl, runs.json, judge.json, captioners.json, images/ and report/ go."
    judge: JudgeConfig = field(default_factory=JudgeConfig)
    "The judge CLIP behind CLIP score: the world judge trained on the judge split, or an open_clip model by name."


def validate_eval(cfg: Any, key: str = "eval") -> None:
    """Check the ``eval`` block's values (one-line :class:`ConfigError`)."""
    for name in ("num_prompts", "steps", "batch_size", "curve_prompts"):
        check_positive(f"{key}.{name}", getattr(cfg, name))
    for name in ("kinds", "curve_kinds"):
        for kind in getattr(cfg, name):
            check_choice(f"{key}.{name}", kind, PROMPT_KINDS)
    if cfg.grid_prompts < 0:
        raise ConfigError(f"{key}.grid_prompts={cfg.grid_prompts}; allowed: >= 0")


def validate_judge(cfg: Any, key: str = "eval.judge") -> None:
    """Check the ``eval.judge`` block (one-line :class:`ConfigError`)."""
    if cfg.model:
        import open_clip

        if cfg.model not in open_clip.list_models():
            raise ConfigError(f"{key}.model={cfg.model!r} is not an open_clip model; allowed: null (the world "
                              "judge) or one of open_clip.list_models(), e.g. ViT-B-32")
        if not cfg.pretrained:
            raise ConfigError(f"{key}.pretrained is empty for {key}.model={cfg.model}; allowed: an open_clip "
                              "pretrained tag (e.g. laion2b_s34b_b79k) or a weights file (an untrained CLIP "
                              "judges nothing)")
        tags = open_clip.list_pretrained_tags_by_model(cfg.model)
        if cfg.pretrained not in tags and not os.path.isfile(cfg.pretrained):
            raise ConfigError(f"{key}.pretrained={cfg.pretrained!r} is neither a file nor a pretrained tag of "
                              f"{cfg.model}; allowed: a weights file or one of: {' | '.join(tags) or '(no tags)'}")
    elif cfg.pretrained:
        raise ConfigError(f"{key}.pretrained={cfg.pretrained!r} needs {key}.model; allowed: null with {key}.model=null "
                          f"(the world judge is read from {key}.export)")
    check_positive(f"{key}.image_size", cfg.image_size)
    check_positive(f"{key}.val_samples", cfg.val_samples)
    weights = dict(cfg.twin_weights)
    if set(weights) != {"colour", "shape", "position", "count"} or any(not float(w) >= 0 for w in weights.values()) \
            or not any(float(w) > 0 for w in weights.values()):
        raise ConfigError(f"{key}.twin_weights={weights} must give colour, shape, position and count each a weight "
                          ">= 0, at least one of them > 0")
    if cfg.warmup_steps < 0:
        raise ConfigError(f"{key}.warmup_steps={cfg.warmup_steps} must be >= 0")
    if not cfg.lr > 0:
        raise ConfigError(f"{key}.lr={cfg.lr!r} must be positive")
    check_range(f"{key}.min_lr_ratio", cfg.min_lr_ratio, 0.0, 1.0)
    check_range(f"{key}.init_temperature", cfg.init_temperature, 1e-3, 1.0)
    a = cfg.arch
    for name in ("patch_size", "vision_width", "vision_layers", "vision_head_width", "text_width", "text_heads",
                 "text_layers", "embed_dim", "context_length"):
        check_positive(f"{key}.arch.{name}", getattr(a, name))
    if not a.stem_channels or any(int(c) <= 0 for c in a.stem_channels):
        raise ConfigError(f"{key}.arch.stem_channels={list(a.stem_channels)}; allowed: a non-empty list of "
                          "positive ints")
    if 2 ** (len(a.stem_channels) + 1) != a.patch_size:
        raise ConfigError(f"{key}.arch.stem_channels={list(a.stem_channels)} downsample by "
                          f"{2 ** (len(a.stem_channels) + 1)} but {key}.arch.patch_size={a.patch_size}; allowed: "
                          "len(stem_channels) = log2(patch_size) - 1")
    if cfg.image_size % a.patch_size:
        raise ConfigError(f"{key}.image_size={cfg.image_size} is not a multiple of {key}.arch.patch_size="
                          f"{a.patch_size}; allowed: a multiple of it")
    for part, width, of in (("vision_head_width", a.vision_width, a.vision_head_width),
                            ("text_heads", a.text_width, a.text_heads)):
        if width % of:
            raise ConfigError(f"{key}.arch.{part}={of} does not divide the tower width {width}; "
                              "allowed: a divisor of it")
