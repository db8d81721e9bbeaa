"""An open_clip CLIP text tower as a transformers ``CLIPTextModel`` (``ldm.text_encoder.kind=open_clip``).

Stable Diffusion 2 conditions on OpenCLIP ViT-H/14's text tower. Converting that tower
into transformers' ``CLIPTextModel`` (and open_clip's BPE into a ``CLIPTokenizer``)
once means training, sampling and the diffusers export all run on the same classes
as ``kind=clip``; diffusers' SD2 ``text_encoder`` folder is exactly such a conversion.

The key mapping is the one of diffusers' ``convert_open_clip_checkpoint``, written here
over modules rather than checkpoint keys (that function needs a hub config and lives
in a deprecated module): token and positional embeddings, each block's ``in_proj``
split into q/k/v, ``out_proj``, ``ln_1``/``ln_2`` → ``layer_norm1``/``layer_norm2``,
``mlp.c_fc``/``c_proj`` → ``fc1``/``fc2``, ``ln_final`` → ``final_layer_norm``.

Features the U-Net cross-attends to: ``ln_final`` of the chosen layer's output, per token.
``layer=last`` is open_clip's own ``ln_final(transformer(x))`` (what SD1 does with
OpenAI CLIP); ``layer=penultimate`` drops the last block, which is what Stable
Diffusion 2 trained on (``ln_final`` of the second-to-last block; diffusers' SD2
folder likewise holds 23 of ViT-H's 24 blocks).

No Lightning or ``torch.distributed`` here.
"""
from __future__ import annotations

import gzip
from typing import Any, Optional

from torch import nn

from dalle3.config.ldm import OPEN_CLIP_LAYERS
from dalle3.config.validate import ConfigError

_SCHEMAS = ("hf-hub:", "local-dir:")
_BOS, _EOS = "<|startoftext|>", "<|endoftext|>"


def parse_pretrained(spec: str) -> tuple[str, Optional[str]]:
    """``"ViT-H-14:laion2b_s32b_b79k"`` → ``("ViT-H-14", "laion2b_s32b_b79k")``.

    The part after the first ``:`` is an open_clip pretrained tag or a local weights file;
    ``hf-hub:org/repo`` and ``local-dir:/path`` are open_clip model names of their own.
    """
    if spec.startswith(_SCHEMAS):
        return spec, None
    name, _, weights = spec.partition(":")
    if not name or not weights:
        raise ConfigError(f"ldm.text_encoder.pretrained={spec!r}; allowed: MODEL:TAG_OR_FILE "
                          "(e.g. ViT-H-14:laion2b_s32b_b79k), hf-hub:org/repo or local-dir:/path")
    return name, weights


def bpe_tokenizer(max_length: int):
    """open_clip's CLIP BPE (the ``bpe_simple_vocab_16e6.txt.gz`` it ships) as a transformers ``CLIPTokenizer``.

    Built offline from that file, with the vocabulary laid out exactly as open_clip's
    ``SimpleTokenizer`` lays it out, so ids agree. Padding is ``!`` (id 0), as open_clip
    pads and as diffusers' SD2 tokenizer does; as there, a literal ``!`` in a prompt
    then also becomes id 0 (open_clip's own tokenizer gives it 256).
    """
    from open_clip.tokenizer import bytes_to_unicode, default_bpe
    from transformers import CLIPTokenizer

    with gzip.open(default_bpe()) as f:
        lines = f.read().decode("utf-8").split("\n")
    merges = [tuple(m.split()) for m in lines[1:49152 - 256 - 2 + 1]]  # the slice SimpleTokenizer takes
    vocab = list(bytes_to_unicode().values())
    vocab += [v + "</w>" for v in vocab] + ["".join(m) for m in merges] + [_BOS, _EOS]
    return CLIPTokenizer(vocab={tok: i for i, tok in enumerate(vocab)}, merges=merges, unk_token=_EOS,
                         bos_token=_BOS, eos_token=_EOS, pad_token="!", model_max_length=max_length)


def _text_tower(model: nn.Module, spec: str) -> nn.Module:
    """The module holding the text transformer: the CLIP itself, or ``model.text`` (CustomTextCLIP)."""
    tower = getattr(model, "text", model)
    why = None
    if not all(hasattr(tower, a) for a in ("token_embedding", "positional_embedding", "transformer", "ln_final")):
        why = "its text tower is not open_clip's TextTransformer (e.g. a Hugging Face text model)"
    elif getattr(tower, "attn_mask", None) is None:
        why = "its text tower is not causal (no_causal_mask)"
    elif getattr(tower, "cls_emb", None) is not None:
        why = "its text tower appends a class token (embed_cls)"
    else:
        for block in tower.transformer.resblocks:
            if not isinstance(block.attn, nn.MultiheadAttention) or not isinstance(block.ls_1, nn.Identity) \
                    or not isinstance(block.ls_2, nn.Identity) or hasattr(block, "ln_1_kv"):
                why = "its text blocks use layer scale or a custom attention block"
                break
    if why:
        raise ConfigError(f"ldm.text_encoder.pretrained={spec!r} cannot be converted: {why}; allowed: "
                          "open_clip CLIP models with a plain causal text transformer (ViT-B-32, ViT-H-14, ...)")
    return tower


