"""Typed config of the evaluation stage (`dalle3-eval`)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, List, Optional

from dalle3.config.validate import check_positive


@dataclass
class EvalConfig:
    runs: List[str] = field(default_factory=list)
    "ldm run folders to score; empty: every run under ${paths.out_dir}/ldm with a checkpoint."
    prompts: str = "${paths.data_dir}/val"
    "Held-out shards whose alt-text and DSC captions (and scene graphs) are the prompts."
    num_prompts: int = 128
    "Prompts of each kind scored per run."
    guidance: float = 3.0
    "Classifier-free guidance (ENVIRONMENT.md: 4 tints the background; 2-3 is best here)."
    steps: int = 25
    "Sampler steps."
    seed: int = 0
    "Noise seed: every run sees the same initial noise for the same prompt."
    batch_size: int = 64
    "Images generated per batch."
    clip_model: Optional[str] = "${captioner_export:pretrain}"
    "CLIP used for CLIP score: an open_clip export folder (our alt-pretrained CoCa, like the paper's public CLIP), or null to skip."
    out_dir: str = "${paths.out_dir}/eval"
    "Where results.json, results.md, the sweep plot and sample grids go."


def validate_eval(cfg: Any, key: str = "eval") -> None:
    """Check the ``eval`` block's values (one-line :class:`ConfigError`)."""
    check_positive(f"{key}.num_prompts", cfg.num_prompts)
    check_positive(f"{key}.steps", cfg.steps)
    check_positive(f"{key}.batch_size", cfg.batch_size)
