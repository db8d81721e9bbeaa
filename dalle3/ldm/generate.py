"""The generate stage (``dalle3-generate``): PNGs and a grid from an ldm run's EMA weights.

``dalle3-generate prompt="a red circle" n=4 guidance=5 steps=25 seed=0`` reads the
top-level keys when the root config has them and ``ldm.generate.*`` otherwise. It also
exports the run as a diffusers ``StableDiffusionPipeline`` folder (``ldm.generate.export_dir``).
"""
from __future__ import annotations

import os
import re
import time
from typing import Any

import torch
from omegaconf import OmegaConf

from dalle3.ldm.validate import validate_ldm
from dalle3.utils.logging import get_logger

log = get_logger(__name__)


def generate_settings(cfg: Any) -> dict:
    """``prompt, n, guidance, steps, seed``: top-level keys win over ``ldm.generate``."""
    g = cfg.ldm.generate
    out = {}
    for key in ("prompt", "n", "guidance", "steps", "seed"):
        top = OmegaConf.select(cfg, key, default=None) if key != "seed" else None
        out[key] = top if top is not None else getattr(g, key)
    return out


def checkpoint_path(cfg: Any) -> str:
    """The checkpoint to sample from: ``ldm.generate.checkpoint`` or the run's ``last.ckpt``."""
    g = cfg.ldm.generate
    path = g.checkpoint or os.path.join(g.ckpt_dir, "checkpoints", "last.ckpt")
    if not os.path.exists(path):
        from dalle3.config.validate import ConfigError

        raise ConfigError(f"ldm.generate.checkpoint={path!r} does not exist; allowed: a .ckpt file or DeepSpeed "
                          "checkpoint folder of an ldm run (train one with `dalle3-train stage=ldm`)")
    return path


def load_trained_parts(cfg: Any, use_ema: bool = True):
    """The ldm run's parts with the U-Net holding its checkpoint's (EMA) weights, in eval mode."""
    from dalle3.dist.zero import load_checkpoint, module_weights
    from dalle3.ldm.model import build_parts

    path = checkpoint_path(cfg)
    ckpt = load_checkpoint(path)
    parts = build_parts(cfg.ldm)
    state = parts.unet.state_dict()
    state.update(module_weights(ckpt, "unet.", "EMA" if use_ema else None))
    parts.unet.load_state_dict(state)
    parts.unet.eval()
    log.info("sampling from %s (step %s, %s weights)", path, ckpt.get("global_step"),
             "EMA" if use_ema and "EMA" in ckpt.get("callbacks", {}) else "raw")
    return parts, ckpt


def slug(text: str, max_len: int = 40) -> str:
    """A file-name-safe form of a prompt."""
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")[:max_len] or "empty"


def run(cfg: Any) -> dict:
    """Write ``<run_dir>/<prompt>_<i>.png`` and ``grid.png``; export the pipeline; return the paths."""
    from dalle3.ldm.export import export_pipeline
    from dalle3.ldm.model import build_sampler
    from dalle3.ldm.sample import generate, image_grid, to_pil

    validate_ldm(cfg.ldm)
    s = generate_settings(cfg)
    t0 = time.time()
    parts, ckpt = load_trained_parts(cfg, cfg.ldm.generate.use_ema)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    for m in (parts.unet, parts.vae, parts.text_encoder):
        m.to(device)
    images = generate(parts.unet, parts.vae, parts.tokenizer, parts.text_encoder, build_sampler(cfg.ldm.noise),
                      [s["prompt"]] * int(s["n"]), guidance=float(s["guidance"]), steps=int(s["steps"]),
                      seed=int(s["seed"])).cpu()
    out_dir = cfg.paths.run_dir
    os.makedirs(out_dir, exist_ok=True)
    files = []
    for i, image in enumerate(images):
        files.append(os.path.join(out_dir, f"{slug(s['prompt'])}_{i}.png"))
        to_pil(image).save(files[-1])
    grid = os.path.join(out_dir, "grid.png")
    to_pil(image_grid(images)).save(grid)
    summary = {"images": files, "grid": grid, "step": ckpt.get("global_step"), **s}
    if cfg.ldm.generate.export_dir:
        summary["pipeline"] = export_pipeline(cfg.ldm.generate.export_dir, unet=parts.unet.cpu(),
                                              vae=parts.vae.cpu(), text_encoder=parts.text_encoder.cpu(),
                                              tokenizer=parts.tokenizer, noise_cfg=cfg.ldm.noise)
    summary["seconds"] = round(time.time() - t0, 1)
    return summary
