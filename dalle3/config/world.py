"""Typed config of the world stage (`dalle3-world`): the synthetic world and how it is written.

``world.*`` decides what a scene and its captions look like; ``datagen.*`` how many are
written and how they are sharded. Owned by :mod:`dalle3.world`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from dalle3.config.validate import ConfigError, check_choice, check_positive, check_range

DSC_ORDERS = ("reading", "shuffled", "subject")
"""Allowed ``world.dsc_order`` values."""
IMAGE_FORMATS = ("png", "jpg")
"""Allowed ``world.image_format`` values."""
IMAGE_SIZES = (32, 64)
"""Allowed ``world.image_size`` values."""


@dataclass
class WorldConfig:
    image_size: int = 64
    "Rendered image side in pixels (32 and 64 are supported)."
    min_objects: int = 1
    "Fewest objects in a scene."
    max_objects: int = 4
    "Most objects in a scene (at most 9: one per grid cell)."
    sign_rate: float = 0.3
    "Share of scenes that show a sign with a word from the lexicon."
    alt_wrong_count_rate: float = 0.3
    "Share of alt-texts that state a wrong count of the main subject."
    alt_wrong_position_rate: float = 0.3
    "Share of alt-texts that state a wrong position of the main subject."
    alt_colour_rate: float = 0.0
    "Share of alt-texts that keep the subject's colour (0: alt never states colours)."
    alt_noise_rate: float = 0.6
    "Share of alt-texts with web noise added (file names, shop words, unrelated words)."
    alt_empty_rate: float = 0.05
    "Share of empty alt-texts."
    dsc_order: str = "reading"
    """Order of the objects in a descriptive caption: ``reading`` (colour-shape groups by
    their first member in reading order, top left to bottom right, and each group's members
    likewise, as a person scanning the picture would), ``shuffled`` (random order) or ``subject``
    (reading order, the main subject's group first: the prompt upsampler's targets)."""
    image_format: str = "png"
    "Image member written to shards: png (lossless) or jpg."
    jpeg_quality: int = 95
    "JPEG quality when image_format=jpg."


@dataclass
class SplitSizes:
    train: int = 4096
    "Samples in the `train` split (alt-text pretraining, recaptioning, LDM training)."
    val: int = 512
    "Samples in the `val` split (held out for evaluation)."
    annotated: int = 8192
    "Samples in the `annotated` split (stands in for the hand-written SSC/DSC corpora). With 2,048 the tiny DSC captioner memorises them within its training budget (benchmarks/RESULTS.md)."
    judge: int = 4096
    "Samples in the `judge` split: ground-truth DSC and alt captions that train only the evaluation's judge CLIP (stage=judge); no captioner or LDM reads it."
    dev: int = 512
    "Samples in the `dev` split: prompts for screening LDM and evaluation settings (`eval.prompts=${paths.data_dir}/dev`), so the held-out `val` prompts are never tuned on."


@dataclass
class DataGenConfig:
    sizes: SplitSizes = field(default_factory=SplitSizes)
    "Number of samples per split."
    shard_size: int = 1024
    "Samples per tar shard."
    seed: int = 0
    "Seed of the world; the same seed writes byte-identical shards."
    workers: int = 2
    "Processes writing shards in parallel."
    overwrite: bool = False
    "Rewrite shards that already exist."


def validate_world(cfg: Any, key: str = "world") -> None:
    """Check the ``world`` block (one-line :class:`ConfigError`)."""
    check_choice(f"{key}.image_size", cfg.image_size, IMAGE_SIZES)
    check_choice(f"{key}.image_format", cfg.image_format, IMAGE_FORMATS)
    check_choice(f"{key}.dsc_order", cfg.dsc_order, DSC_ORDERS)
    if not 1 <= cfg.min_objects <= cfg.max_objects <= 9:
        raise ConfigError(f"{key}.min_objects={cfg.min_objects}, {key}.max_objects={cfg.max_objects}: "
                          "allowed: 1 <= min_objects <= max_objects <= 9")
    for name in ("sign_rate", "alt_wrong_count_rate", "alt_wrong_position_rate", "alt_colour_rate",
                 "alt_noise_rate", "alt_empty_rate"):
        check_range(f"{key}.{name}", getattr(cfg, name), 0.0, 1.0)


def validate_datagen(cfg: Any, key: str = "datagen") -> None:
    """Check the ``datagen`` block (one-line :class:`ConfigError`)."""
    check_positive(f"{key}.shard_size", cfg.shard_size)
