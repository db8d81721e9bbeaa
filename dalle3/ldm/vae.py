"""``VAEModule``: trains the tiny ``AutoencoderKL`` on the world's images (the vae stage)."""
from __future__ import annotations

import math
from typing import Any

import lightning.pytorch as pl
import torch

from dalle3.ldm.losses import psnr, vae_loss
from dalle3.ldm.model import build_vae


class VAEModule(pl.LightningModule):
    """Reconstruction + small KL on images in [-1, 1]; logs ``train/loss``, ``val/psnr``.

    Args:
        cfg: the ``ldm`` block (uses ``vae``, ``vae_train`` and ``image_size``).
    """

    def __init__(self, cfg: Any):
        super().__init__()
        self.cfg = cfg
        self.vae = build_vae(cfg.vae, cfg.image_size)
        self.losses: list[float] = []
        "Training loss of every step (this rank), for summaries and tests."

    def forward(self, images01: torch.Tensor, sample: bool = True) -> dict:
        x = images01 * 2 - 1
        posterior = self.vae.encode(x).latent_dist
        z = posterior.sample() if sample else posterior.mode()
        recon = self.vae.decode(z).sample
        return {"recon": recon, "target": x, "kl": posterior.kl(), "latents": z}

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        out = self(batch["image"])
        terms = vae_loss(out["recon"], out["target"], out["kl"], self.cfg.vae_train.kl_weight)
        self.losses.append(float(terms["loss"].detach()))
        self.log_dict({f"train/{k}": v for k, v in terms.items()}, prog_bar=False, batch_size=len(batch["image"]))
        return terms["loss"]

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        out = self(batch["image"], sample=False)
        recon01 = out["recon"] / 2 + 0.5
        self.log("val/psnr", psnr(recon01, batch["image"]), sync_dist=True, batch_size=len(batch["image"]))

    def configure_optimizers(self):
        t = self.cfg.vae_train
        opt = torch.optim.AdamW(self.vae.parameters(), lr=t.lr, weight_decay=t.weight_decay)
        if t.schedule == "constant":
            return opt
        total = max(1, int(self.trainer.max_steps))
        decay = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, total) / total)))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": decay, "interval": "step"}}


@torch.no_grad()
def latent_scaling_factor(vae: torch.nn.Module, batches: Any, max_batches: int = 8) -> float:
    """1 / std of the VAE's latents over some batches (how Stable Diffusion's 0.18215 was chosen).

    Unit-variance latents let the diffusion schedule, designed for unit-variance data,
    be used unchanged.
    """
    zs = []
    for i, batch in enumerate(batches):
        if i >= max_batches:
            break
        zs.append(vae.encode(batch["image"].to(vae.device) * 2 - 1).latent_dist.mode().float().cpu())
    return float(1.0 / torch.cat(zs).std())
