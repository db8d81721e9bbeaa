"""The ldm's world text encoder: a world CLIP's text tower, converted to transformers (``stage=text_encoder``).

The tiny encoder's random frozen weights add each word's embedding to a position
embedding of the same size and mix them through two random layers, so "red" at token 12
and "red" at token 30 are unrelated vectors to the U-Net. A text tower that has learnt
the world's captions contrastively gives per-token features that already say which
colour belongs to which shape where. ``dalle3-train stage=text_encoder`` trains such a
CLIP with the judge's recipe (:func:`dalle3.eval.judge.train_world_clip`) on the
``train`` split, a split of its own, so it is never the judge, then converts its text
tower here, with the module mapping of :func:`dalle3.ldm.open_clip_text.convert_text_tower`,
into a ``CLIPTextModel`` folder with a ``PreTrainedTokenizerFast`` that gives exactly the
ids of the world's :class:`~dalle3.captioner.tokenizer.WordTokenizer`. The ldm reads that
folder as ``ldm.text_encoder.kind=world_clip``, ``pretrained=<folder>``, with
transformers' classes alone (training, sampling and the diffusers export).

No Lightning or ``torch.distributed`` here.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Union

from dalle3.config.validate import ConfigError

WORD_PATTERN = r"[a-z]+|[0-9]|[^\sa-z0-9]"
"How :func:`dalle3.world.vocab.split_words` cuts lower-cased text (kept equal to its regex by a test)."

SOURCE_FILE = "dalle3_source.json"
"Which CLIP export a converted folder was made from (the judge must never be one)."

CONVERTED_DIR = "converted"
"The converted folder of a text_encoder run folder: ``<run_dir>/converted``, beside ``<run_dir>/export``."


def word_level_tokenizer(words_tokenizer: Any, max_length: int):
    """A ``PreTrainedTokenizerFast`` with the ids of ``words_tokenizer`` (a phrase-free ``WordTokenizer``).

    ``<start_of_text> words <end_of_text>``, padded with id 0, unknown words ``<unk>``;
    truncation keeps the end token, as the ``WordTokenizer`` does.
    """
    from tokenizers import Regex, Tokenizer, normalizers, pre_tokenizers, processors
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    from dalle3.captioner.tokenizer import EOT, PAD, SOT, UNK

    if words_tokenizer.phrases:
        raise ConfigError("ldm.text_encoder.clip: the CLIP's tokenizer has multi-word phrases; allowed: a "
                          "word-level one (the world CLIP's)")
    vocab = {tok: i for i, tok in enumerate(words_tokenizer.vocab)}
    tok = Tokenizer(WordLevel(vocab, unk_token=UNK))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Split(Regex(WORD_PATTERN), behavior="isolated")])
    tok.post_processor = processors.TemplateProcessing(
        single=f"{SOT} $A {EOT}", special_tokens=[(SOT, vocab[SOT]), (EOT, vocab[EOT])])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token=PAD, unk_token=UNK, bos_token=SOT,
                                   eos_token=EOT, model_max_length=max_length)


def convert_world_clip(export: Union[str, Path], out: Union[str, Path], layer: str = "last") -> str:
    """Convert the world CLIP at ``export`` into a ``CLIPTextModel`` + tokenizer folder at ``out`` (replaced atomically)."""
    from dalle3.captioner.export import is_export, load_exported
    from dalle3.ldm.open_clip_text import convert_text_tower
    from dalle3.utils.io import atomic_path

    if not is_export(str(export)):
        raise ConfigError(f"{export!r} is not a CLIP export; allowed: the folder `dalle3-train stage=text_encoder` "
                          "writes (<run_dir>/export)")
    clip = load_exported(export)
    encoder = convert_text_tower(clip.model, layer, str(export))
    tokenizer = word_level_tokenizer(clip.tokenizer, encoder.config.max_position_embeddings)
    encoder.config.pad_token_id = tokenizer.pad_token_id
    encoder.config.bos_token_id = tokenizer.bos_token_id
    encoder.config.eos_token_id = tokenizer.eos_token_id
    with atomic_path(out) as tmp:
        tokenizer.save_pretrained(tmp)
        encoder.save_pretrained(tmp)
        with open(os.path.join(tmp, SOURCE_FILE), "w", encoding="utf-8") as f:
            json.dump({"kind": "world_clip", "export": os.path.realpath(str(export)), "layer": layer}, f)
    return str(out)


def source_export(folder: Union[str, Path]) -> Union[str, None]:
    """The CLIP export a converted folder was made from, or None (not a converted folder)."""
    path = Path(folder) / SOURCE_FILE
    if not path.is_file():
        return None
    return json.loads(path.read_text()).get("export")
