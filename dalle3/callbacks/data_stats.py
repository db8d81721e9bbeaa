"""Log what the model actually trained on: the caption mix and the skipped samples.

Counts are kept per rank, summed over ranks once at epoch end (one collective, so DDP
steps are not slowed), then logged as ``data/synthetic_share`` (captions whose kind is
not ``alt`` / all captions), ``data/synthetic_fallback_alt`` (samples that were to get a
synthetic caption but had none, e.g. a failed recaption, and got alt-text) and
``data/skipped`` (sum of the batches' ``n_skipped``),
with a one-line summary on rank zero.
"""
from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
import torch

from dalle3.data.captions import CAPTION_KINDS
from dalle3.data.skips import SKIP_REASONS
from dalle3.utils.logging import get_logger

log = get_logger(__name__)

FIELDS = ("samples", *(f"kind/{k}" for k in CAPTION_KINDS), "synthetic_fallback_alt", "skipped",
          *(f"skip/{r}" for r in SKIP_REASONS))
"Layout of the count vector: one slot per name."
_INDEX = {name: i for i, name in enumerate(FIELDS)}


def batch_counts(batch: dict) -> torch.Tensor:
    """A batch's contribution to the count vector (float64, laid out as :data:`FIELDS`)."""
    counts = torch.zeros(len(FIELDS), dtype=torch.float64)
    kinds = batch.get("caption_kind") or []
    counts[_INDEX["samples"]] = len(kinds)
    for kind in kinds:
        counts[_INDEX[f"kind/{kind}"]] += 1
    counts[_INDEX["synthetic_fallback_alt"]] = sum(bool(f) for f in (batch.get("caption_fallback") or []))
    counts[_INDEX["skipped"]] = int(batch.get("n_skipped", 0))
    for reason in (batch.get("skipped") or {}).get("reason", []):
        if f"skip/{reason}" in _INDEX:
            counts[_INDEX[f"skip/{reason}"]] += 1
    return counts


def summarize(counts: torch.Tensor) -> dict[str, float]:
    """Count vector → ``{"samples", "synthetic_share", "skipped", "kind/...", "skip/..."}``."""
    values = {name: float(counts[i]) for i, name in enumerate(FIELDS)}
    samples = values["samples"]
    values["synthetic_share"] = (samples - values["kind/alt"]) / samples if samples else 0.0
    return values


def summary_line(epoch: int, stats: dict[str, float]) -> str:
    kinds = " ".join(f"{k}={int(stats[f'kind/{k}'])}" for k in CAPTION_KINDS)
    reasons = ", ".join(f"{r}: {int(stats[f'skip/{r}'])}" for r in SKIP_REASONS if stats[f"skip/{r}"])
    return (f"data epoch {epoch}: {int(stats['samples'])} samples, synthetic share "
            f"{stats['synthetic_share']:.3f} ({kinds}), alt for want of a synthetic caption "
            f"{int(stats['synthetic_fallback_alt'])}, skipped {int(stats['skipped'])}"
            + (f" ({reasons})" if reasons else ""))


class DataStats(pl.Callback):
    """Per-epoch caption-mix and skipped-sample statistics of the training batches."""

    def __init__(self) -> None:
        self.counts = torch.zeros(len(FIELDS), dtype=torch.float64)
        self.last: dict[str, float] = {}
        "The previous epoch's global statistics (see :func:`summarize`)."

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.counts.zero_()

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any,
                           batch: Any, batch_idx: int) -> None:
        if isinstance(batch, dict):
            self.counts += batch_counts(batch)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        total = trainer.strategy.reduce(self.counts.to(pl_module.device), reduce_op="sum")
        self.last = summarize(total.cpu())
        # already summed over ranks, so every rank holds the same number; sync_dist (a mean of
        # equal values) only keeps Lightning from warning about unsynced epoch-level logs
        for name in ("synthetic_share", "synthetic_fallback_alt", "skipped"):
            pl_module.log(f"data/{name}", self.last[name], on_step=False, on_epoch=True, sync_dist=True)
        if trainer.is_global_zero:
            log.info(summary_line(trainer.current_epoch, self.last))
