"""Export the trained parts as a folder in diffusers' format (``model_index.json`` + parts)."""
from __future__ import annotations

from typing import Any

from torch import nn

from dalle3.utils.io import atomic_path


def export_pipeline(folder: str, *, unet: nn.Module, vae: nn.Module, text_encoder: nn.Module, tokenizer: Any,
                    noise_cfg: Any) -> str:
    """Save a ``StableDiffusionPipeline`` that diffusers loads with none of our code.

    Args:
        folder: output folder (replaced atomically: written beside it, then renamed).
        unet, vae, text_encoder, tokenizer: the parts (pass the EMA U-Net for sampling).
        noise_cfg: a ``NoiseConfig``; the pipeline gets a DDIM scheduler with its betas
            and prediction type.

    Returns:
        The folder.
    """
    from diffusers import StableDiffusionPipeline

    from dalle3.ldm.model import build_sampler, takes_pooled_text

    if takes_pooled_text(unet):
        from dalle3.utils.logging import get_logger

        get_logger("dalle3.ldm").warning(
            "ldm.unet.pooled_text: the exported StableDiffusionPipeline's U-Net needs class_labels (the prompt "
            "embeddings' mean over tokens) in every call; dalle3-generate passes them, a plain pipeline call does not")

    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                   scheduler=build_sampler(noise_cfg, "ddim"), safety_checker=None,
                                   feature_extractor=None, requires_safety_checker=False)
    with atomic_path(folder.rstrip("/")) as tmp:  # no trailing slash: the tmp folder goes beside it
        pipe.save_pretrained(tmp, safe_serialization=True)
    return folder
