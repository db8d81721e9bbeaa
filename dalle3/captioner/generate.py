"""Batched caption decoding on open_clip CoCa weights: greedy, beam search, sampling.

Built on :class:`dalle3.captioner.kv.CocaKV`, so each new token costs one row through
the text tower and the decoder (open_clip's ``CoCa.generate`` re-runs both over the
whole prefix every step), and the image is encoded once. Captions that have ended are
removed from the batch (greedy/sampling), and images whose beams are all finished are
removed (beam search), so finished captions stop costing compute.

Token conventions follow open_clip: outputs start with the start token, end with the
end token (unless ``max_new_tokens`` ran out) and are padded with ``pad_id``.
"""
from __future__ import annotations

from typing import Any, Callable, Optional, Sequence

import torch
from torch import nn

from dalle3.captioner.beam import decode_beam
from dalle3.captioner.decoding import LogitsProcessor, SpecialIds, new_token_budget, prefill, seen_tokens
from dalle3.captioner.kv import CocaKV
from dalle3.captioner.model import model_image_size, to_model_input
from dalle3.config.captioner import CaptionerDecodeConfig
from dalle3.config.convert import to_dataclass


class DecodeOptions(CaptionerDecodeConfig):
    """The decoding knobs: ``CaptionerDecodeConfig`` itself (its fields and defaults), plus
    :meth:`from_config`. Every decoder here takes either class."""

    @classmethod
    def from_config(cls, cfg: Any, **overrides: Any) -> "DecodeOptions":
        """From a ``decode`` config block (dataclass, OmegaConf node or dict); ``overrides`` win."""
        return to_dataclass(cls, cfg, **overrides)


def warp_and_sample(logits: torch.Tensor, opts: CaptionerDecodeConfig,
                    generator: Optional[torch.Generator]) -> torch.Tensor:
    """Temperature, then top-k, then nucleus (HF order); draw one token per row."""
    logits = logits / max(opts.temperature, 1e-6)
    if opts.top_k and opts.top_k < logits.shape[-1]:
        kth = logits.topk(opts.top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if opts.top_p < 1.0:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        cum = sorted_logits.softmax(-1).cumsum(-1)
        drop = cum - sorted_logits.softmax(-1) > opts.top_p  # keep the token that crosses top_p
        logits = logits.masked_fill(drop.scatter(1, order, drop), float("-inf"))
    return torch.multinomial(logits.softmax(-1), 1, generator=generator).squeeze(1)


@torch.inference_mode()
def decode_greedy_or_sample(kv: CocaKV, images: torch.Tensor, opts: CaptionerDecodeConfig, ids: SpecialIds,
                            prompt: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Greedy (``mode=greedy``) or sampled decoding; finished rows leave the batch."""
    max_new = new_token_budget(kv, opts, prompt)
    state, logits, prompt = prefill(kv, images, ids, prompt, max_new)
    process = LogitsProcessor(opts, ids, kv.vocab_size, images.device)
    gen = torch.Generator(device=images.device).manual_seed(opts.seed) if opts.mode == "sample" else None
    out = torch.full((prompt.shape[0], max_new), ids.pad, dtype=torch.long, device=images.device)
    rows = torch.arange(prompt.shape[0], device=images.device)
    seen = seen_tokens(prompt, kv.vocab_size, opts)
    for step in range(max_new):
        scores = process(logits, step, seen)
        nxt = scores.argmax(-1) if opts.mode == "greedy" else warp_and_sample(scores, opts, gen)
        out[rows, step] = nxt
        if step == max_new - 1:
            break
        alive = ~torch.isin(nxt, process.stop)
        if not bool(alive.all()):
            keep = alive.nonzero().squeeze(1)
            if keep.numel() == 0:
                break
            rows, nxt = rows[keep], nxt[keep]
            state.select(keep)
            seen = None if seen is None else seen[keep]
        if seen is not None:
            seen[torch.arange(len(nxt), device=nxt.device), nxt] = True
        logits = kv.forward(nxt[:, None], state)[:, -1]
    return torch.cat([prompt, out], dim=1)


@torch.inference_mode()
def generate(model: nn.Module, images: torch.Tensor, ids: SpecialIds, opts: Optional[CaptionerDecodeConfig] = None,
             prompt: Optional[torch.Tensor] = None, kv: Optional[CocaKV] = None) -> torch.Tensor:
    """Caption a batch of (normalised) images with a CoCa.

    Args:
        model: an open_clip ``CoCa`` in eval mode.
        images: model input [B, 3, H, W] (CLIP-normalised).
        ids: special token ids (:meth:`SpecialIds.from_tokenizer`).
        opts: decoding options (default: greedy, 30 new tokens).
        prompt: optional common prefix [B, P] starting with the start token.
        kv: a :class:`CocaKV` to reuse (built from ``model`` when omitted).

    Returns:
        LongTensor [B, P + T]: prompt, generated tokens, pad after the end token.
    """
    opts = opts or CaptionerDecodeConfig()
    kv = kv or CocaKV(model)
    if opts.mode in ("greedy", "sample"):
        return decode_greedy_or_sample(kv, images, opts, ids, prompt)
    if opts.mode == "beam":
        return decode_beam(kv, images, opts, ids, prompt)
    raise ValueError(f"decode mode={opts.mode!r}; allowed: greedy | beam | sample")


class CaptionGenerator:
    """Images in [0, 1] → caption strings, for a model and its tokenizer.

    Args:
        model: open_clip ``CoCa``.
        tokenizer: its tokenizer (``decode`` and start/end ids are used).
        opts: decoding options.
        normalize: map [0, 1] images to model input (default: resize to the model's image
            size, then CLIP mean/std).
    """

    def __init__(self, model: nn.Module, tokenizer: Any, opts: Optional[CaptionerDecodeConfig] = None,
                 normalize: Optional[Callable[[torch.Tensor], torch.Tensor]] = None):
        self.model, self.tokenizer, self.opts = model, tokenizer, opts or CaptionerDecodeConfig()
        self.ids = SpecialIds.from_tokenizer(tokenizer)
        size = model_image_size(model)
        self.normalize = normalize or (lambda images: to_model_input(images, size))
        self.kv = CocaKV(model)

    def tokens(self, images: torch.Tensor) -> torch.Tensor:
        was_training = self.model.training
        self.model.eval()
        try:
            return generate(self.model, self.normalize(images), self.ids, self.opts, kv=self.kv)
        finally:
            self.model.train(was_training)

    def __call__(self, images: torch.Tensor) -> list[str]:
        return [self.tokenizer.decode(strip_special(row.tolist(), self.ids)).strip() for row in self.tokens(images)]


def strip_special(tokens: Sequence[int], ids: SpecialIds) -> list[int]:
    """Generated content tokens: after the start token, up to (excluding) the first stop/pad."""
    out = []
    for t in list(tokens)[1:]:
        if t in (ids.eot, ids.pad, *ids.stop):
            break
        out.append(int(t))
    return out
