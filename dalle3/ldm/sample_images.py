"""Log sample images for fixed prompts every N steps (TensorBoard and PNG files).

Samples come from the EMA weights when an :class:`~dalle3.callbacks.ema.EMA` callback
is present (what users will sample with), else from the raw weights. Sampling runs on
rank zero only, on a plain copy of the U-Net, so it never enters a ZeRO-3 collective
on one rank alone; reading raw ZeRO-3 weights is the one collective all ranks join.
The noise seed is fixed, so grids from different steps are directly comparable.
"""
from __future__ import annotations

import os
from typing import Any, Sequence

import lightning.pytorch as pl
import torch

from dalle3.callbacks.ema import EMA
from dalle3.dist.zero import full_state_dict


class SampleImages(pl.Callback):
    """Every ``every_n_steps`` optimizer steps, write ``<run_dir>/samples/step_XXXXXXX.png``.

    The LightningModule must provide ``sampling_unet(weights)`` (a plain U-Net with the
    given weights) and ``sample(unet, prompts, guidance, steps, seed)`` (images in [0, 1]).

    Args:
        prompts: the fixed prompts (one image each, in a grid).
        every_n_steps: period (0: never).
        guidance, steps, seed: sampler settings.
        out_dir: folder for the PNGs (default ``<trainer.default_root_dir>/samples``).
    """

    def __init__(self, prompts: Sequence[str], every_n_steps: int, guidance: float = 3.0, steps: int = 25,
                 seed: int = 0, out_dir: str | None = None):
        self.prompts, self.every_n_steps = list(prompts), every_n_steps
        self.guidance, self.steps, self.seed, self.out_dir = guidance, steps, seed, out_dir
        self.written: list[str] = []
        self._last = -1
        "The step of the last grid (with gradient accumulation several batches end on one step)."

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any,
                           batch: Any, batch_idx: int) -> None:
        step = trainer.global_step
        if not self.every_n_steps or step % self.every_n_steps or self._last == step:
            return
        self._last = step
        ema = next((c for c in trainer.callbacks if isinstance(c, EMA)), None)
        # every rank reaches this line: gathering raw ZeRO-3 weights is a collective
        weights = ema.weights() if ema is not None else full_state_dict(pl_module.unet)
        if trainer.is_global_zero:
            self._write(trainer, pl_module, weights, step)

    def _write(self, trainer: pl.Trainer, pl_module: pl.LightningModule, weights: dict, step: int) -> None:
        from dalle3.ldm.sample import image_grid, to_pil

        unet = pl_module.sampling_unet(weights)
        images = pl_module.sample(unet, self.prompts, guidance=self.guidance, steps=self.steps, seed=self.seed)
        grid = image_grid(images.cpu(), nrow=len(self.prompts))
        out_dir = self.out_dir or os.path.join(trainer.default_root_dir, "samples")
        os.makedirs(out_dir, exist_ok=True)
        path = os.path.join(out_dir, f"step_{step:07d}.png")
        to_pil(grid).save(path)
        self.written.append(path)
        experiment = getattr(trainer.logger, "experiment", None)  # any logger, or none: not ours to type
        if experiment is not None and hasattr(experiment, "add_image"):
            experiment.add_image("samples", grid, global_step=step)
            experiment.add_text("samples/prompts", " | ".join(self.prompts), global_step=step)
        del unet
        torch.cuda.empty_cache() if torch.cuda.is_available() else None
