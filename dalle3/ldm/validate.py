"""Value checks of the ``ldm`` block, run by every ldm stage before any heavy work."""
from __future__ import annotations

from typing import Any

from dalle3.config.ldm import BETA_SCHEDULES, OPEN_CLIP_LAYERS, PREDICTION_TYPES, SAMPLERS, TEXT_ENCODER_KINDS
from dalle3.config.validate import ConfigError, check_choice, check_positive, check_range


def validate_ldm(cfg: Any, key: str = "ldm") -> None:
    """Raise a one-line :class:`ConfigError` naming the first bad ``ldm.*`` value."""
    check_choice(f"{key}.text_encoder.kind", cfg.text_encoder.kind, TEXT_ENCODER_KINDS)
    if cfg.text_encoder.kind == "open_clip":
        check_choice(f"{key}.text_encoder.layer", cfg.text_encoder.layer, OPEN_CLIP_LAYERS)
        if not cfg.text_encoder.pretrained:
            raise ConfigError(f"{key}.text_encoder.pretrained is not set for kind=open_clip; allowed: "
                              "MODEL:TAG_OR_FILE, e.g. ViT-H-14:laion2b_s32b_b79k")
    check_choice(f"{key}.noise.prediction_type", cfg.noise.prediction_type, PREDICTION_TYPES)
    check_choice(f"{key}.noise.beta_schedule", cfg.noise.beta_schedule, BETA_SCHEDULES)
    check_choice(f"{key}.noise.sampler", cfg.noise.sampler, SAMPLERS)
    check_range(f"{key}.train.caption_dropout", cfg.train.caption_dropout, 0.0, 1.0)
    check_range(f"{key}.train.ema_decay", cfg.train.ema_decay, 0.0, 1.0)
    check_positive(f"{key}.train.ema_every_n_steps", cfg.train.ema_every_n_steps)
    check_range(f"{key}.train.offset_noise", cfg.train.offset_noise, 0.0, 1.0)
    if cfg.train.min_snr_gamma is not None and cfg.train.min_snr_gamma <= 0:
        raise ConfigError(f"{key}.train.min_snr_gamma={cfg.train.min_snr_gamma!r}; allowed: a positive number or null")
    check_positive(f"{key}.text_encoder.max_length", cfg.text_encoder.max_length)
    check_positive(f"{key}.image_size", cfg.image_size)
    levels = 2 ** (len(cfg.vae.block_out_channels) - 1)
    if cfg.image_size % levels:
        raise ConfigError(f"{key}.image_size={cfg.image_size} is not divisible by the VAE's downsampling {levels}; "
                          f"allowed: a multiple of {levels}")
    unet = cfg.unet
    if not unet.pretrained and len(unet.down_block_types) != len(unet.block_out_channels):
        raise ConfigError(f"{key}.unet.down_block_types has {len(unet.down_block_types)} entries for "
                          f"{len(unet.block_out_channels)} block_out_channels; allowed: one per level")
    for name in ("every_n_steps",):
        if getattr(cfg.sample, name) < 0:
            raise ConfigError(f"{key}.sample.{name}={getattr(cfg.sample, name)}; allowed: >= 0")
    check_positive(f"{key}.generate.n", cfg.generate.n)
    check_positive(f"{key}.generate.steps", cfg.generate.steps)
