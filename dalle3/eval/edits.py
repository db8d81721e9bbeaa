"""Caption edits that make a true descriptive caption false in exactly one fact.

The judge's sensitivity check (:func:`dalle3.eval.judge.validate_judge_model`) asks whether
the judge scores an image's true DSC caption above a copy with one colour word, one count,
one position or one shape changed. Each edit here is a pure function ``(caption, rng) ->
edited caption | None``: it lists every single-word (or single-phrase) substitution the
world's lexicon allows, in an order drawn from ``rng``, and returns the first one that
:func:`changed_fact` confirms changes exactly one fact of its kind, read back with the
world's own parser (:func:`dalle3.world.parse.caption_facts`). A substitution that lands
in the sign sentence, the background, the "N objects in total" sentence or a pronoun
changes no fact, or another one, and is skipped; ``None`` means no edit of the kind exists.

"Exactly one fact" is judged on colour-shape groups, the unit a DSC caption describes
("two red circles, one small in the top left and one large on the right"): a colour or
shape edit renames one group and keeps its count, sizes and positions, and the new
colour-shape pair is not in the caption (so the edit never merges two groups); a count
edit changes one group's number; a position edit moves one member of one group. Since the
DSC caption states every object, each edit is false of the image.
"""
from __future__ import annotations

import random
import re
from typing import Callable, Optional

from dalle3.world.captions import POSITION_PHRASES, SHAPE_WORDS
from dalle3.world.lexicon import COLOURS, NUMBER_WORDS, POSITIONS
from dalle3.world.parse import caption_facts

EDIT_KINDS = ("colour", "count", "position", "shape")
"The four sensitivities, in reporting order."

_SHAPE_OF = {form: shape for shape, forms in SHAPE_WORDS.items() for form in forms}
_COLOUR_RE = re.compile(r"\b(" + "|".join(COLOURS) + r")\b")
_SHAPE_RE = re.compile(r"\b(" + "|".join(sorted(_SHAPE_OF, key=len, reverse=True)) + r")(s?)\b")
_PHRASES = sorted({p for forms in POSITION_PHRASES.values() for p in forms}, key=len, reverse=True)
_POSITION_RE = re.compile(r"\b(" + "|".join(map(re.escape, _PHRASES)) + r")\b")
_PHRASE_POSITION = {p: pos for pos, forms in POSITION_PHRASES.items() for p in forms}


def _count_re(max_count: int) -> re.Pattern:
    words = ["a single"] + [NUMBER_WORDS[n] for n in range(1, max_count + 1)]
    return re.compile(r"\b(" + "|".join(words) + r")\b", re.IGNORECASE)


def groups_of(caption: str) -> Optional[dict[tuple, dict]]:
    """``{(colour, shape): {"count", "sizes", "positions"}}`` of a caption, or None when a
    fact has no group to belong to (a colourless mention, two counts for one group)."""
    facts = caption_facts(caption)
    groups = {key: {"count": None, "sizes": set(), "positions": set()} for key in facts["colour"]}
    if {(s,) for _, s in groups} != facts["shape"]:
        return None
    for n, colour, shape in facts["count"]:
        g = groups.get((colour, shape))
        if g is None or g["count"] is not None:
            return None
        g["count"] = n
    for size, colour, shape in facts["size"]:
        if (colour, shape) not in groups:
            return None
        groups[(colour, shape)]["sizes"].add(size)
    for colour, shape, pos in facts["position"]:
        if (colour, shape) not in groups:
            return None
        groups[(colour, shape)]["positions"].add(pos)
    return groups


