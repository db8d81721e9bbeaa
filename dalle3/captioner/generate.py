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

from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence

import torch
from torch import nn

from dalle3.captioner.kv import CocaKV


@dataclass
class DecodeOptions:
    """Decoding knobs; field meanings as in ``CaptionerDecodeConfig``."""

    mode: str = "greedy"
    max_new_tokens: int = 30
    min_new_tokens: int = 0
    num_beams: int = 4
    length_penalty: float = 1.0
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    repetition_penalty: float = 1.0
    seed: int = 0

    @classmethod
    def from_config(cls, cfg: Any, **overrides: Any) -> "DecodeOptions":
        values = {name: getattr(cfg, name) for name in cls.__dataclass_fields__ if hasattr(cfg, name)}
        return cls(**{**values, **overrides})


@dataclass
class SpecialIds:
    sot: int
    eot: int
    pad: int = 0
    suppress: tuple[int, ...] = ()
    "Ids never generated (start, pad, unknown, ...)."
    stop: tuple[int, ...] = ()
    "Ids besides ``eot`` that end a caption."

    @classmethod
    def from_tokenizer(cls, tokenizer: Any) -> "SpecialIds":
        """Our WordTokenizer suppresses pad/start/unk; open_clip's BPE only its start token
        (its pad id 0 is also the "!" token, so it cannot be suppressed)."""
        sot, eot = tokenizer.sot_token_id, tokenizer.eot_token_id
        pad = getattr(tokenizer, "pad_token_id", 0)
        suppress = [sot]
        if hasattr(tokenizer, "unk_token_id"):
            suppress += [pad, tokenizer.unk_token_id]
        return cls(sot, eot, pad, tuple(suppress))


class LogitsProcessor:
    """Min length, repetition penalty and suppressed ids, applied to float32 logits."""

    def __init__(self, opts: DecodeOptions, ids: SpecialIds, vocab: int, device: torch.device):
        self.opts, self.ids = opts, ids
        self.stop = torch.tensor([ids.eot, *ids.stop], device=device)
        self.block = torch.zeros(vocab, dtype=torch.bool, device=device)
        self.block[list(ids.suppress)] = True

    def __call__(self, logits: torch.Tensor, step: int, seen: Optional[torch.Tensor]) -> torch.Tensor:
        logits = logits.float()
        if seen is not None:  # CTRL / HF RepetitionPenaltyLogitsProcessor semantics
            p = self.opts.repetition_penalty
            logits = torch.where(seen, torch.where(logits < 0, logits * p, logits / p), logits)
        logits = logits.masked_fill(self.block, float("-inf"))
        if step < self.opts.min_new_tokens:
            logits[:, self.stop] = float("-inf")
        return logits


def warp_and_sample(logits: torch.Tensor, opts: DecodeOptions, generator: Optional[torch.Generator]) -> torch.Tensor:
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


def _start(kv: CocaKV, images: torch.Tensor, ids: SpecialIds, prompt: Optional[torch.Tensor],
           max_new: int, repeat: int = 1):
    """Encode images once, expand per beam, prefill the prompt; return (state, logits, prompt)."""
    cross = kv.encode_images(images)
    if repeat > 1:
        cross = [(k.repeat_interleave(repeat, 0), v.repeat_interleave(repeat, 0)) for k, v in cross]
    b = cross[0][0].shape[0]
    if prompt is None:
        prompt = torch.full((b, 1), ids.sot, dtype=torch.long, device=images.device)
    elif repeat > 1:
        prompt = prompt.repeat_interleave(repeat, 0)
    state = kv.new_state(cross, min(prompt.shape[1] + max_new, kv.max_len))
    return state, kv.forward(prompt, state)[:, -1], prompt


def _seen(prompt: torch.Tensor, vocab: int, opts: DecodeOptions) -> Optional[torch.Tensor]:
    if opts.repetition_penalty == 1.0:
        return None
    return torch.zeros(prompt.shape[0], vocab, dtype=torch.bool, device=prompt.device).scatter_(1, prompt, True)


@torch.inference_mode()
def decode_greedy_or_sample(kv: CocaKV, images: torch.Tensor, opts: DecodeOptions, ids: SpecialIds,
                            prompt: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Greedy (``mode=greedy``) or sampled decoding; finished rows leave the batch."""
    max_new = min(opts.max_new_tokens, kv.max_len - (1 if prompt is None else prompt.shape[1]))
    state, logits, prompt = _start(kv, images, ids, prompt, max_new)
    process = LogitsProcessor(opts, ids, kv.vocab_size, images.device)
    gen = torch.Generator(device=images.device).manual_seed(opts.seed) if opts.mode == "sample" else None
    out = torch.full((prompt.shape[0], max_new), ids.pad, dtype=torch.long, device=images.device)
    rows = torch.arange(prompt.shape[0], device=images.device)
    seen = _seen(prompt, kv.vocab_size, opts)
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
def generate(model: nn.Module, images: torch.Tensor, ids: SpecialIds, opts: Optional[DecodeOptions] = None,
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
    opts = opts or DecodeOptions()
    kv = kv or CocaKV(model)
    if opts.mode in ("greedy", "sample"):
        return decode_greedy_or_sample(kv, images, opts, ids, prompt)
    if opts.mode == "beam":
        from dalle3.captioner.beam import decode_beam

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

    def __init__(self, model: nn.Module, tokenizer: Any, opts: Optional[DecodeOptions] = None,
                 normalize: Optional[Callable[[torch.Tensor], torch.Tensor]] = None):
        from dalle3.captioner.model import model_image_size, to_model_input

        self.model, self.tokenizer, self.opts = model, tokenizer, opts or DecodeOptions()
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
