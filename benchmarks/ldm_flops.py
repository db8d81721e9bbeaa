"""FLOPs per training image of a Stable-Diffusion-sized U-Net at the paper's 256 px.

Counts forward + backward of diffusers' ``UNet2DConditionModel`` with its default
(SD 1.x) config on 32x32x4 latents and a 77-token, 768-wide text context, with
``torch.utils.flop_counter``; optionally the frozen text encoder's forward too
(T5-XXL is ~4.7B parameters: ~2 x params x tokens FLOPs). Prints a cost estimate for
500k steps at batch 2048 and a JSON line.

    python benchmarks/ldm_flops.py [--batch 2]
"""
from __future__ import annotations

import argparse
import json

import torch
from diffusers import UNet2DConditionModel
from torch.utils.flop_counter import FlopCounterMode


def unet_train_flops(batch: int, latent: int = 32, ctx_len: int = 77) -> tuple[float, int]:
    unet = UNet2DConditionModel()  # diffusers' defaults are SD 1.x: (320, 640, 1280, 1280), ctx 768
    params = sum(p.numel() for p in unet.parameters())
    x = torch.randn(batch, 4, latent, latent)
    ctx = torch.randn(batch, ctx_len, unet.config.cross_attention_dim)
    t = torch.randint(0, 1000, (batch,))
    with FlopCounterMode(display=False) as counter:
        unet(x, t, ctx).sample.square().mean().backward()
    return counter.get_total_flops() / batch, params


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=2)
    args = ap.parse_args()
    per_image, params = unet_train_flops(args.batch)
    t5_xxl_fwd = 2 * 4.76e9 * 77  # frozen encoder forward only (no backward), per image
    steps, batch = 500_000, 2048
    total_unet = per_image * steps * batch
    total_t5 = t5_xxl_fwd * steps * batch
    print(f"U-Net params: {params / 1e6:.0f}M; train FLOPs/image (fwd+bwd, 32x32x4 latents): {per_image / 1e9:.1f} G")
    print(f"T5-XXL forward/image (77 tokens, 2*params*tokens): {t5_xxl_fwd / 1e9:.0f} G")
    print(f"500k steps x 2048: U-Net {total_unet:.2e} FLOPs, + T5 {total_t5:.2e} FLOPs")
    for name, peak, util in (("H100 bf16", 989e12, 0.4), ("A100 bf16", 312e12, 0.4)):
        for label, total in (("latents+text embeds precomputed", total_unet), ("T5 on the fly", total_unet + total_t5)):
            print(f"  {name} at {util:.0%} MFU, {label}: {total / (peak * util) / 3600:,.0f} GPU-hours")
    print(json.dumps({"benchmark": "ldm_flops", "unet_params_m": round(params / 1e6), "train_gflops_per_image":
                      round(per_image / 1e9, 1), "t5xxl_gflops_per_image": round(t5_xxl_fwd / 1e9),
                      "total_flops_unet": float(f"{total_unet:.3e}")}))


if __name__ == "__main__":
    main()
