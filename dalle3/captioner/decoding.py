"""What every caption decoder shares: special ids, logits processing, the prefill.

Used one way by :mod:`dalle3.captioner.generate` (greedy, sampling and the entry points)
and :mod:`dalle3.captioner.beam` (beam search); it imports neither.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import torch

from dalle3.captioner.kv import CocaKV, DecodeState
from dalle3.captioner.model import pad_token_id
from dalle3.config.captioner import CaptionerDecodeConfig


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
        sot, eot, pad = tokenizer.sot_token_id, tokenizer.eot_token_id, pad_token_id(tokenizer)
        suppress = [sot]
        if hasattr(tokenizer, "unk_token_id"):  # duck-typed: WordTokenizer has one, open_clip's tokenizers do not
            suppress += [pad, tokenizer.unk_token_id]
        return cls(sot, eot, pad, tuple(suppress))


class LogitsProcessor:
    """Min length, repetition penalty and suppressed ids, applied to float32 logits."""

    def __init__(self, opts: CaptionerDecodeConfig, ids: SpecialIds, vocab: int, device: torch.device):
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


def new_token_budget(kv: CocaKV, opts: CaptionerDecodeConfig, prompt: Optional[torch.Tensor]) -> int:
    """Tokens to generate: ``opts.max_new_tokens``, or fewer if the prompt leaves less context."""
    return min(opts.max_new_tokens, kv.max_len - (1 if prompt is None else prompt.shape[1]))


def prefill(kv: CocaKV, images: torch.Tensor, ids: SpecialIds, prompt: Optional[torch.Tensor],
            max_new: int, repeat: int = 1) -> tuple[DecodeState, torch.Tensor, torch.Tensor]:
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


def seen_tokens(prompt: torch.Tensor, vocab: int, opts: CaptionerDecodeConfig) -> Optional[torch.Tensor]:
    """[rows, vocab] bool: tokens already in each row (for the repetition penalty); None when it is off."""
    if opts.repetition_penalty == 1.0:
        return None
    return torch.zeros(prompt.shape[0], vocab, dtype=torch.bool, device=prompt.device).scatter_(1, prompt, True)
