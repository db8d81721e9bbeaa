"""The CoCa captioner: open_clip's ``CoCa`` built from config, plus its tokenizer.

Every size goes through the same path: an open_clip model config (a built-in one such
as ``coca_ViT-L-14``, or one built here from ``captioner.arch`` and registered with
``open_clip.add_model_config``) → ``open_clip.create_model`` (+ the optional conv stem,
:mod:`dalle3.captioner.stem`) → the open_clip 3.3.0 initialisation fix → optional
image-tower init/freeze. No Lightning, no distributed code.
"""
from __future__ import annotations

import copy
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import open_clip
import torch
from open_clip.factory import load_checkpoint, load_state_dict
from torch import nn

from dalle3.captioner.layout import WEIGHTS_FILE
from dalle3.captioner.stem import StemSpec, add_conv_stem
from dalle3.captioner.tokenizer import WordTokenizer, build_world_tokenizer
from dalle3.config.captioner import STEMS

CLIP_MEAN = open_clip.OPENAI_DATASET_MEAN
CLIP_STD = open_clip.OPENAI_DATASET_STD


@dataclass
class Captioner:
    """A built captioner: the open_clip model, its tokenizer and the model config behind it."""

    model: nn.Module
    tokenizer: Callable
    model_name: str
    "Name under which ``model_cfg`` is registered in open_clip."
    model_cfg: dict
    "The open_clip model config (JSON-serialisable)."
    stem: Optional[StemSpec] = None
    "The conv stem that replaces the patch embedding (:mod:`dalle3.captioner.stem`); None: open_clip's."


def tiny_model_config(arch: Any, vocab_size: int, context_length: int, pad_id: int = 0) -> dict:
    """An open_clip CoCa config dict from ``captioner.arch`` sizes and a vocabulary size.

    ``nonscalar_logit_scale``: DeepSpeed broadcasts parameters as byte views, which a
    0-dim ``logit_scale`` cannot give.
    """
    text = dict(context_length=context_length, vocab_size=vocab_size, width=arch.text_width,
                heads=arch.text_heads, layers=arch.text_layers, embed_cls=True, output_tokens=True,
                pad_id=pad_id)
    return {
        "embed_dim": arch.embed_dim,
        "vision_cfg": dict(image_size=arch.image_size, patch_size=arch.patch_size, width=arch.vision_width,
                           layers=arch.vision_layers, head_width=arch.vision_head_width,
                           pos_embed_type=arch.pos_embed_type,
                           attentional_pool=bool(arch.attentional_pool),
                           attn_pooler_queries=arch.attn_pooler_queries,
                           attn_pooler_heads=arch.attn_pooler_heads, output_tokens=True),
        "text_cfg": text,
        "multimodal_cfg": {**text, "layers": arch.decoder_layers, "attn_pooler_heads": arch.attn_pooler_heads},
        "custom_text": True,
        "pad_id": pad_id,
        "nonscalar_logit_scale": True,
    }


def register_model_config(name: str, model_cfg: dict) -> str:
    """Make ``name`` a model open_clip knows (``open_clip.add_model_config``); return it.

    open_clip reads the JSON when it is added, so the file lives in a temporary folder of
    this call only: concurrent ranks never race on one file, and nothing is left in /tmp
    (open_clip skips paths that no longer exist when it rescans).
    """
    with tempfile.TemporaryDirectory(prefix="dalle3_open_clip_config_") as tmp:
        path = Path(tmp) / f"{name}.json"
        text = json.dumps(model_cfg, indent=2)
        path.write_text(text)
        open_clip.add_model_config(path)
    if open_clip.get_model_config(name) != json.loads(text):
        raise RuntimeError(f"open_clip did not register model config {name!r}")
    return name


def model_config_for(cfg: Any, vocab_size: Optional[int]) -> tuple[str, dict]:
    """``(name, open_clip model config)`` for a ``captioner`` config block."""
    if cfg.model:
        model_cfg = open_clip.get_model_config(cfg.model)
        if model_cfg is None:
            raise ValueError(f"captioner.model={cfg.model!r} is not an open_clip model config; "
                             f"allowed: one of open_clip.list_models(), e.g. coca_ViT-B-32")
        model_cfg = copy.deepcopy(model_cfg)
        # DeepSpeed broadcasts parameters as byte views, which a 0-dim logit_scale cannot
        # give; open_clip's loader reshapes scalar logit scales of pretrained weights.
        model_cfg["nonscalar_logit_scale"] = True
        if cfg.context_length:
            for key in ("text_cfg", "multimodal_cfg"):
                model_cfg[key]["context_length"] = int(cfg.context_length)
        if vocab_size is not None:
            for key in ("text_cfg", "multimodal_cfg"):
                model_cfg[key]["vocab_size"] = vocab_size
        name = cfg.model if model_cfg == open_clip.get_model_config(cfg.model) else f"dalle3_{cfg.model}"
        return name, model_cfg
    return f"dalle3_coca_{cfg.name}", tiny_model_config(cfg.arch, vocab_size, int(cfg.context_length or 80))


