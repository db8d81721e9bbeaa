"""Stages ``captioner_pretrain`` and ``captioner_finetune``: train, checkpoint, resume, export.

* ``captioner_pretrain``: the ``train`` split, alt-text (``captioner.target=alt``),
  λ_con = 1, λ_cap = 2; run folder ``<out_dir>/captioner_pretrain``.
* ``captioner_finetune``: the ``annotated`` split, ``captioner.target=ssc|dsc``, caption
  loss only, starting from the pretrain run's export; run folder
  ``<out_dir>/captioner_<target>``, so the SSC and DSC runs never collide.

Both end by exporting ``<run_dir>/export`` (:mod:`dalle3.captioner.export`).
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Optional

from dalle3.captioner.stem import StemSpec, check_stem
from dalle3.config.captioner import CAPTIONER_TARGETS, DECODE_MODES, POS_EMBED_TYPES, STEM_NORMS, STEMS, TOKENIZERS
from dalle3.config.validate import ConfigError, check_choice, check_positive, check_range, validate
from dalle3.utils.logging import get_logger

log = get_logger("dalle3.captioner")


def validate_captioner(cfg: Any) -> None:
    """Check the ``captioner`` block against the stage (one-line ``ConfigError``)."""
    c = cfg.captioner
    check_choice("captioner.target", c.target, CAPTIONER_TARGETS)
    check_choice("captioner.tokenizer", c.tokenizer, TOKENIZERS)
    check_choice("captioner.decode.mode", c.decode.mode, DECODE_MODES)
    check_range("captioner.contrastive_weight", c.contrastive_weight, 0.0, float("inf"))
    check_range("captioner.caption_weight", c.caption_weight, 0.0, float("inf"))
    check_range("captioner.caption_focal_gamma", c.caption_focal_gamma, 0.0, 10.0)
    check_positive("captioner.decode.max_new_tokens", c.decode.max_new_tokens)
    for key, lr in (("captioner.lr", c.lr), ("captioner.pretrain_lr", c.pretrain_lr)):
        if lr is not None and not lr > 0:
            raise ConfigError(f"{key}={lr!r}; allowed: a learning rate > 0")
    if not c.model:
        check_choice("captioner.arch.pos_embed_type", c.arch.pos_embed_type, POS_EMBED_TYPES)
        check_choice("captioner.arch.stem", c.arch.stem, STEMS)
        if c.arch.stem == "conv":
            check_choice("captioner.arch.stem_norm", c.arch.stem_norm, STEM_NORMS)
            try:
                check_stem(list(c.arch.stem_channels), c.arch.patch_size)
            except ValueError as err:
                raise ConfigError(str(err)) from None
        if c.arch.image_size % c.arch.patch_size:
            raise ConfigError(f"captioner.arch.image_size={c.arch.image_size} is not a multiple of "
                              f"captioner.arch.patch_size={c.arch.patch_size}; allowed: a multiple")
        if not c.arch.attentional_pool and c.arch.vision_width != c.arch.text_width:
            raise ConfigError(f"captioner.arch.vision_width={c.arch.vision_width} differs from captioner.arch."
                              f"text_width={c.arch.text_width} with attentional_pool=false; allowed: equal widths "
                              "(the decoder attends to the patch tokens directly)")
    if c.tokenizer == "open_clip" and not c.model:
        raise ConfigError("captioner.tokenizer=open_clip needs captioner.model; allowed: an open_clip CoCa name "
                          "such as coca_ViT-B-32")
    if cfg.caption.source != c.target:
        raise ConfigError(f"caption.source={cfg.caption.source!r} differs from captioner.target={c.target!r}; "
                          "allowed: the same kind (the stage files set caption.source: ${captioner.target})")
    if cfg.stage == "captioner_pretrain" and c.target != "alt":
        raise ConfigError(f"captioner.target={c.target!r} for stage=captioner_pretrain; allowed: alt")
    if cfg.stage == "captioner_finetune" and c.target == "alt":
        raise ConfigError("captioner.target='alt' for stage=captioner_finetune; allowed: ssc | dsc")


def init_weights(cfg: Any) -> Optional[str]:
    """The weights training starts from: ``captioner.init_from`` (must exist when set)."""
    init = cfg.captioner.init_from
    if not init:
        if cfg.stage == "captioner_finetune":
            raise ConfigError("captioner.init_from is empty for stage=captioner_finetune; allowed: the pretrain "
                              "run's export folder or a .safetensors file")
        return None
    if not Path(init).exists():
        hint = " (run stage=captioner_pretrain first)" if cfg.stage == "captioner_finetune" else ""
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


def run(cfg: Any) -> dict:
    """Train a captioner for ``cfg.stage``; return a summary (run_dir, export, steps, losses)."""
    validate(cfg, need_train_shards=True)
    validate_captioner(cfg)
    init = init_weights(cfg)
    if cfg.stage == "captioner_pretrain" and cfg.captioner.pretrain_lr is not None:
        cfg.captioner.lr = cfg.captioner.pretrain_lr  # so the module, its logged hparams and the summary agree

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
    from dalle3.captioner.export import export_captioner
    from dalle3.dist.zero import full_state_dict

    keys = set(module.model.state_dict())  # full_state_dict also returns non-persistent buffers
    weights = {k: v for k, v in full_state_dict(module.model).items() if k in keys}
    out = Path(cfg.paths.run_dir) / "export"
    if trainer.is_global_zero:
        meta = {"stage": cfg.stage, "target": cfg.captioner.target, "step": int(trainer.global_step),
                "init_from": cfg.captioner.init_from}
        export_captioner(module.captioner, out, meta, state_dict=weights)
        log.info("exported the %s captioner to %s", cfg.captioner.target, out)
    return out