def _activation(block: nn.Module, spec: str) -> str:
    from open_clip.transformer import QuickGELU

    act = block.mlp.gelu
    if isinstance(act, QuickGELU):
        return "quick_gelu"
    if isinstance(act, nn.GELU) and act.approximate == "none":
        return "gelu"
    raise ConfigError(f"ldm.text_encoder.pretrained={spec!r}: text activation {act!r}; allowed: GELU | QuickGELU")


def convert_text_tower(model: nn.Module, layer: str = "last", spec: str = "?"):
    """open_clip CLIP model → ``CLIPTextModel`` whose ``last_hidden_state`` is ``ln_final`` of ``layer``.

    Args:
        model: an open_clip ``CLIP`` or ``CustomTextCLIP``.
        layer: ``last`` | ``penultimate`` (drops the last block, Stable Diffusion 2's choice).
        spec: the ``pretrained`` string, for error messages.
    """
    from transformers import CLIPTextConfig, CLIPTextModel

    if layer not in OPEN_CLIP_LAYERS:
        raise ConfigError(f"ldm.text_encoder.layer={layer!r}; allowed: {' | '.join(OPEN_CLIP_LAYERS)}")
    tower = _text_tower(model, spec)
    blocks = list(tower.transformer.resblocks)[:-1 if layer == "penultimate" else None]
    width = tower.token_embedding.embedding_dim
    config = CLIPTextConfig(
        vocab_size=tower.token_embedding.num_embeddings, hidden_size=width,
        intermediate_size=blocks[0].mlp.c_fc.out_features, num_hidden_layers=len(blocks),
        num_attention_heads=blocks[0].attn.num_heads, max_position_embeddings=tower.positional_embedding.shape[0],
        hidden_act=_activation(blocks[0], spec), layer_norm_eps=tower.ln_final.eps, projection_dim=width,
        pad_token_id=0, bos_token_id=tower.token_embedding.num_embeddings - 2,
        eos_token_id=tower.token_embedding.num_embeddings - 1)
    state = {"embeddings.token_embedding.weight": tower.token_embedding.weight,
             "embeddings.position_embedding.weight": tower.positional_embedding,
             "final_layer_norm.weight": tower.ln_final.weight, "final_layer_norm.bias": tower.ln_final.bias}
    for i, block in enumerate(blocks):
        pre = f"encoder.layers.{i}."
        for kind in ("weight", "bias"):
            q, k, v = getattr(block.attn, f"in_proj_{kind}").chunk(3)
            state.update({pre + f"self_attn.q_proj.{kind}": q, pre + f"self_attn.k_proj.{kind}": k,
                          pre + f"self_attn.v_proj.{kind}": v,
                          pre + f"self_attn.out_proj.{kind}": getattr(block.attn.out_proj, kind),
                          pre + f"layer_norm1.{kind}": getattr(block.ln_1, kind),
                          pre + f"layer_norm2.{kind}": getattr(block.ln_2, kind),
                          pre + f"mlp.fc1.{kind}": getattr(block.mlp.c_fc, kind),
                          pre + f"mlp.fc2.{kind}": getattr(block.mlp.c_proj, kind)})
    encoder = CLIPTextModel(config)
    # transformers 4 nests the modules under `text_model`, transformers 5 does not
    target = getattr(encoder, "text_model", encoder)
    missing, unexpected = target.load_state_dict({k: v.detach().float().clone() for k, v in state.items()},
                                                 strict=False)
    if unexpected or set(missing) - {"embeddings.position_ids"}:  # only the position-id buffer may be left
        raise RuntimeError(f"open_clip conversion: unset {missing[:4]}, unknown {unexpected[:4]}")
    return encoder


def load_open_clip_text_encoder(cfg: Any):
    """``(CLIPTokenizer, CLIPTextModel)`` converted from ``cfg.pretrained`` (``MODEL:TAG_OR_FILE``).

    Args:
        cfg: a ``TextEncoderConfig`` with ``kind=open_clip`` (``layer``, ``max_length`` used).
    """
    import open_clip

    name, weights = parse_pretrained(cfg.pretrained)
    tokenizer = open_clip.get_tokenizer(name)
    if type(tokenizer).__name__ != "SimpleTokenizer" or tokenizer.vocab_size != 49408:
        raise ConfigError(f"ldm.text_encoder.pretrained={cfg.pretrained!r} uses tokenizer {type(tokenizer).__name__}; "
                          "allowed: open_clip models with the CLIP BPE tokenizer (SimpleTokenizer)")
    model = open_clip.create_model(name, pretrained=weights, precision="fp32", device="cpu",
                                   require_pretrained=weights is not None)
    encoder = convert_text_tower(model, cfg.layer, cfg.pretrained)
    if encoder.config.vocab_size != tokenizer.vocab_size:
        raise ConfigError(f"ldm.text_encoder.pretrained={cfg.pretrained!r} has {encoder.config.vocab_size} token "
                          f"embeddings; allowed: {tokenizer.vocab_size} (the CLIP BPE's vocabulary)")
    if cfg.max_length > encoder.config.max_position_embeddings:
        raise ConfigError(f"ldm.text_encoder.max_length={cfg.max_length}; allowed: at most the model's "
                          f"context length {encoder.config.max_position_embeddings}")
    return bpe_tokenizer(cfg.max_length), encoder
