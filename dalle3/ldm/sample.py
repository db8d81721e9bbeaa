"""Text-to-image sampling with classifier-free guidance: pure functions over the parts.

Used by ``dalle3-generate``, the sample-image callback and the benchmarks. It follows
``StableDiffusionPipeline``'s arithmetic (empty prompt as the unconditional branch,
latents scaled by the VAE's ``scaling_factor``) so that our samples and those of the
exported pipeline agree.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
from torch import nn

from dalle3.ldm.model import unet_text_inputs
from dalle3.ldm.text import encode_prompts


@torch.no_grad()
def sample_latents(unet: nn.Module, sampler, cond: torch.Tensor, uncond: torch.Tensor, *, guidance: float,
                   steps: int, generator: torch.Generator, shape: tuple[int, ...]) -> torch.Tensor:
    """Denoise Gaussian latents of ``shape`` in ``steps`` sampler steps.

    Args:
        unet: the denoiser (eval mode).
        sampler: a diffusers scheduler (DDIM or DPM-Solver); its state is reset here.
        cond, uncond: text features [B, L, D] of the prompts and of the empty prompt.
        guidance: classifier-free guidance scale (1: no guidance, one U-Net pass per step).
        generator: seeds the initial noise (CPU generator: the same images on CPU and GPU).
    """
    device = cond.device
    sampler.set_timesteps(steps, device=device)
    latents = torch.randn(shape, generator=generator, dtype=torch.float32).to(device)
    latents = latents * sampler.init_noise_sigma
    dtype = next(unet.parameters()).dtype
    guided = guidance != 1.0
    context = torch.cat([uncond, cond]) if guided else cond
    text = unet_text_inputs(unet, context.to(dtype))
    for t in sampler.timesteps:
        x = torch.cat([latents, latents]) if guided else latents
        x = sampler.scale_model_input(x, t)
        pred = unet(x.to(dtype), t, **text).sample.float()
        if guided:
            pred_uncond, pred_cond = pred.chunk(2)
            pred = pred_uncond + guidance * (pred_cond - pred_uncond)
        latents = sampler.step(pred, t, latents).prev_sample
    return latents


@torch.no_grad()
def decode_latents(vae: nn.Module, latents: torch.Tensor) -> torch.Tensor:
    """Scaled latents → images in [0, 1]."""
    images = vae.decode(latents / vae.config.scaling_factor).sample
    return (images.float() / 2 + 0.5).clamp(0, 1)


@torch.no_grad()
def generate(unet: nn.Module, vae: nn.Module, tokenizer, text_encoder: nn.Module, sampler,
             prompts: Sequence[str], *, guidance: float = 3.0, steps: int = 25, seed: int = 0,
             sample_size: Optional[int] = None) -> torch.Tensor:
    """Prompts → FloatTensor[N, 3, H, W] images in [0, 1].

    Args:
        sample_size: latent side; default ``unet.config.sample_size``.
    """
    was_training = unet.training
    unet.eval()
    device = next(unet.parameters()).device
    cond = encode_prompts(tokenizer, text_encoder, prompts).to(device)
    uncond = encode_prompts(tokenizer, text_encoder, [""] * len(prompts)).to(device)
    side = sample_size or unet.config.sample_size
    shape = (len(prompts), unet.config.in_channels, side, side)
    latents = sample_latents(unet, sampler, cond, uncond, guidance=guidance, steps=steps,
                             generator=torch.Generator().manual_seed(seed), shape=shape)
    unet.train(was_training)
    return decode_latents(vae, latents.to(next(vae.parameters()).device))


def image_grid(images: torch.Tensor, nrow: Optional[int] = None, pad: int = 2) -> torch.Tensor:
    """[N, 3, H, W] → one [3, H', W'] grid image (white padding), about square by default."""
    n, c, h, w = images.shape
    nrow = nrow or math.ceil(math.sqrt(n))
    rows = math.ceil(n / nrow)
    grid = torch.ones(c, rows * (h + pad) + pad, nrow * (w + pad) + pad, dtype=images.dtype)
    for i in range(n):
        r, col = divmod(i, nrow)
        grid[:, pad + r * (h + pad):pad + r * (h + pad) + h, pad + col * (w + pad):pad + col * (w + pad) + w] = images[i]
    return grid


def to_pil(image: torch.Tensor):
    """[3, H, W] in [0, 1] → ``PIL.Image``."""
    from PIL import Image

    array = (image.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    return Image.fromarray(array)
