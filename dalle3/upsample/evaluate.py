"""Does an upsampler keep what the short prompt asked for? Scored with the world's caption parser.

A prompt's facts (:func:`dalle3.world.parse.caption_facts`) are *kept* when each one is true
of the facts the upsampled caption states, judged as :func:`dalle3.world.facts.judge` judges a
caption against a scene (a colourless "two circles" must be matched by circles that sum to
two). A fallback keeps nothing: the measure is of the upsampler's own answers.
"""
from __future__ import annotations

from collections import Counter
from typing import Any, Sequence

from dalle3.world.facts import judge
from dalle3.world.parse import caption_facts, tokenize


def facts_kept(prompt: str, text: str) -> bool:
    """Every fact ``prompt`` states is stated (or entailed) by ``text``."""
    truth = caption_facts(text)
    return all(judge(cat, fact, truth[cat])[0] for cat, facts in caption_facts(prompt).items() for fact in facts)


def describes_scene(text: str) -> bool:
    """``text`` reads like a world DSC: it names the background."""
    return ("noun", "background") in tokenize(text)


def preservation(kinds: Sequence[str], prompts: Sequence[str], result: Any) -> dict:
    """Per prompt kind and overall: the share of prompts whose answer was used (no fallback) and kept every
    fact, the fallback share, the share of answers that describe a whole scene, and mean words."""
    per: dict[str, Counter] = {}
    for kind, prompt, item in zip(kinds, prompts, result.items):
        c = per.setdefault(kind, Counter())
        used = item.fallback is None
        c["n"] += 1
        c["kept"] += used and facts_kept(prompt, item.text)
        c["fallback"] += not used
        c["scene"] += used and describes_scene(item.text)
        c["words"] += len(item.text.split())
    per["all"] = sum(per.values(), Counter())
    return {k: {"n": c["n"], "facts_kept": c["kept"] / c["n"], "fallback_rate": c["fallback"] / c["n"],
                "describes_scene": c["scene"] / c["n"], "mean_words": c["words"] / c["n"]}
            for k, c in per.items() if c["n"]}
