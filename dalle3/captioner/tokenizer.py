"""A word-level tokenizer sized to the synthetic world, with open_clip's tokenizer interface.

Why not open_clip's BPE: its two 49,408-row vocabulary matrices hold nearly all the
parameters of a tiny CoCa and make a CPU step many times slower (ENVIRONMENT.md). The
world's captions use ~200 distinct words, so the vocabulary is the world's own
(:func:`dalle3.world.vocab.world_vocabulary`), after four special tokens.

Optionally (``phrases=k``) the vocabulary also holds the world's ``k`` most useful
multi-word glue phrases (:func:`dalle3.world.vocab.world_phrases`), which make a
descriptive caption 1.8x fewer tokens, so the text side, most of a training step, costs
less. Encoding is greedy longest match; decoding expands a phrase into its words.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional, Sequence, Union

import torch

from dalle3.utils.io import atomic_write_json
from dalle3.world.vocab import split_words, world_phrases, world_vocabulary

PAD, SOT, EOT, UNK = "<pad>", "<start_of_text>", "<end_of_text>", "<unk>"
SPECIALS = (PAD, SOT, EOT, UNK)
"Special tokens, ids 0..3. Pad is 0, as open_clip's CoCa (text_cfg.pad_id, CoCaLoss) expects."

_NO_SPACE_BEFORE = set(".,;:!?)%")
_NO_SPACE_AFTER = set("(")


class WordTokenizer:
    """Word-level tokenizer with open_clip's interface: ``tok(texts) -> LongTensor[B, context_length]``.

    Args:
        words: the vocabulary (without special tokens), in id order after the specials.
        context_length: tokens per row, start and end tokens included.
        phrases: multi-word tokens (words joined by one space), ids after the words;
            encoding takes the longest phrase that matches.
    """

    def __init__(self, words: Sequence[str], context_length: int = 32, phrases: Sequence[str] = ()):
        self.words, self.phrases = list(words), list(phrases)
        self.vocab = list(SPECIALS) + self.words + self.phrases
        self.encoder = {w: i for i, w in enumerate(self.vocab)}
        if len(self.encoder) != len(self.vocab):
            raise ValueError("duplicate words in the vocabulary")
        self.expand = [[w] for w in list(SPECIALS) + self.words] + [p.split(" ") for p in self.phrases]
        self.max_phrase = max((len(p) for p in self.expand), default=1)
        self.pad_token_id, self.sot_token_id, self.eot_token_id, self.unk_token_id = range(4)
        self.all_special_ids = [0, 1, 2, 3]
        self.context_length = context_length

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def encode(self, text: str) -> list[int]:
        """Ids of ``text``'s words and phrases (no start/end tokens); unknown words map to ``<unk>``."""
        words = split_words(text)
        if not self.phrases:
            return [self.encoder.get(w, self.unk_token_id) for w in words]
        ids, i = [], 0
        while i < len(words):
            for n in range(min(self.max_phrase, len(words) - i), 1, -1):
                phrase = self.encoder.get(" ".join(words[i:i + n]))
                if phrase is not None:
                    ids.append(phrase)
                    i += n
                    break
            else:
                ids.append(self.encoder.get(words[i], self.unk_token_id))
                i += 1
        return ids

    def __call__(self, texts: Union[str, List[str]], context_length: Optional[int] = None) -> torch.LongTensor:
        if isinstance(texts, str):
            texts = [texts]
        ctx = context_length or self.context_length
        out = torch.full((len(texts), ctx), self.pad_token_id, dtype=torch.long)
        for i, text in enumerate(texts):
            ids = [self.sot_token_id, *self.encode(text), self.eot_token_id]
            if len(ids) > ctx:  # truncate, but keep the end token (as open_clip does)
                ids = ids[:ctx - 1] + [self.eot_token_id]
            out[i, :len(ids)] = torch.tensor(ids)
        return out

    def decode(self, ids: Union[torch.Tensor, Sequence[int]]) -> str:
        """Text of one id sequence: stops at the end token, skips pad/start, detokenises punctuation."""
        if isinstance(ids, torch.Tensor):
            ids = ids.tolist()
        words: list[str] = []
        for i in ids:
            if i == self.eot_token_id:
                break
            if i in (self.pad_token_id, self.sot_token_id):
                continue
            words += self.expand[i] if 0 <= i < len(self.vocab) else [UNK]
        return detokenize(words)

    def batch_decode(self, ids: torch.Tensor) -> list[str]:
        return [self.decode(row) for row in ids]

    # -- persistence: the vocabulary travels with exported weights ------------
    def save(self, path: Union[str, Path]) -> None:
        atomic_write_json(path, {"type": "world_word_level", "specials": list(SPECIALS), "words": self.words,
                                 "phrases": self.phrases, "context_length": self.context_length})

    @classmethod
    def load(cls, path: Union[str, Path]) -> "WordTokenizer":
        data = json.loads(Path(path).read_text())
        if data.get("specials") != list(SPECIALS):
            raise ValueError(f"{path}: special tokens {data.get('specials')} differ from {list(SPECIALS)}")
        return cls(data["words"], data["context_length"], data.get("phrases", ()))


def detokenize(words: Sequence[str]) -> str:
    """Join words with spaces, gluing punctuation and quoted spans the way the captions write them."""
    out, in_quote, glue_next = "", False, True
    for w in words:
        if w == '"':
            in_quote = not in_quote
            out += ('' if glue_next else ' ') + w if in_quote else w
            glue_next = in_quote
            continue
        if w in _NO_SPACE_BEFORE or glue_next or (w.isdigit() and out[-1:].isdigit()):
            out += w
        else:
            out += " " + w
        glue_next = w in _NO_SPACE_AFTER
    return out.strip()


def build_world_tokenizer(context_length: int = 32, phrases: int = 0) -> WordTokenizer:
    """The tokenizer of the synthetic world's vocabulary (:func:`~dalle3.world.vocab.world_vocabulary`),
    plus its ``phrases`` most useful glue phrases (:func:`~dalle3.world.vocab.world_phrases`)."""
    return WordTokenizer(world_vocabulary(), context_length, world_phrases(phrases))
