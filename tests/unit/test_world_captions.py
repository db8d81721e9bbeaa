"""Each caption kind states exactly the facts it should: DSC all, SSC the main subject,
alt-text the paper's defects at the configured rates."""
from __future__ import annotations

import math
import random
import re

import pytest

from dalle3.config.schema import WorldConfig
from dalle3.world import Scene, aggregate, caption_facts, make_captions, sample_scene, score_caption
from dalle3.world.facts import scene_facts
from dalle3.world.captions import SHAPE_WORDS, dsc, reading_order
from dalle3.world.lexicon import (NOISE_FILE_PREFIXES, NOISE_SHOP, NOISE_WORDS, SIGN_WORDS)
from dalle3.world.parse import CATEGORIES, KNOWN_WORDS, tokenize

N = 600


def samples(cfg, n=N, seed=0):
    out = []
    for i in range(n):
        rng = random.Random(seed * 1_000_003 + i)
        scene = sample_scene(rng, cfg)
        out.append((scene, make_captions(scene, rng, cfg)))
    return out


@pytest.fixture(scope="module")
def default_samples():
    return samples(WorldConfig())


def within_binomial(hits, n, p, sigmas=4.0):
    return abs(hits / n - p) <= sigmas * math.sqrt(p * (1 - p) / n) + 1e-9


def test_dsc_states_every_fact_and_nothing_false(default_samples):
    for scene, caps in default_samples:
        score = score_caption(caps["dsc"], scene)
        for cat in CATEGORIES:
            assert score[cat]["correct"] == score[cat]["present"], (cat, caps["dsc"], scene)
            assert score[cat]["false"] == 0, (cat, caps["dsc"], scene)
    pooled = aggregate(score_caption(c["dsc"], s) for s, c in default_samples)
    assert all(pooled[cat]["recall"] == 1.0 for cat in CATEGORIES)


def test_dsc_holds_with_many_objects_of_one_kind():
    cfg = WorldConfig(min_objects=5, max_objects=9, sign_rate=1.0)
    for scene, caps in samples(cfg, n=150):
        score = score_caption(caps["dsc"], scene)
        assert all(score[c]["correct"] == score[c]["present"] and score[c]["false"] == 0
                   for c in CATEGORIES), caps["dsc"]


def test_ssc_states_the_main_subject_only_and_correctly(default_samples):
    for scene, caps in default_samples:
        stated = caption_facts(caps["ssc"])
        expected = scene_facts(Scene([scene.main], scene.background, None))
        expected["count"] = set()  # "a large red circle" does not claim there is only one
        assert stated == expected, caps["ssc"]
        assert all(v["false"] == 0 for v in score_caption(caps["ssc"], scene).values())
        assert len(caps["ssc"].split()) <= 10


def test_alt_never_states_colour_size_or_sign(default_samples):
    for scene, caps in default_samples:
        stated = caption_facts(caps["alt"])
        assert not stated["colour"] and not stated["size"] and not stated["sign"], caps["alt"]
        if scene.sign is not None:
            assert not re.search(rf"\b{scene.sign.word}\b", caps["alt"], re.IGNORECASE), caps["alt"]


def test_alt_names_only_the_main_subject(default_samples):
    for scene, caps in default_samples:
        if caps["alt"]:
            assert caption_facts(caps["alt"])["shape"] == {(scene.main.shape,)}, caps["alt"]


def test_alt_defects_occur_at_the_configured_rates():
    cfg = WorldConfig(alt_wrong_count_rate=0.2, alt_wrong_position_rate=0.4, alt_empty_rate=0.1,
                      alt_noise_rate=0.5)
    drawn = samples(cfg, n=1500, seed=1)
    empty = sum(c["alt"] == "" for _, c in drawn)
    assert within_binomial(empty, len(drawn), 0.1)
    scores = [score_caption(c["alt"], s) for s, c in drawn if c["alt"]]
    wrong_count = sum(sc["count"]["false"] > 0 for sc in scores)
    wrong_position = sum(sc["position"]["false"] > 0 for sc in scores)
    assert within_binomial(wrong_count, len(scores), 0.2)
    assert within_binomial(wrong_position, len(scores), 0.4)


