"""The stage registry: every ``stage=`` name, the package that runs it, and its entry function.

One rule leads from a stage's name to its code: stage ``<name>`` of package ``<pkg>`` is
``dalle3/<pkg>/stage.py:run_<name>(cfg) -> dict``, its values are ``conf/stage/<name>.yaml``
and the package's own settings are the config group ``conf/<pkg>/`` (``ARCHITECTURE.md``).
Entry points and the pipeline look stages up here, so adding a stage is one line.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Callable

from dalle3.utils.logging import get_logger

log = get_logger("dalle3.stages")

ENTRY_MODULE = "stage"
"Every stage package's entry file: ``dalle3/<package>/stage.py``."


@dataclass(frozen=True)
class Stage:
    name: str
    "The ``stage=`` value, also ``conf/stage/<name>.yaml``."
    package: str
    "Subpackage of ``dalle3`` (and config group under ``conf/``) that owns the stage."
    about: str
    "One line for help texts and the pipeline report."

    @property
    def module(self) -> str:
        return f"dalle3.{self.package}.{ENTRY_MODULE}"

    @property
    def function(self) -> str:
        return f"run_{self.name}"

    @property
    def target(self) -> str:
        return f"{self.module}:{self.function}"

    def load(self) -> Callable[[Any], dict]:
        return getattr(importlib.import_module(self.module), self.function)


STAGES: dict[str, Stage] = {s.name: s for s in [
    Stage("world", "world", "write the synthetic world's shards"),
    Stage("captioner_pretrain", "captioner", "pretrain the CoCa captioner on alt-text"),
    Stage("captioner_finetune", "captioner", "fine-tune SSC and DSC captioners"),
    Stage("recaption", "recaption", "recaption the training shards"),
    Stage("vae", "ldm", "train the tiny VAE on the world's images"),
    Stage("latents", "ldm", "precompute VAE latents"),
    Stage("ldm", "ldm", "train the latent diffusion model"),
    Stage("generate", "ldm", "sample images from prompts"),
    Stage("eval", "eval", "CLIP score, prompt following, blend sweep"),
    Stage("judge", "eval", "train the judge CLIP on the judge split"),
    Stage("text_encoder", "eval", "train the world CLIP whose text tower is the ldm's text encoder"),
    Stage("report", "eval", "the HTML report of an evaluation folder"),
    Stage("upsample", "upsample", "train the world's prompt upsampler LM (short prompt -> DSC)"),
]}

RENAMED: dict[str, str] = {"data": "world"}
"Old stage names that still work, with a deprecation line: old -> new."


def get_stage(name: str) -> Stage:
    if name in RENAMED:
        log.warning("stage=%s is deprecated; use stage=%s (the same stage)", name, RENAMED[name])
        name = RENAMED[name]
    if name not in STAGES:
        raise KeyError(f"stage={name!r} is not a stage; choose one of: {' | '.join(STAGES)}")
    return STAGES[name]


def run_stage(cfg: Any) -> dict:
    """Run ``cfg.stage`` and return its summary dict."""
    return get_stage(cfg.stage).load()(cfg) or {}
