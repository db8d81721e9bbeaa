"""The latent diffusion model's text side: tokenizer, frozen text encoder, prompt features.

The text encoder is pretrained (CLIP or T5, :func:`load_text_encoder`), an open_clip text
tower converted to a ``CLIPTextModel``, a world CLIP's text tower that ``stage=text_encoder``
trained and converted (``kind=world_clip``, what the pipeline uses), or the tiny one: a
randomly initialised, frozen CLIP text transformer over a word-level vocabulary of the
synthetic world (:func:`dalle3.world.vocab.caption_vocabulary`), saved once and reloaded
so every stage sees the same weights. Random features tell words apart, but the U-Net
learns little per-object binding from them: the world CLIP's tower doubled the dev DSC
CLIP score at equal steps (benchmarks/RESULTS.md, session 9).
"""
from __future__ import annotations

import json
import os
import re
from typing import Any, Iterable, Optional, Sequence

import torch
from torch import nn

from dalle3.config.schema import WorldConfig
from dalle3.ldm.model import freeze
from dalle3.utils.io import atomic_path
from dalle3.world.vocab import caption_vocabulary

SPECIAL_TOKENS = ("<pad>", "<unk>", "<bos>", "<eos>")
"Ids 0..3 of the word-level tokenizer, in this order."
_WHITESPACE = re.compile(r"\w+|[^\w\s]+")
"How the tokenizer's ``Whitespace`` pre-tokenizer cuts text into tokens."


def tiny_vocabulary() -> list[str]:
    """The tiny encoder's words: the world's words that 3000 sampled scenes' captions use
    (half of the alt texts naming colours), cut as the tokenizer cuts them, sorted."""
    return caption_vocabulary(_WHITESPACE, scenes=3000, seed=0, cfg=WorldConfig(alt_colour_rate=0.5))


def build_word_tokenizer(words: Iterable[str], max_length: int):
    """A word-level ``PreTrainedTokenizerFast`` (lower-cased, ``<bos> words <eos>``, padded).

    It saves and loads with transformers' own classes, so a diffusers pipeline exported
    with it needs none of our code.
    """
    from tokenizers import Tokenizer, normalizers, pre_tokenizers, processors
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
    for w in words:
        vocab.setdefault(w, len(vocab))
    tok = Tokenizer(WordLevel(vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single="<bos> $A <eos>", special_tokens=[("<bos>", vocab["<bos>"]), ("<eos>", vocab["<eos>"])])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>",
                                   bos_token="<bos>", eos_token="<eos>", model_max_length=max_length)


def build_tiny_text_encoder(cfg: Any, words: Optional[Sequence[str]] = None):
    """``(tokenizer, CLIPTextModel)``: the tiny frozen encoder, seeded by ``cfg.seed``.

    Args:
        cfg: a ``TextEncoderConfig``.
        words: vocabulary (default: :func:`tiny_vocabulary`).
    """
    from transformers import CLIPTextConfig, CLIPTextModel

    tokenizer = build_word_tokenizer(tiny_vocabulary() if words is None else words, cfg.max_length)
    config = CLIPTextConfig(vocab_size=len(tokenizer), hidden_size=cfg.hidden_size,
                            intermediate_size=4 * cfg.hidden_size, num_hidden_layers=cfg.num_layers,
                            num_attention_heads=cfg.num_heads, max_position_embeddings=cfg.max_length,
                            pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                            eos_token_id=tokenizer.eos_token_id, projection_dim=cfg.hidden_size)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        encoder = CLIPTextModel(config)
    return tokenizer, freeze(encoder)


