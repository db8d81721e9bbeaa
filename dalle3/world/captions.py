"""Three captions per scene: web alt-text, short synthetic (SSC), descriptive synthetic (DSC).

Every phrasing here must stay inside the grammar that :mod:`dalle3.world.parse` reads
back, because the evaluators score captions by parsing them. Variety comes from
templates, synonyms and ordering, all drawn from the caller's ``random.Random``.
"""
from __future__ import annotations

import random
from typing import Any, Optional

from dalle3.config import schema as _schema

from dalle3.world.lexicon import (NOISE_FILE_PREFIXES, NOISE_FILE_SUFFIXES, NOISE_SHOP, NOISE_WORDS,
                                  NUMBER_WORDS, POSITIONS)
from dalle3.world.scene import Obj, Scene

# In the world vocabulary since session 6 (it reads this module's upper-case constants): kept so that
# no token id moves; the newer order ``subject`` is left out of the vocabulary on purpose.
ORDER_WORDS = ("reading", "shuffled")

SHAPE_WORDS = {"circle": ("circle", "circle", "disc"), "square": ("square",),
               "triangle": ("triangle",)}
"""Surface forms per shape (repeats weight the draw); the parser maps each one back."""
SIZE_WORDS = {"small": ("small", "small", "little"), "large": ("large", "large", "big")}

POSITION_PHRASES = {
    "top left": ("in the top left", "in the top left corner", "at the top left",
                 "in the upper left corner"),
    "top": ("at the top", "in the top middle", "at the top center", "in the upper middle"),
    "top right": ("in the top right", "in the top right corner", "at the top right",
                  "in the upper right corner"),
    "left": ("on the left", "on the left side", "in the middle left", "at the left"),
    "center": ("in the center", "in the middle", "at the centre", "in the very middle"),
    "right": ("on the right", "on the right side", "in the middle right", "at the right"),
    "bottom left": ("in the bottom left", "in the bottom left corner", "at the bottom left",
                    "in the lower left corner"),
    "bottom": ("at the bottom", "in the bottom middle", "at the bottom center", "in the lower middle"),
    "bottom right": ("in the bottom right", "in the bottom right corner", "at the bottom right",
                     "in the lower right corner"),
}
"""Surface forms per canonical position; the parser merges "upper", "middle", "corner"... back."""

DSC_TEMPLATES = (
    "A {bg} background with {body}.",
    "This image shows {body} on a {bg} background.",
    "{body}, all on a {bg} background.",
    "The picture contains {body}. The background is {bg}.",
    "On a {bg} background you can see {body}.",
    "A simple drawing of {body} against a {bg} backdrop.",
)
SIGN_TEMPLATES = (
    'A sign {where} says "{word}".',
    'There is a sign {where} that reads "{word}".',
    'A sign with the word "{word}" is {where}.',
    'The sign {where} says "{word}".',
)
SSC_TEMPLATES = ("a {obj} {pos}", "{obj} {pos}", "a {obj}, {pos}", "the {obj} {pos}")
SINGLE_WORDS = ("one", "a single")
"""How a count of one is written; a bare article ("a circle") never states a count."""
MEMBER_TEMPLATES = ("one {size} {pos}", "a {size} one {pos}")
"""One member of a colour-shape group; "one" stands for the group's shape and colour."""
TOTAL_TEMPLATES = ("There is one object.", "There are {n} objects in total.")
SIGN_ROWS = ("along the top", "across the middle", "along the bottom")
SIGN_SIDES = ("on the left", "on the right")
# Every word a caption can contain is in a constant of this module or of the lexicon:
# the captioner's tokenizer builds its vocabulary from them.


def _plural(word: str) -> str:
    return word + "s"


def _join(items: list[str], rng: random.Random) -> str:
    if len(items) == 1:
        return items[0]
    comma = "," if len(items) > 2 and rng.random() < 0.5 else ""
    return ", ".join(items[:-1]) + f"{comma} and " + items[-1]


def position_phrase(position: str, rng: random.Random) -> str:
    """E.g. "in the top left corner", "on the left side", "at the top"."""
    return rng.choice(POSITION_PHRASES[position])


def _shape_word(shape: str, rng: random.Random, plural: bool = False) -> str:
    word = rng.choice(SHAPE_WORDS[shape])
    return _plural(word) if plural else word


