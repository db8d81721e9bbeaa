"""The world's upsampler LM's training task (stage=upsample): batch -> LM -> loss, in a plain loop, no Lightning.

Why plain: one process, a few minutes, nothing to shard or resume; the model is a stock
``LlamaForCausalLM`` and what matters is that its save_pretrained folder is then read back
through :class:`dalle3.upsample.upsampler.HFUpsampler`, the path of a public LLM. AdamW with
linear warm-up and cosine decay to a tenth (:func:`dalle3.captioner.module.cosine_with_warmup`).
"""
from __future__ import annotations

import os
import time
from typing import Any

import torch

from dalle3.captioner.module import cosine_with_warmup
from dalle3.config.upsample import UpsampleConfig
from dalle3.config.world import WorldConfig
from dalle3.upsample.data import alt_style_config, batches
from dalle3.upsample.model import build_world_lm
from dalle3.upsample.tokenizer import build_world_lm_tokenizer
from dalle3.utils.io import atomic_path
from dalle3.utils.logging import get_logger

log = get_logger(__name__)

EXPORT_DIR = "export"
"The save_pretrained folder under ``upsample.train.out_dir``."


def train_world_lm(up: UpsampleConfig, world: WorldConfig, world_seed: int, seed: int = 0) -> dict:
    """Train on train-split pairs and save model + tokenizer to ``<train.out_dir>/export``.

    Args:
        world_seed: the world's seed (``datagen.seed``): which scenes the train split holds.
        seed: model initialisation and the draw order of the pairs.

    Returns: ``{"export", "steps", "loss", "seconds", "parameters"}``.
    """
    t, t0 = up.train, time.time()
    tokenizer = build_world_lm_tokenizer(t.max_length + up.generation.max_new_tokens)
    model = build_world_lm(t, tokenizer, seed, max_positions=t.max_length + up.generation.max_new_tokens)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=t.lr, weight_decay=t.weight_decay, betas=(0.9, 0.98))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: cosine_with_warmup(s, t.warmup_steps, t.steps, 0.1))
    data = batches(tokenizer, up.prompt_template, world_seed, seed, t.scenes, t.batch_size, t.max_length, world,
                   alt_style_config(world, t.alt_colour_rate), t.target_order)
    torch.manual_seed(seed)
    running = None
    for step in range(1, t.steps + 1):
        loss = model(**next(data)).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        running = loss.item() if running is None else 0.9 * running + 0.1 * loss.item()
        if step % t.log_every == 0 or step == t.steps:
            log.info("upsample: step %d/%d train/loss %.4f lr %.2e (%.0f s)", step, t.steps, running,
                     sched.get_last_lr()[0], time.time() - t0)
    export = os.path.join(str(t.out_dir), EXPORT_DIR)
    with atomic_path(export) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    return {"export": export, "steps": t.steps, "loss": round(running, 4), "seconds": round(time.time() - t0, 1),
            "parameters": sum(p.numel() for p in model.parameters())}