def load_text_encoder(cfg: Any, path: Optional[str] = None):
    """``(tokenizer, encoder)`` from ``path`` (default ``cfg.pretrained``), frozen.

    ``kind=clip`` loads a ``CLIPTextModel`` (e.g. CLIP-L from Stable Diffusion 1.5),
    ``kind=t5`` a ``T5EncoderModel`` (DALL-E 3 used T5-XXL); ``kind=open_clip`` loads the
    ``CLIPTextModel`` that :func:`load_or_create_text_encoder` converted and saved;
    ``kind=world_clip`` the ``CLIPTextModel`` that ``stage=text_encoder`` converted
    (:mod:`dalle3.eval.text_encoder`).
    """
    from transformers import AutoTokenizer, CLIPTextModel, T5EncoderModel

    path = path or cfg.pretrained
    model_cls = {"clip": CLIPTextModel, "t5": T5EncoderModel, "open_clip": CLIPTextModel,
                 "world_clip": CLIPTextModel}[cfg.kind]
    sub = {"subfolder": cfg.subfolder} if cfg.subfolder and path == cfg.pretrained else {}
    tok_sub = {"subfolder": cfg.tokenizer_subfolder} if cfg.tokenizer_subfolder and path == cfg.pretrained else sub
    tokenizer = AutoTokenizer.from_pretrained(path, **tok_sub)
    tokenizer.model_max_length = cfg.max_length
    encoder = model_cls.from_pretrained(path, **sub)
    positions = getattr(encoder.config, "max_position_embeddings", None)
    if positions is not None and cfg.max_length > positions:
        from dalle3.config.validate import ConfigError

        raise ConfigError(f"ldm.text_encoder.max_length={cfg.max_length} is more than the {positions} positions of the "
                          f"encoder in {path!r}; allowed: at most {positions}, or a new ldm.text_encoder.path")
    return tokenizer, freeze(encoder)


SOURCE_FILE = "dalle3_source.json"
"What built a saved encoder folder (:func:`encoder_source`), so a stale folder is never loaded silently."


def encoder_source(cfg: Any) -> dict:
    """What :func:`load_or_create_text_encoder` builds for ``cfg``: open_clip's spec, or ``tiny``.

    The tiny encoder's sizes and seed are left out on purpose: once saved, its folder
    wins (it is the run's frozen encoder), as it always has.
    """
    if cfg.kind == "open_clip":
        return {"kind": "open_clip", "pretrained": cfg.pretrained, "layer": cfg.layer}
    return {"kind": "tiny"}


def load_or_create_text_encoder(cfg: Any):
    """The configured frozen text encoder: pretrained, or built once and saved at ``cfg.path``.

    The tiny encoder, and an open_clip text tower converted to ``CLIPTextModel``
    (:mod:`dalle3.ldm.open_clip_text`), are built on first use, saved atomically (in a
    temporary folder, then renamed, so concurrent ranks never read half a folder; the
    first rank's folder stays) and loaded from there afterwards, so every stage and the export see the same frozen
    weights. A folder built from another source fails with one line.
    """
    if cfg.pretrained and cfg.kind != "open_clip":
        return load_text_encoder(cfg)
    source = encoder_source(cfg)
    marker = os.path.join(cfg.path, SOURCE_FILE)
    if not os.path.isdir(cfg.path):
        if cfg.kind == "open_clip":
            from dalle3.ldm.open_clip_text import load_open_clip_text_encoder

            tokenizer, encoder = load_open_clip_text_encoder(cfg)
        else:
            tokenizer, encoder = build_tiny_text_encoder(cfg)
        _save_once(cfg.path, tokenizer, encoder, source)
    found = _read_json(marker)
    if found != source and (found is not None or cfg.kind == "open_clip"):  # no marker: a tiny folder of old
        from dalle3.config.validate import ConfigError

        raise ConfigError(f"ldm.text_encoder.path={cfg.path!r} holds an encoder built from {found}, not {source}; "
                          "allowed: a path of its own per encoder (or delete the folder to rebuild it)")
    return load_text_encoder(cfg, cfg.path)


def _save_once(path: str, tokenizer: Any, encoder: nn.Module, source: dict) -> None:
    """Save the encoder folder at ``path`` unless another rank saved it meanwhile."""
    with atomic_path(path, replace=False) as tmp:  # another rank's folder, if first, is identical (same source)
        tokenizer.save_pretrained(tmp)
        encoder.save_pretrained(tmp)
        with open(os.path.join(tmp, SOURCE_FILE), "w", encoding="utf-8") as f:
            json.dump(source, f)


def _read_json(path: str) -> Optional[dict]:
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f)


@torch.no_grad()
def encode_prompts(tokenizer, encoder: nn.Module, prompts: Sequence[str]) -> torch.Tensor:
    """Prompts → FloatTensor[B, max_length, D], exactly as diffusers' pipelines encode them.

    Padded to ``tokenizer.model_max_length`` and passed without an attention mask, which
    is what ``StableDiffusionPipeline.encode_prompt`` does: training on the same
    features keeps the exported pipeline faithful.
    """
    ids = tokenizer(list(prompts), padding="max_length", max_length=tokenizer.model_max_length,
                    truncation=True, return_tensors="pt").input_ids
    device = next(encoder.parameters()).device
    return encoder(ids.to(device))[0]
