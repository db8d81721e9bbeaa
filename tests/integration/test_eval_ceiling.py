"""The ceiling of the prompt-following checks: real val images through the generated images' path
(64 px -> ldm.image_size with the data layer's resize, then a trained tiny VAE's round trip)."""
from __future__ import annotations

import math
import os
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from torchvision.transforms.functional import pil_to_tensor

from dalle3.config import compose
from dalle3.config.schema import WorldConfig
from dalle3.eval.checks import CHECKS, ceiling_images, check_images, pass_rates, resize_images
from dalle3.ldm.losses import psnr
from dalle3.world.render import render
from dalle3.world.writer import make_sample

pytestmark = pytest.mark.slow

VAE_STEPS, VAE_BATCH, VAE_LR = 16000, 8, 1e-3
"""The cheapest recipe measured to hold the ceiling above 0.95 (benchmarks/RESULTS.md, session 7;
~19 min on one CPU thread): the vae stage's 600 steps at batch 64 reach 27.5 dB and a DSC exact
ceiling of 0.44, 8000 steps at batch 8 35.5 dB and 0.94, these 16000 steps 39.4 dB and 0.97. Batch 8
learns more per second than 64; the cosine decay to 0 keeps late steps from undoing early ones
(constant 2e-3 at batch 32 fell from 24 to 20 dB between steps 800 and 1600)."""
VAE_ENV = "DALLE3_TINY_VAE"
"""A saved tiny-VAE folder (``save_pretrained``) to check instead of training one here."""
FIXTURE_VAE = Path(__file__).resolve().parents[1] / "fixtures" / "tiny_vae_16k"
"""The VAE this recipe trained (safetensors), checked by default."""
LONG_ENV = "DALLE3_LONG_TESTS"
"""``1``: also run the tests that train for many minutes (here: the 16,000-step VAE)."""


def _renders(split: str, n: int) -> tuple[list, torch.Tensor]:
    samples = [make_sample(0, split, i, WorldConfig()) for i in range(n)]
    return samples, torch.stack([pil_to_tensor(render(s, 64)).float() / 255 for s, _ in samples])


@pytest.fixture(scope="module")
def tiny_vae():
    """The tiny VAE of conf/ldm/tiny.yaml, trained by the vae stage's module and loss on 2048 train
    renders (or loaded from ``$DALLE3_TINY_VAE``)."""
    cfg = compose(["stage=vae"])
    OmegaConf.resolve(cfg)
    if os.environ.get(LONG_ENV) != "1":
        from diffusers import AutoencoderKL

        # The recipe below, trained once (tests/fixtures/tiny_vae_16k/README.md): the default suite
        # checks the ceiling in seconds; DALLE3_LONG_TESTS=1 trains it again here (~19 min).
        yield AutoencoderKL.from_pretrained(os.environ.get(VAE_ENV) or str(FIXTURE_VAE)).eval(), cfg.ldm.image_size
        return
    from helpers.vae import train_vae

    before = torch.get_num_threads()
    torch.set_num_threads(1)  # 32 px convs: a second thread on the shared CPU costs more than it gives
    vae, _ = train_vae(VAE_STEPS, VAE_BATCH, VAE_LR, "cos")
    yield vae, cfg.ldm.image_size
    torch.set_num_threads(before)


def test_the_ceiling_after_resize_and_vae_is_at_least_095_for_every_check(tiny_vae):
    vae, size = tiny_vae
    samples, val = _renders("val", 256)
    real = ceiling_images(val, vae, size)
    assert real.shape == (256, 3, size, size) and 0 <= float(real.min()) and float(real.max()) <= 1
    small = resize_images(val, size)
    assert float(psnr(real, small)) > 30
    for kind in ("dsc", "ssc"):
        rates = pass_rates(check_images(real, [c[kind] for _, c in samples]))
        for c in CHECKS:
            assert math.isnan(rates[c]) or rates[c] >= 0.95, (kind, c, rates)
    # Alt-text states wrong counts and places on purpose, so its own image fails those: the VAE
    # round trip must keep the verdicts of the 64 px render, whichever they are.
    with_alt = [i for i, (_, c) in enumerate(samples) if c["alt"].strip()]
    texts = [samples[i][1]["alt"] for i in with_alt]
    exact = check_images(val[with_alt], texts)
    through = check_images(real[with_alt], texts)
    for c in CHECKS:
        pairs = [(a[c], b[c]) for a, b in zip(exact, through) if a[c] is not None]
        if pairs:
            assert sum(a == b for a, b in pairs) / len(pairs) >= 0.95, (c, pairs)
