"""The generate stage's parts (``dalle3-generate``): an ldm run's checkpoint, loaded for sampling.

``dalle3-generate prompt="a red circle" n=4 guidance=5 steps=25 seed=0`` sets
``ldm.generate.*`` (the command's short names, :data:`dalle3.cli.GENERATE_ALIASES`). The
stage (:func:`dalle3.ldm.stage.run_generate`) also exports the run as a diffusers
``StableDiffusionPipeline`` folder (``ldm.generate.export_dir``).
"""
from __future__ import annotations

import os
import re
from typing import Any, Optional, Sequence

from dalle3.utils.logging import get_logger

log = get_logger(__name__)


def generate_settings(cfg: Any) -> dict:
    """``prompt, n, guidance, steps, seed`` of ``ldm.generate``."""
    g = cfg.ldm.generate
    return {"prompt": g.prompt, "n": g.n, "guidance": g.guidance, "steps": g.steps, "seed": g.seed}


def checkpoint_path(cfg: Any) -> str:
    """The checkpoint to sample from: ``ldm.generate.checkpoint`` or the run's ``last.ckpt``."""
    g = cfg.ldm.generate
    path = g.checkpoint or os.path.join(g.ckpt_dir, "checkpoints", "last.ckpt")
    if not os.path.exists(path):
        from dalle3.config.validate import ConfigError

        raise ConfigError(f"ldm.generate.checkpoint={path!r} does not exist; allowed: a .ckpt file or DeepSpeed "
                          "checkpoint folder of an ldm run (train one with `dalle3-train stage=ldm`)")
    return path


def default_device() -> str:
    """Where sampling runs: the GPU when one is visible (no flag needed), else the CPU."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def load_trained_parts(cfg: Any, use_ema: bool = True, device: Optional[str] = None):
    """The ldm run's parts with the U-Net holding its checkpoint's (EMA) weights, in eval mode, on ``device``
    (default :func:`default_device`). The one loading path of ``dalle3-generate`` and ``dalle3-eval``."""
    from dalle3.dist.zero import load_checkpoint, module_weights
    from dalle3.ldm.model import build_parts

    path = checkpoint_path(cfg)
    ckpt = load_checkpoint(path)
    parts = build_parts(cfg.ldm)
    state = parts.unet.state_dict()
    state.update(module_weights(ckpt, "unet.", "EMA" if use_ema else None))
    parts.unet.load_state_dict(state)
    parts.unet.eval()
    device = device or default_device()
    for module in (parts.unet, parts.vae, parts.text_encoder):
        module.to(device)
    log.info("sampling from %s (step %s, %s weights) on %s", path, ckpt.get("global_step"),
             "EMA" if use_ema and "EMA" in ckpt.get("callbacks", {}) else "raw", device)
    return parts, ckpt


def generate_batched(parts: Any, sampler: Any, prompts: Sequence[str], *, guidance: float, steps: int, seed: int,
                     batch_size: int):
    """Images [N, 3, H, W] in [0, 1] on the CPU for ``prompts``, ``batch_size`` at a time.

    Batch ``i`` (starting at prompt ``i``) draws its noise from seed ``seed + i``, so two runs
    given the same prompts, seed and batch size start every image from the same noise.
    """
    import torch

    from dalle3.ldm.sample import generate

    chunks = [generate(parts.unet, parts.vae, parts.tokenizer, parts.text_encoder, sampler,
                       list(prompts[i:i + batch_size]), guidance=guidance, steps=steps, seed=seed + i).cpu()
              for i in range(0, len(prompts), batch_size)]
    return torch.cat(chunks) if chunks else torch.empty(0)


def slug(text: str, max_len: int = 40) -> str:
    """A file-name-safe form of a prompt."""
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")[:max_len] or "empty"
