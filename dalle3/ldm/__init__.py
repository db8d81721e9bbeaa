"""Latent diffusion (issue #5): VAE, latent precompute, text-to-image U-Net, sampling, export.

File roles: ``model.py`` (pure modules and builders), ``losses.py``, ``sample.py`` (pure
sampling), ``vae.py`` / ``module.py`` (LightningModules), ``data.py`` (latent shards),
``train.py`` / ``precompute.py`` / ``generate.py`` (the stages), ``export.py`` (diffusers).
"""
