"""dalle3/world/vocab.py: the one word list both text sides are built from, and their pinned ids."""
from __future__ import annotations

import ast
import hashlib
import json
from pathlib import Path

import dalle3.world
from dalle3.captioner.tokenizer import build_world_tokenizer
from dalle3.ldm.text import build_word_tokenizer, tiny_vocabulary
from dalle3.world.vocab import content_words, split_words, world_phrases, world_vocabulary


def digest(tokens) -> str:
    return hashlib.sha256(json.dumps(list(tokens)).encode()).hexdigest()


def ldm_tokens(tokenizer) -> list[str]:
    """The LDM tokenizer's tokens in id order."""
    vocab = tokenizer.get_vocab()
    return sorted(vocab, key=vocab.get)


def test_captioner_vocabulary_is_the_world_word_list_with_unchanged_ids():
    tok = build_world_tokenizer()
    assert tok.words == world_vocabulary()
    assert tok.vocab_size == 200
    assert [tok.encoder[w] for w in ("<pad>", "<unk>", "9", "circle", "a", "red", "zoo")] == [0, 3, 28, 70, 42, 144, 195]
    assert digest(tok.vocab) == "cadae13578b385838c65e847f927109ae50b8bb135e482d39a5485a854734407"
    phrases = build_world_tokenizer(phrases=200)
    assert phrases.vocab_size == 400 and phrases.vocab[200] == "in the"
    assert digest(phrases.vocab) == "cad57d006afcc9011482bbff83ea33eb148c132774f084f3a9d8aec87735a106"


def test_ldm_vocabulary_is_made_of_world_words_with_unchanged_ids():
    tokens = ldm_tokens(build_word_tokenizer(tiny_vocabulary(), max_length=64))
    world = set(world_vocabulary())
    assert all(world.issuperset(split_words(t)) and not any(c.isdigit() for c in t) for t in tokens[4:])
    assert len(tokens) == 157
    assert [tokens.index(w) for w in ("<pad>", "<eos>", '".', "a", "circle", "red", "zoo")] == [0, 3, 5, 14, 41, 108, 155]
    assert digest(tokens) == "fea4c79096264a1598b600ea173e25ba5aa048a7077a324cec8d0122706ad713"


def test_glue_phrases_hold_no_fact_words_and_are_deterministic():
    content = content_words()
    assert {"red", "circle", "discs", "small", "big", "two", "one", "exit", "grey", "7"} <= content
    found = world_phrases(200)
    assert found == world_phrases.__wrapped__(200) and len(set(found)) == 200
    assert all(len(p.split(" ")) >= 2 and content.isdisjoint(p.split(" ")) for p in found)
    assert "in the top left corner" in found


def test_the_world_package_imports_neither_ldm_nor_captioner():
    for path in Path(dalle3.world.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            assert not any(n.startswith(("dalle3.ldm", "dalle3.captioner")) for n in names), path
