"""``LatentDiffusionModule``: the ldm stage's task (batch → latents, text → noise-prediction loss).

Only the U-Net is a registered child. The frozen text encoder and VAE are held by
:class:`dalle3.dist.zero.Unpartitioned`, so DeepSpeed ZeRO-3 never partitions them and
checkpoints hold only what trains (the parts are reloaded from their folders).
"""
from __future__ import annotations

import math
from functools import partial
from typing import Any, Optional, Sequence

import lightning.pytorch as pl
import torch

from dalle3.dist.zero import Unpartitioned
from dalle3.ldm import losses
from dalle3.ldm.model import LDMParts, build_sampler, unet_text_inputs
from dalle3.ldm.text import encode_prompts


class LatentDiffusionModule(pl.LightningModule):
    """Text-to-image diffusion in latent space.

    Batches carry either ``latent`` (precomputed VAE moments [B, 2C, h, w]) or ``image``
    ([B, 3, H, W] in [0, 1], encoded on the fly), plus ``caption`` (list of str) and,
    from latent shards with stored text embeddings, ``context`` ([B, L, D]).

    Args:
        cfg: the ``ldm`` block (``train``, ``noise``, ``sample``).
        parts: from :func:`dalle3.ldm.model.build_parts`.
    """

    def __init__(self, cfg: Any, parts: LDMParts):
        super().__init__()
        self.cfg = cfg
        self.unet = parts.unet
        self.noise_scheduler = parts.noise_scheduler
        self.tokenizer = parts.tokenizer
        self.text_encoder = Unpartitioned(parts.text_encoder)
        self.vae = Unpartitioned(parts.vae)
        self.scaling_factor = float(parts.vae.config.scaling_factor)
        if cfg.train.gradient_checkpointing:
            self.unet.enable_gradient_checkpointing()
        self.losses: list[float] = []
        "Training loss of every step (this rank), for summaries and tests."
        self._empty_context: Optional[torch.Tensor] = None

    # -- frozen parts follow the trainer's device ---------------------------------
    def on_fit_start(self) -> None:
        self.text_encoder.to(self.device)
        self.vae.to(self.device)

    on_validation_start = on_predict_start = on_fit_start

    # -- batch → model inputs --------------------------------------------------------
    @torch.no_grad()
    def latents_of(self, batch: dict) -> torch.Tensor:
        """Scaled latents: sampled from precomputed moments, or encoded from images now."""
        if "latent" in batch:
            mean, logvar = batch["latent"].float().chunk(2, dim=1)
            std = torch.exp(0.5 * logvar.clamp(-30.0, 20.0))
            z = mean + std * torch.randn_like(mean)
        else:
            vae = self.vae.module
            z = vae.encode(batch["image"].to(vae.dtype) * 2 - 1).latent_dist.sample().float()
        return z * self.scaling_factor

    @torch.no_grad()
    def context_of(self, batch: dict, dropout: float = 0.0) -> torch.Tensor:
        """Text features of ``batch["caption"]``; with probability ``dropout`` the empty prompt's (for guidance).

        Stored embeddings (``batch["context"]``, from latent shards written with
        ``ldm.latents.precompute_text``) are used as they are, so the encoder runs only
        once, for the empty prompt. Both paths draw the dropout mask identically.
        """
        captions = list(batch["caption"])
        drop = torch.rand(len(captions)) < dropout if dropout > 0 else torch.zeros(len(captions), dtype=torch.bool)
        if "context" not in batch:
            captions = ["" if d else c for c, d in zip(captions, drop.tolist())]
            return encode_prompts(self.tokenizer, self.text_encoder.module, captions)
        context = batch["context"].float()
        if drop.any():
            empty = self.empty_context().to(context.device)
            context = torch.where(drop.to(context.device).view(-1, 1, 1), empty, context)
        return context

    def empty_context(self) -> torch.Tensor:
        """The empty prompt's features [1, L, D], encoded once."""
        if self._empty_context is None:
            self._empty_context = encode_prompts(self.tokenizer, self.text_encoder.module, [""])
        return self._empty_context

    def diffusion_loss(self, batch: dict, dropout: float, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """The training objective of one batch (noise, timesteps and target per ``cfg.noise``)."""
        latents = self.latents_of(batch)
        context = self.context_of(batch, dropout)
        t_cfg = self.cfg.train
        noise = losses.sample_noise(latents, t_cfg.offset_noise, generator)
        n_steps = self.noise_scheduler.config.num_train_timesteps
        timesteps = torch.randint(0, n_steps, (latents.shape[0],), generator=generator).to(latents.device)
        noisy = self.noise_scheduler.add_noise(latents, noise, timesteps)
        dtype = next(self.unet.parameters()).dtype  # bf16/fp16 under DeepSpeed's "true" precisions
        pred = self.unet(noisy.to(dtype), timesteps, **unet_text_inputs(self.unet, context.to(dtype))).sample
        target = losses.diffusion_target(self.noise_scheduler, latents, noise, timesteps)
        weights = (losses.min_snr_weights(self.noise_scheduler, timesteps, t_cfg.min_snr_gamma)
                   if t_cfg.min_snr_gamma else None)
        return losses.diffusion_loss(pred, target, weights)

    # -- Lightning -------------------------------------------------------------------
    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss = self.diffusion_loss(batch, self.cfg.train.caption_dropout)
        self.losses.append(float(loss.detach()))
        self.log("train/loss", loss, prog_bar=True, batch_size=len(batch["caption"]))
        return loss

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        # fixed noise and timesteps per batch index: val/loss is comparable across evaluations
        generator = torch.Generator().manual_seed(1000 + batch_idx)
        loss = self.diffusion_loss(batch, 0.0, generator)
        self.log("val/loss", loss, sync_dist=True, batch_size=len(batch["caption"]))

    def configure_optimizers(self):
        t = self.cfg.train
        opt = torch.optim.AdamW([p for p in self.unet.parameters() if p.requires_grad], lr=t.lr,
                                weight_decay=t.weight_decay)
        total = int(self.trainer.max_steps) if self._trainer is not None else -1
        sched = torch.optim.lr_scheduler.LambdaLR(opt, partial(lr_factor, warmup=int(t.warmup_steps), total=total,
                                                               schedule=t.lr_schedule, floor=float(t.min_lr_ratio)))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    # -- sampling (the sample-image callback, generate) ---------------------------------
    def sampling_unet(self, weights: dict) -> torch.nn.Module:
        """A plain, unpartitioned U-Net of the same architecture holding ``weights``, in eval mode."""
        unet = type(self.unet).from_config(self.unet.config)
        state = unet.state_dict()
        state.update({k: v for k, v in weights.items() if k in state})
        unet.load_state_dict(state)
        return unet.to(self.vae.module.device).eval()

    @torch.no_grad()
    def sample(self, unet: torch.nn.Module, prompts: Sequence[str], guidance: float = 3.0, steps: int = 25,
               seed: int = 0) -> torch.Tensor:
        """Images in [0, 1] for ``prompts`` from ``unet`` (see :func:`dalle3.ldm.sample.generate`)."""
        from dalle3.ldm.sample import generate

        return generate(unet, self.vae.module, self.tokenizer, self.text_encoder.module,
                        build_sampler(self.cfg.noise), prompts, guidance=guidance, steps=steps, seed=seed)


def lr_factor(step: int, warmup: int, total: int, schedule: str = "constant", floor: float = 0.0) -> float:
    """Learning-rate multiplier of optimizer step ``step``: linear warmup, then constant or a cosine to ``floor`` at ``total``."""
    warm = min(1.0, (step + 1) / max(warmup, 1))
    if schedule == "constant" or total <= warmup:
        return warm
    progress = min(1.0, max(0.0, (step - warmup) / max(total - warmup, 1)))
    return warm * (floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress)))


def loss_fell(history: Sequence[float], window: int = 10) -> float:
    """Mean of the last ``window`` losses ÷ mean of the first ``window`` (< 1: it fell)."""
    window = max(1, min(window, len(history) // 2))
    first = sum(history[:window]) / window
    last = sum(history[-window:]) / window
    return last / first if first > 0 and math.isfinite(first) else float("nan")
