"""Typed config of `dalle3-pipeline` (= ``make demo``): which ldm runs the recipe trains.

``conf/pipeline/<name>.yaml`` picks the set (``pipeline=quick|default|full``); every ldm run
shares the pipeline's one VAE, one set of latent shards and their cached text features.
"""
from __future__ import annotations

from dataclasses import dataclass, field
import os
from typing import Any, List, Optional

from dalle3.config.validate import ConfigError, check_choice, check_range

PIPELINE_CAPTIONS = ("alt", "blend")
"An ldm run trains on alt-text only, or on a blend of one synthetic caption kind with alt-text."


@dataclass
class LdmRunSpec:
    caption: str = "blend"
    "alt (alt-text only) or blend (`synthetic` with probability `ratio`, else alt-text)."
    synthetic: str = "dsc"
    "The synthetic caption kind of a blend: dsc or ssc."
    ratio: float = 0.95
    "Share of the synthetic caption in a blend (1.0: synthetic captions only)."
    seeds: List[int] = field(default_factory=lambda: [0])
    "One run per seed (model init, data order, caption draws)."


@dataclass
class PipelineConfig:
    name: str = "default"
    "Name of the set (the conf/pipeline/ file); printed by the progress line and kept in summary.json."
    runs: List[LdmRunSpec] = field(default_factory=list)
    "The ldm runs, in training order."
    overrides: List[str] = field(default_factory=list)
    "Hydra overrides for every step of this set (e.g. pipeline=quick's small world and short training)."
    lanes: int = 0
    "ldm runs trained at once, each a `dalle3-train` process with trainer.cpu_threads = cores / lanes (1: one after another, in this process; 0: auto, see resolve_lanes)."
    upsample: bool = False
    "Also train the world's prompt upsampler (stage=upsample) and score every run on upsampled SSC and alt prompts beside the plain ones (about +7 min on 2 CPU cores; off in the default set, whose numbers the README states without it)."


def run_overrides(spec: Any, seed: int) -> tuple[str, ...]:
    """The ldm step's overrides for one run of ``spec`` (a :class:`LdmRunSpec` or its DictConfig)."""
    if spec.caption == "alt":
        return ("caption=alt", f"seed={seed}")
    return ("caption=blend", f"caption.synthetic={spec.synthetic}", f"caption.ratio={float(spec.ratio)}", f"seed={seed}")


def run_label(spec: Any, seed: int) -> str:
    """Step name of one run: ``ldm_alt_seed0``, ``ldm_dsc95_seed0``, ``ldm_ssc95_seed1``, ``ldm_dsc100_seed0``."""
    name = "alt" if spec.caption == "alt" else f"{spec.synthetic}{round(float(spec.ratio) * 100):d}"
    return f"ldm_{name}_seed{seed}"


def resolve_lanes(lanes: int, cores: Optional[int] = None, gpu: Optional[bool] = None) -> int:
    """``pipeline.lanes`` with 0 (auto) resolved: one lane on a GPU machine, else two when there are 2+ cores."""
    if lanes:
        return lanes
    if gpu is None:
        import torch

        gpu = torch.cuda.is_available()
    cores = cores or os.cpu_count() or 1
    return 1 if gpu or cores < 2 else 2


def validate_pipeline(cfg: Any, key: str = "pipeline") -> None:
    """Check the ``pipeline`` block (one-line :class:`ConfigError`)."""
    if not isinstance(cfg.lanes, int) or cfg.lanes < 0:
        raise ConfigError(f"{key}.lanes={cfg.lanes!r} must be 0 (auto) or a positive integer")
    if not cfg.runs:
        raise ConfigError(f"{key}.runs: empty; the pipeline needs at least one ldm run")
    seen = set()
    for i, spec in enumerate(cfg.runs):
        check_choice(f"{key}.runs[{i}].caption", spec.caption, PIPELINE_CAPTIONS)
        check_choice(f"{key}.runs[{i}].synthetic", spec.synthetic, ("dsc", "ssc"))
        check_range(f"{key}.runs[{i}].ratio", spec.ratio, 0.0, 1.0)
        if not spec.seeds:
            raise ConfigError(f"{key}.runs[{i}].seeds: empty")
        for seed in spec.seeds:
            label = run_label(spec, seed)
            if label in seen:
                raise ConfigError(f"{key}.runs[{i}]: {label} is listed twice")
            seen.add(label)
