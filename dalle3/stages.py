"""The stage registry: which function runs each `stage=` and whether it exists yet.

Entry points and the pipeline look stages up here, so adding a stage is one line.
A stage whose module is not in the package yet is reported as missing instead of
crashing the pipeline, together with the issue that tracks it.
"""
from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass
from typing import Any, Callable


@dataclass(frozen=True)
class Stage:
    name: str
    target: str
    "`module:function` taking the composed root config and returning a dict summary."
    about: str
    issue: int
    "Tracker issue that delivers the stage (for the 'still missing' message)."

    @property
    def module(self) -> str:
        return self.target.split(":")[0]

    def available(self) -> bool:
        try:
            return importlib.util.find_spec(self.module) is not None
        except ModuleNotFoundError:
            return False

    def load(self) -> Callable[[Any], dict]:
        module, func = self.target.split(":")
        return getattr(importlib.import_module(module), func)


STAGES: dict[str, Stage] = {s.name: s for s in [
    Stage("data", "dalle3.world.stage:run", "write the synthetic world's shards", 2),
    Stage("captioner_pretrain", "dalle3.captioner.train:run", "pretrain the CoCa captioner on alt-text", 3),
    Stage("captioner_finetune", "dalle3.captioner.train:run", "fine-tune SSC and DSC captioners", 3),
    Stage("recaption", "dalle3.recaption.job:run", "recaption the training shards", 4),
    Stage("vae", "dalle3.ldm.train:run", "train the tiny VAE on the world's images", 5),
    Stage("latents", "dalle3.ldm.precompute:run", "precompute VAE latents", 5),
    Stage("ldm", "dalle3.ldm.train:run", "train the latent diffusion model", 5),
    Stage("generate", "dalle3.ldm.generate:run", "sample images from prompts", 5),
    Stage("eval", "dalle3.eval.run:run", "CLIP score, prompt following, blend sweep", 5),
]}


class StageMissing(RuntimeError):
    """The stage exists in the plan but not yet in the package."""


def get_stage(name: str) -> Stage:
    if name not in STAGES:
        raise KeyError(f"stage={name!r} is not a stage; choose one of: {' | '.join(STAGES)}")
    return STAGES[name]


def run_stage(cfg: Any) -> dict:
    """Run ``cfg.stage`` and return its summary dict."""
    stage = get_stage(cfg.stage)
    if not stage.available():
        raise StageMissing(f"stage {stage.name!r} ({stage.about}) is not implemented yet (issue #{stage.issue})")
    return stage.load()(cfg) or {}
