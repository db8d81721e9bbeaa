"""Ground-truth facts of a scene, and scoring of what a caption or a prompt states.

Shared by the captioner evaluator (caption vs. the scene it describes) and the
diffusion evaluator (prompt vs. the scene :mod:`dalle3.world.analyse` reads from the
generated image). Fact tuples per category:

=========  ==========================  ===========================================
category   tuple                       why this shape
=========  ==========================  ===========================================
shape      (shape,)                    which kinds of object appear
colour     (colour, shape)             colour bound to its object
size       (size, colour, shape)       catches swapped sizes between two objects
position   (colour, shape, position)   catches swapped places ("red left, blue right")
count      (n, colour, shape)          "two red circles": one fact per colour-shape group
sign       (WORD,)                     the text shown in the image
=========  ==========================  ===========================================

A stated tuple may carry ``None`` for the colour (alt-text says "two circles"). It is
*true* if some scene fact agrees with every stated slot; for counts, a colourless
``n`` must equal the number of objects of that shape. It is *credited* (counts towards
recall) only when it singles out exactly one scene fact, so vague statements never
inflate recall.
"""
from __future__ import annotations

import math
from collections import Counter
from typing import Iterable, Optional

from dalle3.world.parse import CATEGORIES, caption_facts
from dalle3.world.scene import Scene

_COLOUR_SLOT = {"size": 1, "position": 0, "count": 1}
"""Index of the optional colour slot in categories that have one."""


def scene_facts(scene: Scene) -> dict[str, set]:
    """Every fact true of ``scene``, per category."""
    facts: dict[str, set] = {c: set() for c in CATEGORIES}
    for o in scene.objects:
        facts["shape"].add((o.shape,))
        facts["colour"].add((o.colour, o.shape))
        facts["size"].add((o.size, o.colour, o.shape))
        facts["position"].add((o.colour, o.shape, o.position))
    for (colour, shape), n in Counter((o.colour, o.shape) for o in scene.objects).items():
        facts["count"].add((n, colour, shape))
    if scene.sign is not None:
        facts["sign"].add((scene.sign.word,))
    return facts


def judge(category: str, stated: tuple, truth: set) -> tuple[bool, Optional[tuple]]:
    """(is the stated fact true, the single scene fact it is credited to or None)."""
    slot = _COLOUR_SLOT.get(category)
    if slot is None or stated[slot] is not None:
        return (True, stated) if stated in truth else (False, None)
    if category == "count":
        n, _, shape = stated
        groups = [f for f in truth if f[2] == shape]
        if sum(f[0] for f in groups) != n:
            return False, None
        return True, (groups[0] if len(groups) == 1 else None)
    matches = [f for f in truth if all(a is None or a == b for a, b in zip(stated, f))]
    return bool(matches), (matches[0] if len(matches) == 1 else None)


def score_facts(stated: dict[str, set], scene: Scene) -> dict[str, dict[str, int]]:
    """Per category: ``present`` (facts in the scene), ``stated``, ``correct`` (scene facts
    stated correctly) and ``false`` (stated facts not true of the scene)."""
    truth = scene_facts(scene)
    scores = {}
    for cat in CATEGORIES:
        credited, false = set(), 0
        for fact in stated.get(cat, ()):
            ok, credit = judge(cat, fact, truth[cat])
            false += not ok
            if credit is not None:
                credited.add(credit)
        scores[cat] = {"present": len(truth[cat]), "stated": len(stated.get(cat, ())),
                       "correct": len(credited), "false": false}
    return scores


def score_caption(text: str, scene: Scene) -> dict[str, dict[str, int]]:
    """Score a caption against the scene it should describe (see :func:`score_facts`)."""
    return score_facts(caption_facts(text), scene)


def aggregate(scores: Iterable[dict[str, dict[str, int]]]) -> dict[str, dict[str, float]]:
    """Pool per-sample scores: ``recall`` = correct / present, ``false_rate`` = false / stated.

    A ratio with nothing to count (no signs in any scene, nothing stated) is NaN, never a
    made-up 0 or 1.
    """
    totals = {c: Counter() for c in CATEGORIES}
    for score in scores:
        for cat in CATEGORIES:
            totals[cat].update(score.get(cat, {}))
    out = {}
    for cat, t in totals.items():
        out[cat] = {"recall": t["correct"] / t["present"] if t["present"] else math.nan,
                    "false_rate": t["false"] / t["stated"] if t["stated"] else math.nan}
    return out
