"""Latent diffusion: VAE, latent precompute, text-to-image U-Net, sampling, export.

File roles: ``model.py`` (pure modules and builders; ``open_clip_text.py`` converts an
open_clip text tower for it), ``losses.py``, ``sample.py`` (pure
sampling), ``vae.py`` / ``module.py`` (LightningModules), ``data.py`` (latent shards),
``stage.py`` (the entries of stages vae, latents, ldm and generate), ``latents.py`` /
``generate.py`` (their work), ``sample_images.py`` (the sample-image callback),
``export.py`` (diffusers).
"""
