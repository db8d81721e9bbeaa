"""Beam search over :class:`dalle3.captioner.kv.CocaKV`, with images leaving the batch when done.

The bookkeeping follows Hugging Face's ``BeamSearchScorer`` (the one open_clip's
``generate`` used before transformers 5 removed it): each step takes the top
``2 * num_beams`` continuations of an image's beams; an end token among the first
``num_beams`` of them closes a hypothesis scored ``sum log p / length ** length_penalty``
(length = generated tokens, end token included); the first ``num_beams`` other
continuations become the next beams. An image is done when it holds ``num_beams``
hypotheses and no running beam can beat the worst of them.
"""
from __future__ import annotations

from typing import Optional

import torch

from dalle3.captioner.decoding import LogitsProcessor, SpecialIds, new_token_budget, prefill, seen_tokens
from dalle3.captioner.kv import CocaKV
from dalle3.config.captioner import CaptionerDecodeConfig


class Hypotheses:
    """The best ``n`` finished captions of one image."""

    def __init__(self, n: int, length_penalty: float, max_new: int):
        self.n, self.lp, self.max_new = n, length_penalty, max_new
        self.items: list[tuple[float, torch.Tensor]] = []

    def add(self, tokens: torch.Tensor, sum_logprob: float) -> None:
        if sum_logprob == float("-inf"):  # a forbidden continuation (e.g. end before min length)
            return
        score = sum_logprob / (len(tokens) ** self.lp)
        if len(self.items) < self.n or score > self.items[-1][0]:
            self.items.append((score, tokens))
            self.items.sort(key=lambda item: -item[0])
            del self.items[self.n:]

    def done(self, best_running: float, step_len: int) -> bool:
        if len(self.items) < self.n:
            return False
        # Sums of log-probs only fall; with length_penalty > 0 the longest length gives the
        # highest attainable score, so bound with max_new (HF's exact criterion).
        length = self.max_new if self.lp > 0 else step_len
        return self.items[-1][0] >= best_running / (length ** self.lp)

    def best(self) -> torch.Tensor:
        return self.items[0][1]


def _close_hypotheses(hyps: list[Hypotheses], items: torch.Tensor, seqs: torch.Tensor, step: int,
                      top_scores: torch.Tensor, src: torch.Tensor, tokens: torch.Tensor, eos: torch.Tensor,
                      nb: int) -> None:
    """End tokens among the first ``nb`` candidates of an image close a hypothesis."""
    ranked = eos.clone()
    ranked[:, nb:] = False
    for a, r in ranked.nonzero().tolist():
        row = a * nb + int(src[a, r])
        seq = torch.cat([seqs[row, :step], tokens[a, r:r + 1]])
        hyps[int(items[a])].add(seq, float(top_scores[a, r]))


@torch.inference_mode()
def decode_beam(kv: CocaKV, images: torch.Tensor, opts: CaptionerDecodeConfig, ids: SpecialIds,
                prompt: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Beam search; returns [B, P + T] like :func:`dalle3.captioner.generate.generate`."""
    nb, vocab, dev = opts.num_beams, kv.vocab_size, images.device
    if 2 * nb > vocab:
        raise ValueError(f"num_beams={nb} needs a vocabulary of at least {2 * nb} tokens")
    max_new = new_token_budget(kv, opts, prompt)
    state, logits, prompt_rows = prefill(kv, images, ids, prompt, max_new, repeat=nb)
    process = LogitsProcessor(opts, ids, vocab, dev)
    n_img = images.shape[0]
    hyps = [Hypotheses(nb, opts.length_penalty, max_new) for _ in range(n_img)]
    items = torch.arange(n_img, device=dev)
    seqs = torch.full((n_img * nb, max_new), ids.pad, dtype=torch.long, device=dev)
    beam_scores = torch.zeros(n_img, nb, device=dev)
    beam_scores[:, 1:] = float("-inf")  # all beams start identical: expand only the first
    seen = seen_tokens(prompt_rows, vocab, opts)
    for step in range(max_new):
        logprobs = process(logits, step, seen).log_softmax(-1)
        cand = (beam_scores.view(-1, 1) + logprobs).view(len(items), nb * vocab)
        top_scores, top_idx = cand.topk(2 * nb, dim=1)
        src, tokens = top_idx // vocab, top_idx % vocab
        eos = torch.isin(tokens, process.stop)
        _close_hypotheses(hyps, items, seqs, step, top_scores, src, tokens, eos, nb)
        # At most nb of the 2*nb candidates end (one end token per beam), so >= nb go on.
        keep = ~eos & ((~eos).cumsum(1) <= nb)
        pick = keep.nonzero()[:, 1].view(len(items), nb)
        beam_scores = top_scores.gather(1, pick)
        rows = (torch.arange(len(items), device=dev)[:, None] * nb + src.gather(1, pick)).view(-1)
        nxt = tokens.gather(1, pick).view(-1)
        seqs = seqs.index_select(0, rows)
        seqs[:, step] = nxt
        state.select(rows)
        if seen is not None:
            seen = seen.index_select(0, rows)
            seen[torch.arange(len(nxt), device=dev), nxt] = True
        if step == max_new - 1:
            break
        alive = torch.tensor([not hyps[int(i)].done(float(beam_scores[a, 0]), step + 1)
                              for a, i in enumerate(items)], device=dev)
        if not bool(alive.all()):
            if not bool(alive.any()):
                items = items[:0]
                break
            keep_rows = (alive.nonzero() * nb + torch.arange(nb, device=dev)).view(-1)
            items, beam_scores = items[alive], beam_scores[alive]
            seqs, nxt = seqs.index_select(0, keep_rows), nxt.index_select(0, keep_rows)
            state.select(keep_rows)
            seen = None if seen is None else seen.index_select(0, keep_rows)
        logits = kv.forward(nxt[:, None], state)[:, -1]
    for a, i in enumerate(items.tolist()):  # out of tokens: running beams compete as they are
        for b in range(nb):
            hyps[i].add(seqs[a * nb + b], float(beam_scores[a, b]))
    return _pack(hyps, prompt_rows[::nb], max_new, ids.pad)


def _pack(hyps: list[Hypotheses], prompt: torch.Tensor, max_new: int, pad: int) -> torch.Tensor:
    out = torch.full((len(hyps), max_new), pad, dtype=torch.long, device=prompt.device)
    for i, h in enumerate(hyps):
        best = h.best()
        out[i, :len(best)] = best
    return torch.cat([prompt, out], dim=1)
