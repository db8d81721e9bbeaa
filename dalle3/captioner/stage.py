"""Stages ``captioner_pretrain`` and ``captioner_finetune``: train, checkpoint, resume, export.

* ``captioner_pretrain``: the ``train`` split, alt-text (``captioner.target=alt``),
  λ_con = 1, λ_cap = 2; run folder ``<out_dir>/captioner_pretrain``.
* ``captioner_finetune``: the ``annotated`` split, ``captioner.target=ssc|dsc``, caption
  loss only, starting from the pretrain run's export; run folder
  ``<out_dir>/captioner_<target>``, so the SSC and DSC runs never collide.

The stage files (``conf/stage/captioner_*.yaml``) set every value that differs between
the two. Both end by exporting ``<run_dir>/export`` (:mod:`dalle3.captioner.export`).
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Optional

from dalle3.captioner.stem import StemSpec, check_stem
from dalle3.config.captioner import FINETUNE_TARGETS, PRETRAIN_TARGETS, validate_captioner
from dalle3.config.schema import validate
from dalle3.config.validate import ConfigError
from dalle3.data.shards import validate_shards
from dalle3.utils.logging import get_logger

log = get_logger("dalle3.captioner")


def check_buildable(captioner_cfg: Any) -> None:
    """The conv stem must downsample by the patch size (a one-line ``ConfigError``)."""
    c = captioner_cfg
    if not c.model and c.arch.stem == "conv":
        try:
            check_stem(list(c.arch.stem_channels), c.arch.patch_size)
        except ValueError as err:
            raise ConfigError(str(err)) from None


def init_weights(cfg: Any, required: bool) -> Optional[str]:
    """The weights training starts from: ``captioner.init_from`` (must exist when set, or when ``required``)."""
    init = cfg.captioner.init_from
    if not init:
        if required:
            raise ConfigError("captioner.init_from is empty for stage=captioner_finetune; allowed: the pretrain "
                              "run's export folder or a .safetensors file")
        return None
    if not Path(init).exists():
        hint = " (run stage=captioner_pretrain first)" if required else ""
        raise ConfigError(f"captioner.init_from={init!r} does not exist{hint}; allowed: an export folder "
                          "or a .safetensors file")
    check_same_vocabulary(cfg.captioner, Path(init))
    check_same_stem(cfg.captioner, Path(init))
    return str(init)


def check_same_stem(captioner_cfg: Any, init: Path) -> None:
    """An export's conv stem must be the one this config builds, or its weights do not fit."""
    from dalle3.captioner.export import META_FILE
    from dalle3.captioner.model import stem_of

    meta = init / META_FILE if init.is_dir() else None
    if meta is None or not meta.exists() or captioner_cfg.model:
        return
    theirs, ours = StemSpec.from_json(json.loads(meta.read_text()).get("conv_stem")), stem_of(captioner_cfg)
    if theirs != ours:
        fix = (f"set captioner.arch.stem=conv captioner.arch.stem_channels={list(theirs.channels)} "
               f"captioner.arch.stem_norm={theirs.norm}" if theirs else "set captioner.arch.stem=patch")
        raise ConfigError(f"captioner.init_from={str(init)!r} has another image stem ({theirs}) than this "
                          f"config's ({ours}); {fix}")


def check_same_vocabulary(captioner_cfg: Any, init: Path) -> None:
    """An export's tokenizer must be the one this config builds, or its embedding rows mean other words."""
    from dalle3.captioner.export import TOKENIZER_FILE
    from dalle3.captioner.model import build_tokenizer
    from dalle3.captioner.tokenizer import WordTokenizer

    saved = init / TOKENIZER_FILE if init.is_dir() else None
    if saved is None or not saved.exists() or captioner_cfg.tokenizer != "world":
        return
    theirs, ours = WordTokenizer.load(saved), build_tokenizer(captioner_cfg)
    if theirs.vocab != ours.vocab:
        raise ConfigError(f"captioner.init_from={str(init)!r} was trained with another vocabulary "
                          f"({len(theirs.phrases)} phrases, {theirs.vocab_size} tokens) than this config's "
                          f"({len(ours.phrases)} phrases, {ours.vocab_size} tokens); set captioner.phrases="
                          f"{len(theirs.phrases)}")


def run_captioner_pretrain(cfg: Any) -> dict:
    """Pretrain the captioner on alt-text; return a summary (run_dir, export, steps, losses)."""
    return train(cfg, PRETRAIN_TARGETS, "captioner_pretrain", init_required=False)


def run_captioner_finetune(cfg: Any) -> dict:
    """Fine-tune the pretrained captioner into an SSC or DSC captioner; return a summary."""
    return train(cfg, FINETUNE_TARGETS, "captioner_finetune", init_required=True)


def check_config(cfg: Any, targets: tuple, stage: str, init_required: bool) -> Optional[str]:
    """Every check of a captioner run before any heavy work; return the weights it starts from."""
    validate(cfg)
    validate_captioner(cfg, targets, stage)
    check_buildable(cfg.captioner)
    validate_shards("data.train_shards", cfg.data.train_shards)
    return init_weights(cfg, init_required)


def train(cfg: Any, targets: tuple, stage: str, init_required: bool) -> dict:
    """Train, export and summarise one captioner run (both captioner stages)."""
    init = check_config(cfg, targets, stage, init_required)

    import lightning.pytorch as pl

    from dalle3.captioner.caption_samples import CaptionSamples
    from dalle3.captioner.generate import DecodeOptions
    from dalle3.captioner.module import CaptionerModule
    from dalle3.data.datamodule import ShardDataModule
    from dalle3.trainer import fit, resolve_resume

    t0 = time.time()
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    module = CaptionerModule(cfg.captioner, max_steps=cfg.trainer.max_steps, init_from=init)
    datamodule = ShardDataModule(cfg.data, cfg.caption, seed=cfg.seed)
    samples = CaptionSamples(cfg.captioner.val_captions, DecodeOptions.from_config(cfg.captioner.decode))
    resumed_from = resolve_resume(cfg)
    trainer = fit(module, datamodule, cfg, callbacks=[samples])
    export_dir = export_run(trainer, module, cfg)
    metrics = {k: round(float(v), 4) for k, v in trainer.callback_metrics.items() if k.startswith(("train/", "val/"))}
    return {"run_dir": str(cfg.paths.run_dir), "export": str(export_dir), "target": cfg.captioner.target,
            "lr": cfg.captioner.lr,
            "steps": int(trainer.global_step), "steps_run": module.steps_run, "resumed_from": resumed_from,
            "rank": trainer.global_rank, "world_size": trainer.world_size,
            "strategy": type(trainer.strategy).__name__, "seconds": round(time.time() - t0, 1), **metrics}


def export_run(trainer: Any, module: Any, cfg: Any) -> Path:
    """Export the trained weights from rank zero (gathered first under ZeRO-3: all ranks call this)."""
    from dalle3.captioner.export import export_captioner, export_dir
    from dalle3.dist.zero import full_state_dict

    keys = set(module.model.state_dict())  # full_state_dict also returns non-persistent buffers
    weights = {k: v for k, v in full_state_dict(module.model).items() if k in keys}
    out = export_dir(cfg.paths.run_dir)
    if trainer.is_global_zero:
        meta = {"stage": cfg.stage, "target": cfg.captioner.target, "step": int(trainer.global_step),
                "init_from": cfg.captioner.init_from}
        export_captioner(module.captioner, out, meta, state_dict=weights)
        log.info("exported the %s captioner to %s", cfg.captioner.target, out)
    return out