def stem_of(cfg: Any) -> Optional[StemSpec]:
    """The conv stem of a ``captioner`` block (``arch.stem: conv``), or None (``patch``)."""
    if cfg.model:
        return None  # a named open_clip config keeps open_clip's patch embedding
    if cfg.arch.stem not in STEMS:  # build_captioner may run without validate_captioner
        raise ValueError(f"captioner.arch.stem={cfg.arch.stem!r}; allowed: {' | '.join(STEMS)}")
    if cfg.arch.stem != "conv":
        return None
    return StemSpec(tuple(int(c) for c in cfg.arch.stem_channels), str(cfg.arch.stem_norm))


def create_coca(name: str, model_cfg: dict, stem: Optional[StemSpec] = None, weights: Optional[str] = None,
                device: Any = "cpu") -> nn.Module:
    """``open_clip.create_model(name, pretrained=weights)``, with the conv stem added when ``stem`` is set.

    With a stem the weights cannot go through open_clip's loader (their patch-embedding keys
    differ), so the model is built bare, the stem added, then the same open_clip
    ``load_checkpoint`` (safetensors, or ``torch.load(weights_only=True)``, strict) fills it.
    """
    register_model_config(name, model_cfg)
    if not stem:
        return open_clip.create_model(name, pretrained=weights, device=device)
    model = add_conv_stem(open_clip.create_model(name), stem)
    if weights:
        if not os.path.isfile(weights):
            raise ValueError(f"pretrained={weights!r} is not a file; a model with a conv stem loads only its own "
                             "exported weights (.safetensors)")
        load_checkpoint(model, weights, strict=True, weights_only=True)
    return model.to(device)


def build_tokenizer(cfg: Any) -> Callable:
    """``world``: :class:`WordTokenizer`; ``open_clip``: the model's own tokenizer."""
    if cfg.tokenizer == "world":
        return build_world_tokenizer(int(cfg.context_length or 80), int(cfg.phrases))
    if cfg.tokenizer == "open_clip":
        if not cfg.model:
            raise ValueError("captioner.tokenizer=open_clip needs captioner.model (an open_clip model name)")
        return open_clip.get_tokenizer(cfg.model, context_length=cfg.context_length)
    raise ValueError(f"captioner.tokenizer={cfg.tokenizer!r}; allowed: world | open_clip")


def pad_token_id(tokenizer: Any) -> int:
    """The id ``tokenizer`` pads captions with: the one place this is decided.

    :class:`WordTokenizer` has a ``pad_token_id``; open_clip's BPE ``SimpleTokenizer`` has
    none and pads with zeros, so a tokenizer without the attribute pads with 0.
    """
    return getattr(tokenizer, "pad_token_id", 0)


def build_captioner(cfg: Any, pretrained: Optional[str] = None) -> Captioner:
    """Build the CoCa captioner described by a ``captioner`` config block.

    Args:
        cfg: ``CaptionerConfig`` (dataclass or OmegaConf node).
        pretrained: whole-model weights (an export folder, a ``.safetensors`` file or an
            open_clip tag); default ``cfg.pretrained``.
    """
    tokenizer = build_tokenizer(cfg)
    vocab = tokenizer.vocab_size if isinstance(tokenizer, WordTokenizer) else None
    name, model_cfg = model_config_for(cfg, vocab)
    stem = stem_of(cfg)
    weights = resolve_weights(pretrained or cfg.pretrained)
    model = create_coca(name, model_cfg, stem, weights)
    if not weights:
        init_text_decoder(model.text_decoder)
    if cfg.image_init and not weights:
        load_image_tower(model, cfg.image_init)
    if cfg.freeze_image:
        freeze_image_trunk(model.visual)
    if cfg.grad_checkpointing:
        model.set_grad_checkpointing(True)
    check_finite(model)
    return Captioner(model, tokenizer, name, model_cfg, stem)


def plain_model(captioner: Captioner, state_dict: dict[str, torch.Tensor]) -> nn.Module:
    """A fresh, unwrapped copy of ``captioner.model``'s architecture holding ``state_dict``."""
    model = create_coca(captioner.model_name, captioner.model_cfg, captioner.stem)
    model.load_state_dict(state_dict)
    return model.eval()


