"""The latent diffusion model's parts as plain diffusers/transformers modules.

No Lightning, DeepSpeed or ``torch.distributed`` here. Every builder takes the typed
config block of its part (:mod:`dalle3.config.ldm`): a part with ``pretrained`` set is
loaded from that folder (or hub name), otherwise it is built from the size fields.
``tiny`` and Stable-Diffusion-sized presets therefore run the very same code.

The tiny text encoder is a randomly initialised, frozen CLIP text transformer over a
word-level vocabulary of the synthetic world. Random frozen features are enough for
the U-Net's cross-attention to tell "red" from "blue"; what matters is that they are
fixed, which is why :func:`load_or_create_text_encoder` saves them once and reloads.
"""
from __future__ import annotations

import json
import os
import random
import re
import shutil
from dataclasses import dataclass
from typing import Any, Iterable, Optional, Sequence

import torch
from torch import nn

SPECIAL_TOKENS = ("<pad>", "<unk>", "<bos>", "<eos>")
"Ids 0..3 of the word-level tokenizer, in this order."
_WORD_RE = re.compile(r"\w+|[^\w\s]+")


# --------------------------------------------------------------------------- text
def world_vocabulary(n_scenes: int = 3000, seed: int = 0) -> list[str]:
    """Every word the synthetic world's captions use (lower case, sorted).

    Read off captions of ``n_scenes`` sampled scenes rather than a hand list, so the
    vocabulary follows the caption templates. Tokens with digits (alt-text file-name
    noise such as ``img_4711``) are left to ``<unk>``.
    """
    from dalle3.config.schema import WorldConfig
    from dalle3.world.captions import make_captions
    from dalle3.world.scene import sample_scene

    cfg = WorldConfig(alt_colour_rate=0.5)
    rng = random.Random(seed)
    words: set[str] = set()
    for _ in range(n_scenes):
        for text in make_captions(sample_scene(rng, cfg), rng, cfg).values():
            words.update(w for w in _WORD_RE.findall(text.lower()) if not any(c.isdigit() for c in w))
    return sorted(words)


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
        words: vocabulary (default: :func:`world_vocabulary`).
    """
    from transformers import CLIPTextConfig, CLIPTextModel

    tokenizer = build_word_tokenizer(world_vocabulary() if words is None else words, cfg.max_length)
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
    ``CLIPTextModel`` that :func:`load_or_create_text_encoder` converted and saved.
    """
    from transformers import AutoTokenizer, CLIPTextModel, T5EncoderModel

    path = path or cfg.pretrained
    model_cls = {"clip": CLIPTextModel, "t5": T5EncoderModel, "open_clip": CLIPTextModel}[cfg.kind]
    sub = {"subfolder": cfg.subfolder} if cfg.subfolder and path == cfg.pretrained else {}
    tok_sub = {"subfolder": cfg.tokenizer_subfolder} if cfg.tokenizer_subfolder and path == cfg.pretrained else sub
    tokenizer = AutoTokenizer.from_pretrained(path, **tok_sub)
    tokenizer.model_max_length = cfg.max_length
    return tokenizer, freeze(model_cls.from_pretrained(path, **sub))


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
    temporary folder, then renamed, so concurrent ranks never read half a folder) and
    loaded from there afterwards, so every stage and the export see the same frozen
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
    tmp = f"{path}.tmp-{os.getpid()}"
    tokenizer.save_pretrained(tmp)
    encoder.save_pretrained(tmp)
    with open(os.path.join(tmp, SOURCE_FILE), "w", encoding="utf-8") as f:
        json.dump(source, f)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    try:
        os.rename(tmp, path)
    except OSError:  # another rank won the race; its folder is identical (same source)
        shutil.rmtree(tmp, ignore_errors=True)


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


def freeze(module: nn.Module) -> nn.Module:
    """Eval mode, no gradients: the text encoder and VAE are never trained by the ldm stage."""
    module.eval().requires_grad_(False)
    return module


# --------------------------------------------------------------------------- image parts
def build_vae(cfg: Any, image_size: int):
    """A fresh ``AutoencoderKL`` from the size fields of a ``VAEConfig`` (the vae stage)."""
    from diffusers import AutoencoderKL

    n = len(cfg.block_out_channels)
    return AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * n,
                         up_block_types=("UpDecoderBlock2D",) * n, block_out_channels=tuple(cfg.block_out_channels),
                         layers_per_block=cfg.layers_per_block, latent_channels=cfg.latent_channels,
                         norm_num_groups=cfg.norm_num_groups, sample_size=image_size)


