"""The latent diffusion model's parts as plain diffusers/transformers modules.

No Lightning, DeepSpeed or ``torch.distributed`` here, and no file caching. Every builder
takes the typed config block of its part (:mod:`dalle3.config.ldm`): a part with
``pretrained`` set is loaded from that folder (or hub name), otherwise it is built from
the size fields. ``tiny`` and Stable-Diffusion-sized presets therefore run the very same
code. The text side (tokenizer, frozen text encoder saved once and reloaded, prompt
features) is :mod:`dalle3.ldm.text`, where :func:`build_parts` takes it from.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from torch import nn


def freeze(module: nn.Module) -> nn.Module:
    """Eval mode, no gradients: the text encoder and VAE are never trained by the ldm stage."""
    module.eval().requires_grad_(False)
    return module


# --------------------------------------------------------------------------- image parts
def build_vae(cfg: Any, image_size: int):
    """A fresh ``AutoencoderKL`` from the size fields of a ``VAEConfig`` (the vae stage)."""
    from diffusers import AutoencoderKL

    n = len(cfg.block_out_channels)
    return AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * n,
                         up_block_types=("UpDecoderBlock2D",) * n, block_out_channels=tuple(cfg.block_out_channels),
                         layers_per_block=cfg.layers_per_block, latent_channels=cfg.latent_channels,
                         norm_num_groups=cfg.norm_num_groups, sample_size=image_size)


def load_vae(cfg: Any):
    """The pretrained (or vae-stage) ``AutoencoderKL`` of ``cfg.pretrained``, frozen."""
    from diffusers import AutoencoderKL

    if not cfg.pretrained:
        raise ValueError("ldm.vae.pretrained is not set: run the vae stage first or point it at a VAE folder")
    sub = {"subfolder": cfg.subfolder} if cfg.subfolder else {}
    return freeze(AutoencoderKL.from_pretrained(cfg.pretrained, **sub))


def vae_downsample(vae: nn.Module) -> int:
    """Pixels per latent pixel (8 for Stable Diffusion's VAE, 4 for the tiny one)."""
    return 2 ** (len(vae.config.block_out_channels) - 1)


def build_unet(cfg: Any, sample_size: int, in_channels: int, cross_attention_dim: int):
    """The denoising ``UNet2DConditionModel``: loaded if ``cfg.pretrained``, else built.

    Args:
        cfg: a ``UNetConfig``.
        sample_size: latent side (image side / VAE downsampling).
        in_channels: latent channels (the VAE's).
        cross_attention_dim: the text encoder's hidden size.
    """
    from diffusers import UNet2DConditionModel

    if cfg.pretrained:
        sub = {"subfolder": cfg.subfolder} if cfg.subfolder else {}
        unet = UNet2DConditionModel.from_pretrained(cfg.pretrained, **sub)
        if unet.config.cross_attention_dim != cross_attention_dim:
            raise ValueError(f"ldm.unet.pretrained has cross_attention_dim={unet.config.cross_attention_dim} but "
                             f"the text encoder's width is {cross_attention_dim}")
        return unet
    return UNet2DConditionModel(
        sample_size=sample_size, in_channels=in_channels, out_channels=in_channels,
        down_block_types=tuple(cfg.down_block_types), up_block_types=tuple(cfg.up_block_types),
        block_out_channels=tuple(cfg.block_out_channels), layers_per_block=cfg.layers_per_block,
        cross_attention_dim=cross_attention_dim, attention_head_dim=cfg.attention_head_dim,
        norm_num_groups=cfg.norm_num_groups, class_embed_type="projection" if cfg.pooled_text else None,
        projection_class_embeddings_input_dim=cross_attention_dim if cfg.pooled_text else None)


def takes_pooled_text(unet: nn.Module) -> bool:
    """Whether ``unet`` was built with ``ldm.unet.pooled_text`` (a projection class embedding)."""
    return getattr(unet.config, "class_embed_type", None) == "projection"


def unet_text_inputs(unet: nn.Module, context):
    """The text keyword arguments of a call of ``unet`` on text features ``context`` [B, L, D].

    ``encoder_hidden_states`` always; for a U-Net built with ``pooled_text`` also
    ``class_labels``, the features' mean over tokens (with CLIP's causal mask the padding
    positions after the prompt see all of it, so the mean covers the whole prompt).
    """
    if takes_pooled_text(unet):
        return {"encoder_hidden_states": context, "class_labels": context.mean(dim=1)}
    return {"encoder_hidden_states": context}


# --------------------------------------------------------------------------- schedulers
def build_noise_scheduler(cfg: Any):
    """DDPM training schedule of a ``NoiseConfig`` (its ``prediction_type`` sets the target)."""
    from diffusers import DDPMScheduler

    return DDPMScheduler(num_train_timesteps=cfg.num_train_timesteps, beta_schedule=cfg.beta_schedule,
                         beta_start=cfg.beta_start, beta_end=cfg.beta_end, prediction_type=cfg.prediction_type,
                         clip_sample=False)


def build_sampler(cfg: Any, name: Optional[str] = None):
    """The sampling scheduler (``ddim`` or ``dpm``: DPM-Solver++), same betas as training."""
    from diffusers import DDIMScheduler, DPMSolverMultistepScheduler

    name = name or cfg.sampler
    common = dict(num_train_timesteps=cfg.num_train_timesteps, beta_schedule=cfg.beta_schedule,
                  beta_start=cfg.beta_start, beta_end=cfg.beta_end, prediction_type=cfg.prediction_type)
    if name == "ddim":
        return DDIMScheduler(clip_sample=False, set_alpha_to_one=False, steps_offset=1, **common)
    if name == "dpm":
        return DPMSolverMultistepScheduler(algorithm_type="dpmsolver++", **common)
    raise ValueError(f"sampler {name!r}; allowed: ddim | dpm")


# --------------------------------------------------------------------------- all parts
@dataclass
class LDMParts:
    """Everything a text-to-image step needs; only ``unet`` is trained."""

    tokenizer: Any
    text_encoder: nn.Module
    vae: nn.Module
    unet: nn.Module
    noise_scheduler: Any


def text_width(encoder: nn.Module) -> int:
    """Hidden size of a CLIP (``hidden_size``) or T5 (``d_model``) encoder."""
    return getattr(encoder.config, "d_model", None) or encoder.config.hidden_size


def build_parts(cfg: Any, vae: Optional[nn.Module] = None) -> LDMParts:
    """All parts of an ``LDMConfig``: text encoder and VAE loaded (frozen), U-Net built or loaded.

    Args:
        cfg: the ``ldm`` block.
        vae: use this VAE instead of loading ``cfg.vae.pretrained`` (tests, the vae stage).
    """
    from dalle3.ldm.text import load_or_create_text_encoder  # text imports this module's freeze

    tokenizer, text_encoder = load_or_create_text_encoder(cfg.text_encoder)
    vae = freeze(vae) if vae is not None else load_vae(cfg.vae)
    side = cfg.image_size // vae_downsample(vae)
    unet = build_unet(cfg.unet, side, vae.config.latent_channels, text_width(text_encoder))
    return LDMParts(tokenizer, text_encoder, vae, unet, build_noise_scheduler(cfg.noise))