def changed_fact(before: str, after: str) -> Optional[str]:
    """The kind (one of :data:`EDIT_KINDS`) of the single fact ``after`` changes in ``before``, or None.

    None when nothing changed, more than one fact changed, the sign changed, or a caption
    holds facts outside its colour-shape groups.
    """
    a, b = groups_of(before), groups_of(after)
    if a is None or b is None or caption_facts(before)["sign"] != caption_facts(after)["sign"]:
        return None
    gone, new = set(a) - set(b), set(b) - set(a)
    if len(gone) == len(new) == 1:
        (old_key,), (new_key,) = gone, new
        if a[old_key] != b[new_key]:
            return None
        if old_key[1] == new_key[1]:
            return "colour"
        return "shape" if old_key[0] == new_key[0] else None
    if gone or new:
        return None
    diff = [k for k in a if a[k] != b[k]]
    if len(diff) != 1:
        return None
    g, h = a[diff[0]], b[diff[0]]
    if g["sizes"] != h["sizes"]:
        return None
    if g["count"] != h["count"]:
        return "count" if g["positions"] == h["positions"] else None
    moved = g["positions"] ^ h["positions"]
    return "position" if len(moved) == 2 and len(g["positions"]) == len(h["positions"]) else None


def _first_valid(caption: str, kind: str, candidates: list[str], rng: random.Random) -> Optional[str]:
    rng.shuffle(candidates)
    return next((c for c in candidates if changed_fact(caption, c) == kind), None)


def _swap(text: str, m: re.Match, new: str) -> str:
    return text[:m.start(1)] + new + text[m.end(1):]


def edit_colour(caption: str, rng: random.Random) -> Optional[str]:
    """One object colour word replaced by another colour of the lexicon."""
    candidates = [_swap(caption, m, c) for m in _COLOUR_RE.finditer(caption) for c in COLOURS if c != m.group(1)]
    return _first_valid(caption, "colour", candidates, rng)


def edit_shape(caption: str, rng: random.Random) -> Optional[str]:
    """One shape noun replaced by another shape (any of its surface forms), plural kept."""
    candidates = []
    for m in _SHAPE_RE.finditer(caption):
        for shape, forms in SHAPE_WORDS.items():
            if shape != _SHAPE_OF[m.group(1)]:
                candidates.append(_swap(caption, m, rng.choice(forms)))
    return _first_valid(caption, "shape", candidates, rng)


def edit_position(caption: str, rng: random.Random) -> Optional[str]:
    """One position phrase replaced by a phrase of another of the grid's cells."""
    candidates = [_swap(caption, m, rng.choice(POSITION_PHRASES[pos]))
                  for m in _POSITION_RE.finditer(caption) for pos in POSITIONS.values()
                  if pos != _PHRASE_POSITION[m.group(1)]]
    return _first_valid(caption, "position", candidates, rng)


def _count_swap(caption: str, m: re.Match, n: int, new: int) -> str:
    word = NUMBER_WORDS[new]
    if m.group(1)[0].isupper():
        word = word.capitalize()
    out = _swap(caption, m, word)
    if n == 1:  # "one red circle" -> "two red circles": pluralise the noun it counts
        noun = _SHAPE_RE.search(out, m.start(1) + len(word))
        if noun and not noun.group(2):
            out = out[:noun.end(1)] + "s" + out[noun.end(1):]
    return out


def edit_count(caption: str, rng: random.Random, max_count: int = 4) -> Optional[str]:
    """One group's count word changed: 1 -> 2, n -> n ± 1 (never to 1, whose phrasing differs,
    and never above ``max_count``: number words the world never writes are untrained tokens)."""
    candidates = []
    for m in _count_re(max_count).finditer(caption):
        n = 1 if m.group(1).lower() in ("a single", "one") else \
            next(k for k, w in NUMBER_WORDS.items() if w == m.group(1).lower())
        for new in (n - 1, n + 1):
            if 2 <= new <= max_count:
                candidates.append(_count_swap(caption, m, n, new))
    return _first_valid(caption, "count", candidates, rng)


EDITS: dict[str, Callable[[str, random.Random], Optional[str]]] = {
    "colour": edit_colour, "count": edit_count, "position": edit_position, "shape": edit_shape}
"One edit per sensitivity kind."
