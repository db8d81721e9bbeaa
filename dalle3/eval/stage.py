"""The eval stage (`dalle3-eval`, `stage=eval`): score ldm runs on held-out prompts.

For every run: generate one image per held-out alt-text prompt and one per DSC prompt
(same seeds for every run), with the run's EMA weights; report CLIP score for both
prompt kinds (paper Fig. 4) and the exact prompt-following checks of
:mod:`dalle3.eval.follow` on the DSC prompts. Writes ``results.json``, ``results.md``,
``sweep.png`` and a sample grid per run under ``eval.out_dir``.
"""
from __future__ import annotations

import glob
import json
import os
import time
from typing import Any, Optional

import torch
from omegaconf import OmegaConf

from dalle3.config.eval import validate_eval
from dalle3.config.validate import ConfigError
from dalle3.eval.clip_score import ClipScorer
from dalle3.eval.follow import follow_scores
from dalle3.eval.prompts import Prompt, load_prompts
from dalle3.eval.report import markdown_table, plot, run_label
from dalle3.utils.logging import get_logger

log = get_logger(__name__)


def discover_runs(cfg: Any) -> list[str]:
    """``eval.runs``, or every ldm run under ``paths.out_dir/ldm`` that has a last checkpoint."""
    runs = list(cfg.eval.runs) or sorted(
        os.path.dirname(os.path.dirname(p)) for p in glob.glob(os.path.join(cfg.paths.out_dir, "ldm", "*",
                                                                            "checkpoints", "last.ckpt")))
    if not runs:
        raise ConfigError(f"eval.runs is empty and no ldm run with checkpoints/last.ckpt exists under "
                          f"{cfg.paths.out_dir}/ldm; allowed: a list of ldm run folders (train one with stage=ldm)")
    return runs


@torch.no_grad()
def generate_for(cfg: Any, run_dir: str, texts: list[str]) -> tuple[torch.Tensor, Optional[int]]:
    from dalle3.ldm.generate import load_trained_parts
    from dalle3.ldm.model import build_sampler
    from dalle3.ldm.sample import generate

    run_cfg = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
    run_cfg.ldm.generate.ckpt_dir, run_cfg.ldm.generate.checkpoint = run_dir, None
    parts, ckpt = load_trained_parts(run_cfg, use_ema=True)
    sampler, e = build_sampler(cfg.ldm.noise), cfg.eval
    chunks = [generate(parts.unet, parts.vae, parts.tokenizer, parts.text_encoder, sampler, texts[i:i + e.batch_size],
                       guidance=e.guidance, steps=e.steps, seed=e.seed + i)
              for i in range(0, len(texts), e.batch_size)]
    return torch.cat(chunks), ckpt.get("global_step")


def score_run(cfg: Any, run_dir: str, prompts: list[Prompt], scorer: Optional[ClipScorer]) -> dict:
    row = {**run_label(run_dir), "run_dir": run_dir}
    with_alt = [p for p in prompts if p.alt.strip()]
    dsc_images, row["step"] = generate_for(cfg, run_dir, [p.dsc for p in prompts])
    truths = [p.scene for p in prompts]
    if all(t is not None for t in truths):
        row.update({f"follow_{k}": v for k, v in follow_scores(dsc_images, truths).items()})
    if scorer is not None:
        alt_images, _ = generate_for(cfg, run_dir, [p.alt for p in with_alt])
        row["clip_alt"] = float(scorer(alt_images, [p.alt for p in with_alt]).mean())
        row["clip_dsc"] = float(scorer(dsc_images, [p.dsc for p in prompts]).mean())
    from dalle3.ldm.sample import image_grid, to_pil

    os.makedirs(cfg.eval.out_dir, exist_ok=True)
    to_pil(image_grid(dsc_images[:16], nrow=4)).save(os.path.join(cfg.eval.out_dir, f"{row['run'].replace(' ', '_')}_dsc.png"))
    return row


def run_eval(cfg: Any) -> dict:
    """Score every run of ``eval.runs`` (or every ldm run found); write the table, plot and grids."""
    e = cfg.eval
    validate_eval(e)
    runs = discover_runs(cfg)
    t0 = time.time()
    prompts, skips = load_prompts(e.prompts, e.num_prompts)
    if not prompts:
        raise ConfigError(f"eval.prompts={e.prompts!r} holds no readable samples")
    scorer = None
    if e.clip_model and os.path.exists(e.clip_model):
        scorer = ClipScorer.from_export(e.clip_model)
    else:
        log.warning("eval.clip_model=%r not found: CLIP score skipped (train captioner_pretrain first)", e.clip_model)
    rows = []
    for run_dir in runs:
        log.info("eval: scoring %s on %d prompts", run_dir, len(prompts))
        rows.append(score_run(cfg, run_dir, prompts, scorer))
    os.makedirs(e.out_dir, exist_ok=True)
    table = markdown_table(rows)
    with open(os.path.join(e.out_dir, "results.md"), "w") as f:
        f.write(f"{len(prompts)} held-out prompts from {e.prompts}, guidance {e.guidance}, {e.steps} steps\n\n{table}\n")
    with open(os.path.join(e.out_dir, "results.json"), "w") as f:
        json.dump({"prompts": len(prompts), "skipped": skips.total, "rows": rows}, f, indent=2)
    plot(rows, os.path.join(e.out_dir, "sweep.png"))
    print(table)
    return {"out_dir": e.out_dir, "runs": len(rows), "prompts": len(prompts), "seconds": round(time.time() - t0, 1),
            "rows": [{k: v for k, v in r.items() if k != "run_dir"} for r in rows]}
