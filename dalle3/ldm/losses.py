"""Loss math of the vae and ldm stages: pure functions of tensors and a noise schedule."""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F


def sample_noise(latents: torch.Tensor, offset: float = 0.0,
                 generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Gaussian noise like ``latents``, plus optional offset noise.

    Offset noise (Guttenberg 2023, "Diffusion with offset noise") adds a per-sample,
    per-channel constant, so the model also learns to shift an image's mean; plain
    noise leaves the lowest frequency almost untouched and samples stay mid-grey.
    """
    noise = torch.randn(latents.shape, generator=generator, device=latents.device, dtype=latents.dtype)
    if offset > 0:
        shift = torch.randn((latents.shape[0], latents.shape[1], 1, 1), generator=generator,
                            device=latents.device, dtype=latents.dtype)
        noise = noise + offset * shift
    return noise


def diffusion_target(scheduler, latents: torch.Tensor, noise: torch.Tensor,
                     timesteps: torch.Tensor) -> torch.Tensor:
    """What the U-Net must predict: the noise (``epsilon``) or ``v`` (Salimans & Ho 2022)."""
    kind = scheduler.config.prediction_type
    if kind == "epsilon":
        return noise
    if kind == "v_prediction":
        return scheduler.get_velocity(latents, noise, timesteps)
    raise ValueError(f"prediction_type {kind!r}; allowed: epsilon | v_prediction")


def snr(scheduler, timesteps: torch.Tensor) -> torch.Tensor:
    """Signal-to-noise ratio alpha_bar / (1 - alpha_bar) at each timestep."""
    alphas_cumprod = scheduler.alphas_cumprod.to(device=timesteps.device, dtype=torch.float32)[timesteps]
    return alphas_cumprod / (1.0 - alphas_cumprod)


def min_snr_weights(scheduler, timesteps: torch.Tensor, gamma: float) -> torch.Tensor:
    """Per-sample loss weights of Min-SNR-gamma (Hang et al. 2023, arXiv:2303.09556).

    For an epsilon target the weight is min(SNR, gamma) / SNR; for a v target it is
    min(SNR, gamma) / (SNR + 1), because the v-loss already carries a factor SNR + 1
    relative to the x0-loss (the same conversion diffusers' training scripts use).
    """
    s = snr(scheduler, timesteps)
    clipped = torch.clamp(s, max=gamma)
    if scheduler.config.prediction_type == "v_prediction":
        return clipped / (s + 1.0)
    return clipped / s


def diffusion_loss(pred: torch.Tensor, target: torch.Tensor,
                   weights: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Mean squared error in fp32, optionally weighted per sample."""
    per_sample = F.mse_loss(pred.float(), target.float(), reduction="none").mean(dim=(1, 2, 3))
    if weights is not None:
        per_sample = per_sample * weights
    return per_sample.mean()


def vae_loss(recon: torch.Tensor, image: torch.Tensor, kl: torch.Tensor, kl_weight: float) -> dict:
    """Reconstruction (L1 + MSE, on [-1, 1] images) plus a small KL; returns named terms.

    L1 keeps edges and flat colours crisp on the shapes world; MSE is what PSNR reads.
    """
    l1 = F.l1_loss(recon.float(), image.float())
    mse = F.mse_loss(recon.float(), image.float())
    kl = kl.float().mean()
    return {"loss": l1 + mse + kl_weight * kl, "l1": l1, "mse": mse, "kl": kl}


def psnr(recon01: torch.Tensor, image01: torch.Tensor) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB of images in [0, 1] (mean over the batch)."""
    mse = F.mse_loss(recon01.float().clamp(0, 1), image01.float(), reduction="none").mean(dim=(1, 2, 3))
    return (10.0 * torch.log10(1.0 / mse.clamp_min(1e-10))).mean()