def _size_word(size: str, rng: random.Random) -> str:
    return rng.choice(SIZE_WORDS[size])


def _member(obj: Obj, template: str, rng: random.Random) -> str:
    return template.format(size=_size_word(obj.size, rng), pos=position_phrase(obj.position, rng))


def _group_phrase(objs: list[Obj], rng: random.Random, shuffle: bool = False) -> str:
    """One colour-and-shape group: its count, then each member's size and position (in the
    given order, or shuffled)."""
    head = objs[0]
    if len(objs) == 1:
        return (f"{rng.choice(SINGLE_WORDS)} {_size_word(head.size, rng)} {head.colour} "
                f"{_shape_word(head.shape, rng)} {position_phrase(head.position, rng)}")
    members = list(objs)
    if shuffle:
        rng.shuffle(members)
    noun = f"{NUMBER_WORDS[len(objs)]} {{size}}{head.colour} {_shape_word(head.shape, rng, True)}"
    style = rng.randrange(4)
    if style == 0 and len({o.size for o in objs}) == 1:
        # All members share a size: state it once and list the places.
        places = _join([position_phrase(o.position, rng) for o in members], rng)
        return noun.format(size=_size_word(head.size, rng) + " ") + " " + places
    noun = noun.format(size="")
    if style == 1:
        return f"{noun}, {_join([_member(o, MEMBER_TEMPLATES[0], rng) for o in members], rng)}"
    parts = _join([_member(o, MEMBER_TEMPLATES[1], rng) for o in members], rng)
    return f"{noun} ({parts})" if style == 2 else f"{noun}: {parts}"


def reading_order(obj: Obj) -> tuple[int, int]:
    """Sort key: top row first, then left to right."""
    return obj.row, obj.col


def _groups(scene: Scene, order: str = "reading") -> list[list[Obj]]:
    """Colour-shape groups; ``reading``: members in reading order, groups by their first member."""
    objects = sorted(scene.objects, key=reading_order) if order == "reading" else scene.objects
    groups: dict[tuple[str, str], list[Obj]] = {}
    for obj in objects:
        groups.setdefault((obj.colour, obj.shape), []).append(obj)
    return list(groups.values())


def _sign_sentence(scene: Scene, rng: random.Random) -> str:
    sign = scene.sign
    row, side = SIGN_ROWS[sign.row], SIGN_SIDES[min(sign.col, 1)]
    where = rng.choice((row, f"{row} {side}"))
    return rng.choice(SIGN_TEMPLATES).format(where=where, word=sign.word)


def _capitalise(text: str) -> str:
    return text[:1].upper() + text[1:]


def dsc(scene: Scene, rng: random.Random, order: str = "reading") -> str:
    """Descriptive caption: every object (colour, size, shape, position), every count,
    the background and the sign's word.

    ``order="reading"`` describes the colour-shape groups in reading order of their first
    member (top left to bottom right) and each group's members likewise; ``"shuffled"`` in
    random order. Which group comes next then follows from the picture, not from a coin:
    the tiny captioner learns every fact category faster (benchmarks/RESULTS.md, session 6).
    ``"subject"`` is reading order with the main subject's group first and the subject first
    in it: what the prompt upsampler writes, so that it restates the short prompt (its size and
    place included) before adding detail.
    """
    if order not in _schema.DSC_ORDERS:
        raise ValueError(f"dsc order {order!r} is not allowed; choose one of: {' | '.join(_schema.DSC_ORDERS)}")
    shuffle = order == "shuffled"
    groups = _groups(scene, "shuffled" if shuffle else "reading")
    if shuffle:
        rng.shuffle(groups)
    elif order == "subject":
        groups.sort(key=lambda g: scene.main not in g)  # stable: the others keep reading order
        groups[0].sort(key=lambda o: o is not scene.main)  # and the subject first in its group
    body = _join([_group_phrase(g, rng, shuffle) for g in groups], rng)
    text = rng.choice(DSC_TEMPLATES).format(body=body, bg=scene.background)
    sentences = [_capitalise(text)]
    if rng.random() < 0.3:
        n = len(scene.objects)
        total = TOTAL_TEMPLATES[0] if n == 1 else TOTAL_TEMPLATES[1].format(n=NUMBER_WORDS[n])
        sentences.insert(rng.randrange(2), total)
    if scene.sign is not None:
        sentences.append(_sign_sentence(scene, rng))
    return " ".join(sentences)


