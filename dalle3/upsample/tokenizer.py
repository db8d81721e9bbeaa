"""The world LM's tokenizer: word level over the words of the world's captions.

Built like the LDM's tiny text tokenizer (:func:`dalle3.ldm.text.build_word_tokenizer`):
lower-cased, the same ``\\w+|[^\\w\\s]+`` cuts, one id per caption token, but for a decoder:
text encodes as ``<bos> words`` (no end token, so a request ends where the model goes on)
and ``=`` is a word, the separator of the plain prompt template ``"{prompt} ="``. It is a
``PreTrainedTokenizerFast``, so ``save_pretrained`` / ``AutoTokenizer`` need none of our code.
"""
from __future__ import annotations

import re

from dalle3.config.world import WorldConfig
from dalle3.world.vocab import caption_vocabulary

SPECIAL_TOKENS = ("<pad>", "<unk>", "<bos>", "<eos>")
"Ids 0..3, in this order."
SEPARATOR = "="
"Ends the request in the world LM's prompt template; the description follows it."
_CUTS = re.compile(r"\w+|[^\w\s]+")
"How the ``Whitespace`` pre-tokenizer cuts text."


def world_words() -> list[str]:
    """Caption tokens of 3000 sampled scenes (half the alt-texts naming colours), plus the separator."""
    return caption_vocabulary(_CUTS, scenes=3000, seed=0, cfg=WorldConfig(alt_colour_rate=0.5)) + [SEPARATOR]


def build_world_lm_tokenizer(max_length: int = 256):
    """A ``PreTrainedTokenizerFast`` over :func:`world_words` (``<bos> text``; pad, unk, bos, eos specials)."""
    from tokenizers import Tokenizer, normalizers, pre_tokenizers, processors
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
    for w in world_words():
        vocab.setdefault(w, len(vocab))
    tok = Tokenizer(WordLevel(vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", vocab["<bos>"])])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>", bos_token="<bos>",
                                   eos_token="<eos>", model_max_length=max_length)