def test_alt_without_defects_is_never_false():
    cfg = WorldConfig(alt_wrong_count_rate=0.0, alt_wrong_position_rate=0.0, alt_empty_rate=0.0)
    for scene, caps in samples(cfg, n=300):
        assert caps["alt"]
        assert all(v["false"] == 0 for v in score_caption(caps["alt"], scene).values()), caps["alt"]


def test_alt_keeps_colour_when_the_colour_rate_fires():
    drawn = samples(WorldConfig(alt_colour_rate=1.0, alt_empty_rate=0.0), n=200)
    for scene, caps in drawn:
        assert caption_facts(caps["alt"])["colour"] == {(scene.main.colour, scene.main.shape)}


def test_alt_noise_rate_adds_web_noise():
    noise_words = {t for w in NOISE_SHOP + NOISE_WORDS for _, t in tokenize(w)}
    prefixes = tuple(p.lower() for p in NOISE_FILE_PREFIXES)

    def noisy(text):
        words = set(re.findall(r"[a-z]+", text.lower()))
        return bool(words & noise_words) or any(p in text.lower() for p in prefixes)

    for rate in (0.0, 1.0):
        drawn = samples(WorldConfig(alt_noise_rate=rate, alt_empty_rate=0.0), n=200)
        assert all(noisy(c["alt"]) == bool(rate) for _, c in drawn)


def test_noise_vocabulary_adds_no_facts():
    noise = {t for w in NOISE_SHOP + NOISE_WORDS + NOISE_FILE_PREFIXES for _, t in tokenize(w)}
    assert not noise & KNOWN_WORDS
    assert not noise & {w.lower() for w in SIGN_WORDS}


def test_phrasing_varies(default_samples):
    scene = next(s for s, _ in default_samples if len(s.objects) >= 3 and s.sign is not None)
    cfg = WorldConfig()
    dscs = {make_captions(scene, random.Random(i), cfg)["dsc"] for i in range(50)}
    sscs = {make_captions(scene, random.Random(i), cfg)["ssc"] for i in range(50)}
    assert len(dscs) >= 40 and len(sscs) >= 10
    openings = {" ".join(c["dsc"].split()[:2]) for _, c in default_samples}
    assert len(openings) >= 8


def test_captions_are_a_pure_function_of_the_rng(default_samples):
    scene, caps = default_samples[0]
    rng = random.Random(0)
    assert sample_scene(rng, WorldConfig()) == scene
    assert make_captions(scene, rng, WorldConfig()) == caps


def group_mentions(text: str, scene: Scene) -> list[tuple[str, str]]:
    """The scene's colour-shape groups in the order the caption first names them."""
    first = {}
    for obj in scene.objects:
        words = "|".join(SHAPE_WORDS[obj.shape])
        hit = re.search(rf"\b{obj.colour} (?:{words})s?\b", text.lower())
        assert hit, (obj, text)
        first[(obj.colour, obj.shape)] = hit.start()
    return sorted(first, key=first.get)


def test_dsc_names_groups_in_reading_order_by_default(default_samples):
    several = 0
    for scene, caps in default_samples:
        expected = list(dict.fromkeys((o.colour, o.shape) for o in sorted(scene.objects, key=reading_order)))
        assert group_mentions(caps["dsc"], scene) == expected, caps["dsc"]
        several += len(expected) > 1
    assert several > N // 2


def test_dsc_shuffled_order_still_states_every_fact_in_varied_order(default_samples):
    out_of_order = 0
    for i, (scene, _) in enumerate(default_samples):
        text = dsc(scene, random.Random(i), order="shuffled")
        score = score_caption(text, scene)
        assert all(score[c]["correct"] == score[c]["present"] and not score[c]["false"] for c in CATEGORIES)
        expected = list(dict.fromkeys((o.colour, o.shape) for o in sorted(scene.objects, key=reading_order)))
        out_of_order += group_mentions(text, scene) != expected
    assert out_of_order > N // 5
    with pytest.raises(ValueError, match="reading | shuffled"):
        dsc(default_samples[0][0], random.Random(0), order="random")