def ssc(scene: Scene, rng: random.Random) -> str:
    """Short caption: the main subject only, all of its attributes, nothing else."""
    main = scene.main
    obj = f"{_size_word(main.size, rng)} {main.colour} {_shape_word(main.shape, rng)}"
    text = rng.choice(SSC_TEMPLATES).format(obj=obj, pos=position_phrase(main.position, rng))
    return _capitalise(text) if rng.random() < 0.5 else text


def _noise(rng: random.Random) -> str:
    kind = rng.randrange(3)
    if kind == 0:
        return f"{rng.choice(NOISE_FILE_PREFIXES)}{rng.randint(1000, 9999)}{rng.choice(NOISE_FILE_SUFFIXES)}"
    if kind == 1:
        return rng.choice(NOISE_SHOP)
    return " ".join(rng.sample(NOISE_WORDS, rng.randint(1, 3)))


def _alt_position(scene: Scene, main: Obj, keep_colour: bool, wrong: bool,
                  rng: random.Random) -> Optional[str]:
    if wrong:
        # A "wrong" position must be false of the scene: no object of the stated kind there.
        # (With more than 4 objects every cell can hold one; then no wrong place exists.)
        taken = {o.position for o in scene.objects
                 if o.shape == main.shape and (not keep_colour or o.colour == main.colour)}
        free = [p for p in POSITIONS.values() if p not in taken]
        if free:
            return rng.choice(free)
    return main.position if rng.random() < 0.4 else None


def alt(scene: Scene, rng: random.Random, cfg: Any) -> str:
    """Web-style alt-text with the paper's defects.

    Names only the main subject's shape; drops size, and colour unless
    ``cfg.alt_colour_rate`` fires; never transcribes the sign. Among non-empty alt-texts,
    ``cfg.alt_wrong_count_rate`` state a wrong count and ``cfg.alt_wrong_position_rate`` a
    wrong position; ``cfg.alt_noise_rate`` get web noise; ``cfg.alt_empty_rate`` are empty.
    """
    if rng.random() < cfg.alt_empty_rate:
        return ""
    main = scene.main
    keep_colour = rng.random() < cfg.alt_colour_rate
    n_true = sum(o.shape == main.shape and (not keep_colour or o.colour == main.colour)
                 for o in scene.objects)
    if rng.random() < cfg.alt_wrong_count_rate:
        n, say_count = rng.choice([k for k in range(1, 5) if k != n_true]), True
    else:
        n, say_count = n_true, n_true > 1 and rng.random() < 0.5
    position = _alt_position(scene, main, keep_colour,
                             rng.random() < cfg.alt_wrong_position_rate, rng)
    noun = _shape_word(main.shape, rng, plural=say_count and n > 1)
    words = [main.colour, noun] if keep_colour else [noun]
    if say_count:
        words.insert(0, rng.choice(SINGLE_WORDS) if n == 1 else NUMBER_WORDS[n])
    if position is not None:
        words.append(position_phrase(position, rng))
    text = " ".join(words)
    text = rng.choice((text, text, _capitalise(text), text.title()))
    if rng.random() < cfg.alt_noise_rate:
        sep = rng.choice((" - ", " | ", ", ", " "))
        noise = _noise(rng)
        text = f"{noise}{sep}{text}" if rng.random() < 0.5 else f"{text}{sep}{noise}"
    return text


def make_captions(scene: Scene, rng: random.Random, cfg: Any) -> dict[str, str]:
    """All three captions of ``scene``: ``{"alt": ..., "ssc": ..., "dsc": ...}``.

    Args:
        scene: the ground truth.
        rng: consumed in a fixed order (alt, ssc, dsc), so a seeded rng gives fixed captions.
        cfg: a ``WorldConfig`` (the alt-text defect rates, the descriptive caption's order).
    """
    return {"alt": alt(scene, rng, cfg), "ssc": ssc(scene, rng), "dsc": dsc(scene, rng, cfg.dsc_order)}
