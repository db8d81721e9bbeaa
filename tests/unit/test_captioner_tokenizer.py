"""The world tokenizer: covers every caption the world writes, is deterministic, open_clip-shaped."""
from __future__ import annotations

import random

import torch

from dalle3.captioner.tokenizer import SPECIALS, WordTokenizer, build_world_tokenizer, detokenize
from dalle3.config.schema import WorldConfig
from dalle3.world.captions import make_captions
from dalle3.world.parse import caption_facts
from dalle3.world.scene import sample_scene
from dalle3.world.vocab import world_vocabulary


def _captions(n: int, seed: int = 0):
    rng, cfg = random.Random(seed), WorldConfig(alt_noise_rate=1.0)
    for _ in range(n):
        scene = sample_scene(rng, cfg)
        yield scene, make_captions(scene, rng, cfg)


def test_every_world_caption_tokenizes_without_unknown_words():
    tok = build_world_tokenizer()
    for _, caps in _captions(2000):
        for kind, text in caps.items():
            assert tok.unk_token_id not in tok.encode(text), (kind, text)
    assert tok.vocab_size < 300  # vs 49,408 BPE tokens: the point of a world vocabulary


def test_vocabulary_is_deterministic_and_specials_come_first():
    assert world_vocabulary() == world_vocabulary() == sorted(world_vocabulary())
    tok = build_world_tokenizer()
    assert tok.vocab[:4] == list(SPECIALS)
    assert (tok.pad_token_id, tok.sot_token_id, tok.eot_token_id, tok.unk_token_id) == (0, 1, 2, 3)


def test_call_matches_open_clip_layout_and_truncates_keeping_the_end_token():
    tok = WordTokenizer(["a", "red", "circle"], context_length=6)
    ids = tok(["a red circle", "a blue circle a red circle"])
    assert ids.dtype == torch.long and ids.shape == (2, 6)
    assert ids[0].tolist() == [1, 4, 5, 6, 2, 0]
    assert ids[1].tolist() == [1, 4, 3, 6, 4, 2]  # "blue" is unknown; cut, end token kept


def test_decode_roundtrip_keeps_facts_of_descriptive_captions():
    tok = build_world_tokenizer(context_length=100)
    for scene, caps in _captions(300, seed=1):
        text = caps["dsc"]
        decoded = tok.decode(tok([text])[0])
        assert decoded == text.lower()  # lower-cased, punctuation and quotes glued back
        assert caption_facts(decoded) == caption_facts(text)


def test_detokenize_glues_punctuation_and_quotes():
    assert detokenize(["a", "sign", "says", '"', "open", '"', "."]) == 'a sign says "open".'
    assert detokenize(["two", "circles", "(", "one", "small", ")", ","]) == "two circles (one small),"


def test_save_and_load_roundtrip(tmp_path):
    tok = build_world_tokenizer(context_length=40)
    tok.save(tmp_path / "tokenizer.json")
    again = WordTokenizer.load(tmp_path / "tokenizer.json")
    assert again.vocab == tok.vocab and again.context_length == 40


def test_glue_phrases_shorten_captions_and_decode_to_the_same_text():
    words, phrases = build_world_tokenizer(context_length=100), build_world_tokenizer(context_length=100, phrases=200)
    assert phrases.vocab[:words.vocab_size] == words.vocab and phrases.vocab_size == words.vocab_size + 200
    n_words = n_phrases = 0
    for scene, caps in _captions(300, seed=2):
        for text in caps.values():
            ids = phrases.encode(text)
            assert phrases.unk_token_id not in ids
            assert phrases.decode(ids) == words.decode(words.encode(text))
            n_words, n_phrases = n_words + len(words.encode(text)), n_phrases + len(ids)
    assert n_phrases < 0.7 * n_words  # the point: shorter sequences, a cheaper text side


def test_phrases_survive_save_and_load(tmp_path):
    tok = build_world_tokenizer(context_length=40, phrases=50)
    tok.save(tmp_path / "tokenizer.json")
    again = WordTokenizer.load(tmp_path / "tokenizer.json")
    text = "A simple drawing of one large red circle in the top left corner against a beige backdrop."
    assert again.vocab == tok.vocab and again(text).tolist() == tok(text).tolist()
