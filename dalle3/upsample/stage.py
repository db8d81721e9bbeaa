"""The upsample package's stage: ``dalle3-train stage=upsample`` (the world's prompt upsampler).

Trains the world LM (:mod:`dalle3.upsample.module`), loads its export back through
:class:`dalle3.upsample.upsampler.HFUpsampler` (the path a public LLM takes), and scores it on
held-out ``val`` prompts (SSC and alt-style): the share whose every fact survives
(:mod:`dalle3.upsample.evaluate`), with the fallbacks by reason. Writes ``upsample.json`` and
``heldout.jsonl`` (prompt, answer, fallback) to ``upsample.train.out_dir``.
"""
from __future__ import annotations

import json
import os
from typing import Any

from dalle3.config.upsample import UpsampleConfig, validate_upsample, validate_upsample_train
from dalle3.utils.io import atomic_write_json, atomic_write_text
from dalle3.utils.logging import get_logger

log = get_logger(__name__)


def run_upsample(cfg: Any) -> dict:
    """Train, export, reload and score the world's upsampler; return the summary."""
    import dataclasses

    import torch

    from dalle3.config.convert import to_dataclass
    from dalle3.config.schema import validate
    from dalle3.config.world import WorldConfig
    from dalle3.dist.strategy import cpu_threads
    from dalle3.upsample.data import alt_style_config, heldout_prompts
    from dalle3.upsample.evaluate import preservation
    from dalle3.upsample.module import train_world_lm
    from dalle3.upsample.upsampler import HFUpsampler

    validate(cfg)
    validate_upsample(cfg.upsample)
    validate_upsample_train(cfg.upsample.train)
    threads = cpu_threads(cfg.trainer)
    if threads:
        torch.set_num_threads(threads)
    up, world = to_dataclass(UpsampleConfig, cfg.upsample), to_dataclass(WorldConfig, cfg.world)
    summary = train_world_lm(up, world, int(cfg.datagen.seed), int(cfg.seed))
    upsampler = HFUpsampler.from_pretrained(summary["export"], dataclasses.replace(up, model=summary["export"]))
    held = heldout_prompts(int(cfg.datagen.seed), "dev", up.train.heldout, world,
                           alt_style_config(world, up.train.alt_colour_rate))
    kinds, prompts = [k for k, _, _ in held], [p for _, p, _ in held]
    result = upsampler.upsample(prompts)
    summary["heldout"] = preservation(kinds, prompts, result)
    summary["fallbacks"] = dict(result.fallbacks)
    out = str(up.train.out_dir)
    atomic_write_text(os.path.join(out, "heldout.jsonl"), "".join(
        json.dumps({"kind": k, "prompt": g.prompt, "text": g.text, "raw": g.raw, "fallback": g.fallback,
                    "detail": g.detail}) + "\n" for k, g in zip(kinds, result.items)))
    atomic_write_json(os.path.join(out, "upsample.json"), summary, indent=1)
    log.info("upsample: facts kept on %.1f%% of %d held-out prompts (ssc %.1f%%, alt %.1f%%), fallbacks %s",
             100 * summary["heldout"]["all"]["facts_kept"], len(prompts), 100 * summary["heldout"]["ssc"]["facts_kept"],
             100 * summary["heldout"]["alt"]["facts_kept"], summary["fallbacks"])
    return summary
