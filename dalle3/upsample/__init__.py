"""Prompt upsampling: an LM rewrites short prompts into descriptive captions before generation.

:class:`Upsampler` (the interface, guards included) and :class:`HFUpsampler` (any transformers
causal or seq2seq LM by hub name or local folder); the guards of :mod:`dalle3.upsample.guards`;
the world's own upsampler LM trained by ``dalle3-train stage=upsample`` (:mod:`dalle3.upsample.stage`).
"""
from dalle3.upsample.guards import FALLBACK_REASONS, Guarded, guard
from dalle3.upsample.upsampler import HFUpsampler, Upsampler, UpsampleResult, build_upsampler

__all__ = ["FALLBACK_REASONS", "Guarded", "HFUpsampler", "UpsampleResult", "Upsampler", "build_upsampler", "guard"]
