"""Callback: at each validation, caption fixed validation images and log them beside the truth.

The images are the first ``n`` of rank zero's first validation batch, kept from the first
validation on, so tables from different steps compare the same images. The whole first
batch is also scored against its scene graphs (``val/recall_<category>``,
``val/false_rate_<category>``). Output: TensorBoard text ``val/captions`` and
``<run_dir>/val_captions/step_XXXXXXX.md``.

Under ZeRO-3 every rank joins the weight gather (a collective); captioning runs on rank
zero only, on a plain copy.
"""
from __future__ import annotations

import os
from typing import Any, Optional

import lightning.pytorch as pl
import torch

from dalle3.captioner.evaluate import evaluate_captions, flat_metrics
from dalle3.captioner.generate import CaptionGenerator
from dalle3.captioner.model import plain_model
from dalle3.config.captioner import CaptionerDecodeConfig
from dalle3.dist.zero import full_state_dict, is_partitioned


def captions_table(generated: list[str], truth: list[str]) -> str:
    """Markdown table of generated captions beside the ground truth."""
    def cell(text: str) -> str:
        return text.replace("|", "\\|").replace("\n", " ")

    rows = ["| # | generated | ground truth |", "|---|---|---|"]
    rows += [f"| {i} | {cell(g)} | {cell(t)} |" for i, (g, t) in enumerate(zip(generated, truth))]
    return "\n".join(rows)


class CaptionSamples(pl.Callback):
    """Log generated vs. ground-truth captions of fixed validation images.

    Args:
        n: images shown in the table (0: off).
        opts: decoding options.
        out_dir: folder for the markdown tables (default ``<run_dir>/val_captions``).
    """

    def __init__(self, n: int, opts: Optional[CaptionerDecodeConfig] = None, out_dir: Optional[str] = None):
        self.n, self.opts, self.out_dir = n, opts or CaptionerDecodeConfig(), out_dir
        self.batch: Optional[dict] = None
        self.written: list[str] = []

    def on_validation_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any,
                                batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        if self.n and batch_idx == 0 and self.batch is None:
            self.batch = {"image": batch["image"].detach().cpu(), "caption": list(batch["caption"]),
                          "scene": list(batch.get("scene") or [""] * len(batch["caption"]))}

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self.n or self.batch is None or trainer.sanity_checking:
            return
        model = pl_module.model
        if any(is_partitioned(p) for p in model.parameters()):
            weights = full_state_dict(model)  # every rank: a collective
            if not trainer.is_global_zero:
                return
            model = plain_model(pl_module.captioner, weights).to(pl_module.device)
        if trainer.is_global_zero:
            self._log(trainer, pl_module, model)

    @torch.no_grad()
    def _log(self, trainer: pl.Trainer, pl_module: pl.LightningModule, model: torch.nn.Module) -> None:
        generate = CaptionGenerator(model, pl_module.tokenizer, self.opts)
        images = self.batch["image"].to(pl_module.device, next(model.parameters()).dtype)
        generated = generate(images)
        step = trainer.global_step
        table = captions_table(generated[:self.n], self.batch["caption"][:self.n])
        out_dir = self.out_dir or os.path.join(trainer.default_root_dir, "val_captions")
        os.makedirs(out_dir, exist_ok=True)
        path = os.path.join(out_dir, f"step_{step:07d}.md")
        with open(path, "w") as f:
            f.write(f"# Validation captions at step {step}\n\n{table}\n")
        self.written.append(path)
        metrics = {}
        if all(self.batch["scene"]):
            metrics = flat_metrics(evaluate_captions(generated, self.batch["scene"]), prefix="val/")
        logger = trainer.logger
        if logger is not None:
            if metrics:
                logger.log_metrics(metrics, step=step)
            # duck-typed: any Lightning logger; only TensorBoard's experiment has add_text
            experiment = getattr(logger, "experiment", None)
            if experiment is not None and hasattr(experiment, "add_text"):
                experiment.add_text("val/captions", table, global_step=step)