def resolve_weights(spec: Optional[str]) -> Optional[str]:
    """An export folder → its safetensors file; files and tags pass through."""
    if not spec:
        return None
    path = Path(spec)
    if path.is_dir():
        return str(path / WEIGHTS_FILE)
    return str(spec)


def init_text_decoder(decoder: nn.Module) -> None:
    """Initialise the multimodal decoder as open_clip intends but never does (open_clip 3.3.0).

    ``MultimodalTransformer.text_projection`` is created with ``torch.empty`` and its
    ``init_parameters()`` is never called (and raises ``AttributeError``: it refers to
    ``self.transformer``), so the projection can start as NaN or garbage. This is that
    method with the attribute fixed, using the CLIP text-tower scheme.
    """
    width, layers = decoder.width, decoder.layers
    proj_std = (width ** -0.5) * ((2 * layers) ** -0.5)
    attn_std, fc_std = width ** -0.5, (2 * width) ** -0.5
    for block in [*decoder.resblocks, *decoder.cross_attn]:
        nn.init.normal_(block.attn.in_proj_weight, std=attn_std)
        nn.init.normal_(block.attn.out_proj.weight, std=proj_std)
        nn.init.normal_(block.mlp.c_fc.weight, std=fc_std)
        nn.init.normal_(block.mlp.c_proj.weight, std=proj_std)
    nn.init.normal_(decoder.text_projection, std=width ** -0.5)


def check_finite(model: nn.Module) -> None:
    """Fail loudly on a NaN/inf parameter (the symptom of uninitialised memory)."""
    bad = [n for n, p in model.named_parameters() if not torch.isfinite(p).all()]
    if bad:
        raise RuntimeError(f"non-finite parameters after building the captioner: {bad[:5]}")


def load_image_tower(model: nn.Module, spec: str) -> None:
    """Initialise ``model.visual`` from a CLIP: a checkpoint file or ``model_name:tag``.

    A CLIP image tower has no attentional pooler, so those CoCa weights (and a
    differently shaped projection) keep their fresh init; everything else must match.
    """
    if os.path.isfile(spec):
        state = load_state_dict(spec, weights_only=True)  # safetensors, or torch.load(weights_only=True)
    else:
        clip_name, _, tag = spec.partition(":")
        state = open_clip.create_model(clip_name, pretrained=tag or None).state_dict()
    visual = {k.removeprefix("visual."): v for k, v in state.items() if k.startswith("visual.")} or state
    own = model.visual.state_dict()
    usable = {k: v for k, v in visual.items() if k in own and own[k].shape == v.shape}
    missing_trunk = [k for k in own if k not in usable and not k.startswith(("attn_pool", "ln_post", "proj"))]
    if missing_trunk:
        raise ValueError(f"captioner.image_init={spec!r} does not fit the image tower: missing {missing_trunk[:5]}")
    model.visual.load_state_dict(usable, strict=False)


def freeze_image_trunk(visual: nn.Module) -> None:
    """Freeze the patch embedding and ViT blocks; keep the attentional pooler trainable."""
    for name, param in visual.named_parameters():
        if not name.startswith(("attn_pool", "ln_post", "proj")):
            param.requires_grad_(False)


def normalize_images(images: torch.Tensor) -> torch.Tensor:
    """[0, 1] RGB (the data loader's output) → CLIP-normalised model input."""
    mean = images.new_tensor(CLIP_MEAN).view(1, 3, 1, 1)
    std = images.new_tensor(CLIP_STD).view(1, 3, 1, 1)
    return (images - mean) / std


def model_image_size(model: nn.Module) -> int:
    """Side of the square images ``model``'s image tower takes (open_clip ``visual.image_size``)."""
    size = getattr(getattr(model, "visual", None), "image_size", None)
    if size is None:
        raise ValueError(f"{type(model).__name__} has no visual.image_size; not an open_clip CLIP/CoCa model")
    return int(size[0] if isinstance(size, (tuple, list)) else size)


def to_model_input(images: torch.Tensor, size: int) -> torch.Tensor:
    """[0, 1] RGB at any size → CLIP-normalised input at the tower's ``size`` (bicubic, antialiased).

    The world is rendered at 64 px but a tower may read it at another size (a real CLIP
    reads 224 px; a tiny tower may be configured for any size).
    """
    if images.shape[-1] != size or images.shape[-2] != size:
        images = torch.nn.functional.interpolate(images, size=size, mode="bicubic", antialias=True).clamp(0, 1)
    return normalize_images(images)
