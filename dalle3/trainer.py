"""A Lightning Trainer built from ``cfg.trainer``, shared by every training stage.

Checkpoints go to ``<run_dir>/checkpoints`` every ``trainer.ckpt_every_n_steps`` steps
with ``last.ckpt`` always current, TensorBoard logs to ``<run_dir>``, and
``trainer.resume=auto`` continues from ``last.ckpt`` when one exists (that is what a
requeued SLURM job relies on).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Sequence

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.loggers import TensorBoardLogger

from dalle3.config.schema import validate_trainer
from dalle3.config.validate import ConfigError, per_device_batch
from dalle3.dist.strategy import build_strategy, cpu_threads, is_deepspeed, wants_cpu
from dalle3.utils.logging import get_logger

log = get_logger("dalle3.trainer")


def checkpoint_dir(cfg: Any) -> Path:
    return Path(cfg.paths.run_dir) / "checkpoints"


def resolve_resume(cfg: Any) -> Optional[str]:
    """Checkpoint to resume from: ``auto`` → ``last.ckpt`` if present; a path must exist."""
    resume = cfg.trainer.resume
    if resume in (None, "", "none", "null", False):
        return None
    if resume == "auto":
        # The newest of the periodic last.ckpt and the checkpoints Lightning's SLURM
        # environment writes on SIGUSR1 before requeueing (<run_dir>/hpc_ckpt_<n>.ckpt).
        found = [p for p in (checkpoint_dir(cfg) / "last.ckpt", *Path(cfg.paths.run_dir).glob("hpc_ckpt_*.ckpt"))
                 if p.exists()]
        return str(max(found, key=lambda p: p.stat().st_mtime)) if found else None
    if not Path(resume).exists():
        raise ConfigError(f"trainer.resume={resume!r} does not exist; allowed: auto | null | an existing checkpoint")
    return str(resume)


def build_trainer(cfg: Any, callbacks: Sequence[Callback] = (), **overrides: Any) -> L.Trainer:
    """Build the Trainer for a training stage.

    Args:
        cfg: the composed root config (uses ``trainer`` and ``paths``).
        callbacks: stage callbacks (EMA, sample images, ...); checkpointing is added here.
        overrides: keyword arguments passed to ``L.Trainer`` last (tests, benchmarks).
    """
    t = cfg.trainer
    world = validate_trainer(t)
    run_dir = Path(cfg.paths.run_dir)
    strategy = build_strategy(t, per_device_batch(cfg.data.global_batch_size, world))
    ckpt = ModelCheckpoint(dirpath=checkpoint_dir(cfg), filename="step{step:07d}", auto_insert_metric_name=False,
                           every_n_train_steps=t.ckpt_every_n_steps, save_last=True,
                           save_top_k=-1 if t.keep_checkpoints else 1)
    kwargs: dict = dict(
        accelerator="cpu" if wants_cpu(t) else "gpu",
        devices=t.devices,
        num_nodes=t.num_nodes,
        strategy=strategy,
        precision=t.precision,
        max_steps=t.max_steps,
        val_check_interval=t.val_check_interval,
        check_val_every_n_epoch=None,  # count validation in steps across (fixed-length) epochs
        limit_val_batches=t.limit_val_batches,
        log_every_n_steps=t.log_every_n_steps,
        gradient_clip_val=t.gradient_clip_val or None,
        enable_progress_bar=t.progress_bar,
        default_root_dir=str(run_dir),
        logger=TensorBoardLogger(save_dir=str(run_dir), name="", version="tb"),
        callbacks=[ckpt, LearningRateMonitor("step"), *callbacks],
        num_sanity_val_steps=0,
        use_distributed_sampler=False,  # the data layer splits shards by rank itself
    )
    if is_deepspeed(strategy):
        kwargs["gradient_clip_algorithm"] = "norm"
    kwargs.update(overrides)
    return L.Trainer(**kwargs)


def fit(module: L.LightningModule, datamodule: L.LightningDataModule, cfg: Any,
        callbacks: Sequence[Callback] = (), **overrides: Any) -> L.Trainer:
    """Train ``module`` on ``datamodule``, resuming per ``trainer.resume``; return the Trainer."""
    threads = cpu_threads(cfg.trainer)
    if threads:
        torch.set_num_threads(threads)
        log.info("%d torch threads per process on the CPU", threads)
    trainer = build_trainer(cfg, callbacks, **overrides)
    ckpt_path = resolve_resume(cfg)
    if ckpt_path:
        log.info("resuming from %s", ckpt_path)
    # DeepSpeed checkpoints are folders written by DeepSpeed itself; Lightning's own .ckpt
    # files hold only tensors and primitive containers, so they load with weights_only.
    trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path,
                weights_only=None if is_deepspeed(trainer.strategy) else True)
    return trainer
