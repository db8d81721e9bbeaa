"""Latent diffusion (issue #5): VAE, latent precompute, text-to-image U-Net, sampling, export.

File roles: ``model.py`` (pure modules and builders; ``open_clip_text.py`` converts an
open_clip text tower for it), ``losses.py``, ``sample.py`` (pure
sampling), ``vae.py`` / ``module.py`` (LightningModules), ``data.py`` (latent shards),
``train.py`` / ``precompute.py`` / ``generate.py`` (the stages), ``export.py`` (diffusers).
"""
