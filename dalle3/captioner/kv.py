"""Incremental (KV-cached) forward of an open_clip CoCa's text side, on its own weights.

In CoCa the multimodal decoder reads the *output* of the unimodal text tower, and both
are causal, so appending one token only needs that token's row through every layer of
both stacks, given the keys and values of the earlier tokens. This module runs exactly
open_clip's blocks (their LayerNorms, LayerScales and MLPs are called as modules) and
replaces only ``nn.MultiheadAttention``'s call by the same math on its own
``in_proj_weight``/``out_proj`` with cached keys and values. Cross-attention keys and
values of the image tokens are computed once per image.

It matches ``CoCa.forward`` token for token, including open_clip's legacy padding mask
of the text tower (with ``embed_cls`` and ``correct_cls_mask=False`` the key mask is
shifted by one: key ``j`` is masked when token ``j-1`` is the pad id).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn


def check_supported(model: nn.Module) -> None:
    """Raise ``NotImplementedError`` for CoCa variants this decoder does not reproduce."""
    text, dec = getattr(model, "text", None), getattr(model, "text_decoder", None)
    if text is None or dec is None or not hasattr(text, "token_embedding"):
        raise NotImplementedError("needs an open_clip CoCa with its own TextTransformer (HF text towers are not supported)")
    if text.attn_mask is None:
        raise NotImplementedError("a bidirectional text tower (no_causal_mask) cannot be decoded incrementally")
    for block in [*text.transformer.resblocks, *dec.resblocks, *dec.cross_attn]:
        attn = getattr(block, "attn", None)
        if not isinstance(attn, nn.MultiheadAttention) or not attn._qkv_same_embed_dim or attn.bias_k is not None \
                or attn.add_zero_attn or not attn.batch_first:
            raise NotImplementedError(f"unsupported attention block {type(block).__name__}/{type(attn).__name__}")


def _heads(x: torch.Tensor, n: int) -> torch.Tensor:
    b, t, d = x.shape
    return x.view(b, t, n, d // n).transpose(1, 2)  # [B, H, T, d]


def _merge(x: torch.Tensor) -> torch.Tensor:
    b, h, t, d = x.shape
    return x.transpose(1, 2).reshape(b, t, h * d)


@dataclass
class DecodeState:
    """Per-row caches of a batch being decoded; all rows share one length."""

    text_k: list[torch.Tensor]
    text_v: list[torch.Tensor]
    dec_k: list[torch.Tensor]
    dec_v: list[torch.Tensor]
    key_valid: torch.Tensor
    "[B, T] bool: text-tower keys the padding mask lets through."
    cross: list[tuple[torch.Tensor, torch.Tensor]] = field(default_factory=list)
    "Per decoder layer: cross-attention keys and values of the image tokens."
    last_token: Optional[torch.Tensor] = None
    "[B] the previous token (the legacy padding mask of position t looks at token t-1)."
    length: int = 0
    any_masked: bool = False
    "Some cached key is masked (a pad token was seen): masks are then needed on every step."

    def select(self, rows: torch.Tensor) -> None:
        """Keep (or reorder, or repeat) rows, e.g. drop finished captions or follow beams."""
        for caches in (self.text_k, self.text_v, self.dec_k, self.dec_v):
            caches[:] = [c.index_select(0, rows) for c in caches]
        self.cross = [(k.index_select(0, rows), v.index_select(0, rows)) for k, v in self.cross]
        self.key_valid = self.key_valid.index_select(0, rows)
        if self.last_token is not None:
            self.last_token = self.last_token.index_select(0, rows)


class CocaKV:
    """KV-cached forward of a CoCa's text tower + multimodal decoder.

    Args:
        model: an open_clip ``CoCa`` (any config with default attention blocks).
    """

    def __init__(self, model: nn.Module):
        check_supported(model)
        self.model, self.text, self.dec = model, model.text, model.text_decoder
        self.legacy_mask = self.text.cls_emb is not None and not self.text.correct_cls_mask
        self.pad_mask = self.text.cls_emb is not None
        self.max_len = self.text.context_length

    @property
    def vocab_size(self) -> int:
        return self.dec.text_projection.shape[1]

    def encode_images(self, images: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Image tokens → per decoder layer cross-attention (K, V), each [B, H, N, d]."""
        _, image_embs = self.model._encode_image(images)
        out = []
        for block in self.dec.cross_attn:
            attn = block.attn
            kv = block.ln_1_kv(image_embs)
            w_k, w_v = attn.in_proj_weight.chunk(3)[1:]
            b_k, b_v = attn.in_proj_bias.chunk(3)[1:] if attn.in_proj_bias is not None else (None, None)
            out.append((_heads(F.linear(kv, w_k, b_k), attn.num_heads), _heads(F.linear(kv, w_v, b_v), attn.num_heads)))
        return out

    def new_state(self, cross: list, max_len: int) -> DecodeState:
        """Empty caches for ``max_len`` tokens of the batch whose image K/V is ``cross``."""
        if max_len > self.max_len:
            raise ValueError(f"{max_len} tokens exceed the model's context length {self.max_len}")
        k0 = cross[0][0]
        b, dtype, device = k0.shape[0], k0.dtype, k0.device

        def caches(blocks):
            return [torch.empty(b, blk.attn.num_heads, max_len, blk.attn.head_dim, dtype=dtype, device=device)
                    for blk in blocks]

        text_blocks, dec_blocks = self.text.transformer.resblocks, self.dec.resblocks
        return DecodeState(caches(text_blocks), caches(text_blocks), caches(dec_blocks), caches(dec_blocks),
                           torch.ones(b, max_len, dtype=torch.bool, device=device), cross)

    def _new_keys_valid(self, tokens: torch.Tensor, state: DecodeState) -> Optional[torch.Tensor]:
        """Padding-mask validity of the new positions, or None when nothing is masked."""
        if not self.pad_mask:
            return None
        pad = self.text.pad_id
        if self.legacy_mask:  # key j looks at token j-1; key 0 is always valid
            prev = tokens.new_full((tokens.shape[0], 1), -1) if state.last_token is None else state.last_token[:, None]
            return torch.cat([prev, tokens[:, :-1]], dim=1) != pad
        return tokens != pad

    @staticmethod
    def _attend(block: nn.Module, h: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
                pos: int, mask: Optional[torch.Tensor]) -> torch.Tensor:
        """Causal self-attention of new rows ``h`` [B, Tn, D] over cached + new keys."""
        attn, tn = block.attn, h.shape[1]
        q, k, v = F.linear(h, attn.in_proj_weight, attn.in_proj_bias).chunk(3, dim=-1)
        k_cache[:, :, pos:pos + tn] = _heads(k, attn.num_heads)
        v_cache[:, :, pos:pos + tn] = _heads(v, attn.num_heads)
        out = F.scaled_dot_product_attention(_heads(q, attn.num_heads), k_cache[:, :, :pos + tn],
                                             v_cache[:, :, :pos + tn], attn_mask=mask)
        return attn.out_proj(_merge(out))

    def _masks(self, tokens: torch.Tensor, state: DecodeState) -> tuple[Optional[torch.Tensor], Optional[torch.Tensor]]:
        """Boolean masks [B|1, 1, Tn, pos+Tn] (True = attend) for the text tower and the decoder."""
        pos, tn = state.length, tokens.shape[1]
        valid = self._new_keys_valid(tokens, state)
        if valid is not None:
            state.key_valid[:, pos:pos + tn] = valid
            state.any_masked = state.any_masked or not bool(valid.all())
        causal = None
        if tn > 1:
            causal = torch.ones(tn, pos + tn, dtype=torch.bool, device=tokens.device).tril(pos)[None, None]
        if not state.any_masked:
            return causal, causal
        text_mask = state.key_valid[:, None, None, :pos + tn]
        return (text_mask if causal is None else text_mask & causal), causal

    @torch.inference_mode()
    def forward(self, tokens: torch.Tensor, state: DecodeState) -> torch.Tensor:
        """Append ``tokens`` [B, Tn] to every row; return their next-token logits [B, Tn, V]."""
        pos, tn = state.length, tokens.shape[1]
        text_mask, causal = self._masks(tokens, state)
        x = self.text.token_embedding(tokens).to(state.text_k[0].dtype)
        x = x + self.text.positional_embedding[pos:pos + tn].to(x.dtype)
        for i, block in enumerate(self.text.transformer.resblocks):
            x = x + block.ls_1(self._attend(block, block.ln_1(x), state.text_k[i], state.text_v[i], pos, text_mask))
            x = x + block.ls_2(block.mlp(block.ln_2(x)))
        if self.text.cls_emb is None:  # without a CLS token the tower's LayerNorm applies to the tokens
            x = self.text.ln_final(x)
        for i, (block, cross) in enumerate(zip(self.dec.resblocks, self.dec.cross_attn)):
            x = x + block.ls_1(self._attend(block, block.ln_1(x), state.dec_k[i], state.dec_v[i], pos, causal))
            x = x + block.ls_2(block.mlp(block.ln_2(x)))
            x = x + cross.ls_1(self._cross(cross, cross.ln_1(x), *state.cross[i]))
            x = x + cross.ls_2(cross.mlp(cross.ln_2(x)))
        state.length = pos + tn
        state.last_token = tokens[:, -1]
        return self.dec.ln_final(x) @ self.dec.text_projection

    @staticmethod
    def _cross(block: nn.Module, h: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        attn = block.attn
        w_q = attn.in_proj_weight.chunk(3)[0]
        b_q = attn.in_proj_bias.chunk(3)[0] if attn.in_proj_bias is not None else None
        out = F.scaled_dot_product_attention(_heads(F.linear(h, w_q, b_q), attn.num_heads), k, v)
        return attn.out_proj(_merge(out))