def load_vae(cfg: Any):
    """The pretrained (or vae-stage) ``AutoencoderKL`` of ``cfg.pretrained``, frozen."""
    from diffusers import AutoencoderKL

    if not cfg.pretrained:
        raise ValueError("ldm.vae.pretrained is not set: run the vae stage first or point it at a VAE folder")
    sub = {"subfolder": cfg.subfolder} if cfg.subfolder else {}
    return freeze(AutoencoderKL.from_pretrained(cfg.pretrained, **sub))


def vae_downsample(vae: nn.Module) -> int:
    """Pixels per latent pixel (8 for Stable Diffusion's VAE, 4 for the tiny one)."""
    return 2 ** (len(vae.config.block_out_channels) - 1)


def build_unet(cfg: Any, sample_size: int, in_channels: int, cross_attention_dim: int):
    """The denoising ``UNet2DConditionModel``: loaded if ``cfg.pretrained``, else built.

    Args:
        cfg: a ``UNetConfig``.
        sample_size: latent side (image side / VAE downsampling).
        in_channels: latent channels (the VAE's).
        cross_attention_dim: the text encoder's hidden size.
    """
    from diffusers import UNet2DConditionModel

    if cfg.pretrained:
        sub = {"subfolder": cfg.subfolder} if cfg.subfolder else {}
        unet = UNet2DConditionModel.from_pretrained(cfg.pretrained, **sub)
        if unet.config.cross_attention_dim != cross_attention_dim:
            raise ValueError(f"ldm.unet.pretrained has cross_attention_dim={unet.config.cross_attention_dim} but "
                             f"the text encoder's width is {cross_attention_dim}")
        return unet
    return UNet2DConditionModel(
        sample_size=sample_size, in_channels=in_channels, out_channels=in_channels,
        down_block_types=tuple(cfg.down_block_types), up_block_types=tuple(cfg.up_block_types),
        block_out_channels=tuple(cfg.block_out_channels), layers_per_block=cfg.layers_per_block,
        cross_attention_dim=cross_attention_dim, attention_head_dim=cfg.attention_head_dim,
        norm_num_groups=cfg.norm_num_groups)


# --------------------------------------------------------------------------- schedulers
def build_noise_scheduler(cfg: Any):
    """DDPM training schedule of a ``NoiseConfig`` (its ``prediction_type`` sets the target)."""
    from diffusers import DDPMScheduler

    return DDPMScheduler(num_train_timesteps=cfg.num_train_timesteps, beta_schedule=cfg.beta_schedule,
                         beta_start=cfg.beta_start, beta_end=cfg.beta_end, prediction_type=cfg.prediction_type,
                         clip_sample=False)


def build_sampler(cfg: Any, name: Optional[str] = None):
    """The sampling scheduler (``ddim`` or ``dpm``: DPM-Solver++), same betas as training."""
    from diffusers import DDIMScheduler, DPMSolverMultistepScheduler

    name = name or cfg.sampler
    common = dict(num_train_timesteps=cfg.num_train_timesteps, beta_schedule=cfg.beta_schedule,
                  beta_start=cfg.beta_start, beta_end=cfg.beta_end, prediction_type=cfg.prediction_type)
    if name == "ddim":
        return DDIMScheduler(clip_sample=False, set_alpha_to_one=False, steps_offset=1, **common)
    if name == "dpm":
        return DPMSolverMultistepScheduler(algorithm_type="dpmsolver++", **common)
    raise ValueError(f"sampler {name!r}; allowed: ddim | dpm")


# --------------------------------------------------------------------------- all parts
@dataclass
class LDMParts:
    """Everything a text-to-image step needs; only ``unet`` is trained."""

    tokenizer: Any
    text_encoder: nn.Module
    vae: nn.Module
    unet: nn.Module
    noise_scheduler: Any


def text_width(encoder: nn.Module) -> int:
    """Hidden size of a CLIP (``hidden_size``) or T5 (``d_model``) encoder."""
    return getattr(encoder.config, "d_model", None) or encoder.config.hidden_size


def build_parts(cfg: Any, vae: Optional[nn.Module] = None) -> LDMParts:
    """All parts of an ``LDMConfig``: text encoder and VAE loaded (frozen), U-Net built or loaded.

    Args:
        cfg: the ``ldm`` block.
        vae: use this VAE instead of loading ``cfg.vae.pretrained`` (tests, the vae stage).
    """
    tokenizer, text_encoder = load_or_create_text_encoder(cfg.text_encoder)
    vae = freeze(vae) if vae is not None else load_vae(cfg.vae)
    side = cfg.image_size // vae_downsample(vae)
    unet = build_unet(cfg.unet, side, vae.config.latent_channels, text_width(text_encoder))
    return LDMParts(tokenizer, text_encoder, vae, unet, build_noise_scheduler(cfg.noise))
