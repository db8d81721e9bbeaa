"""The tiny VAE recipe that holds the exact checks' ceiling above 0.95 (benchmarks/RESULTS.md, session 7).

Used by the ceiling test (``DALLE3_LONG_TESTS=1``) and by ``benchmarks/eval_ceiling.py``; the VAE in
``tests/fixtures/tiny_vae_16k`` was trained by it with 16,000 steps at batch 8, lr 1e-3, cosine.
"""
from __future__ import annotations

import math

import torch


def train_vae(steps: int, batch: int, lr: float, schedule: str, seed: int = 0):
    """The tiny VAE trained on 2048 train renders at ``ldm.image_size``; returns (vae, psnr on 256 val)."""
    from omegaconf import OmegaConf
    from torchvision.transforms.functional import pil_to_tensor

    from dalle3.config import compose
    from dalle3.config.schema import WorldConfig
    from dalle3.eval.checks import resize_images
    from dalle3.ldm.losses import psnr, vae_loss
    from dalle3.ldm.vae import VAEModule
    from dalle3.world.render import render
    from dalle3.world.writer import make_sample

    cfg = compose(["stage=vae"])
    OmegaConf.resolve(cfg)
    renders = lambda split, n: torch.stack([pil_to_tensor(render(make_sample(seed, split, i, WorldConfig())[0], 64))
                                            .float() / 255 for i in range(n)])
    train = resize_images(renders("train", 2048), cfg.ldm.image_size)
    torch.manual_seed(seed)
    module = VAEModule(cfg.ldm)
    opt = torch.optim.AdamW(module.vae.parameters(), lr=lr, weight_decay=cfg.ldm.vae_train.weight_decay)
    decay = (lambda s: 0.5 * (1 + math.cos(math.pi * s / steps))) if schedule == "cos" else (lambda s: 1.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, decay)
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        out = module(train[torch.randint(len(train), (batch,), generator=g)])
        loss = vae_loss(out["recon"], out["target"], out["kl"], cfg.ldm.vae_train.kl_weight)["loss"]
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(module.vae.parameters(), cfg.trainer.gradient_clip_val)
        opt.step()
        sched.step()
    vae = module.vae.eval()
    val = resize_images(renders("val", 256), cfg.ldm.image_size)
    with torch.no_grad():
        recon = vae.decode(vae.encode(val * 2 - 1).latent_dist.mode()).sample / 2 + 0.5
    return vae, float(psnr(recon, val))
