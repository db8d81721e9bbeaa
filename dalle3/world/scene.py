"""Scenes: what is in an image, exactly. Captions, renders and facts all derive from one.

A scene is a 3x3 grid; each object owns one cell, and an optional sign owns
``SIGN_SPAN`` free cells of one row. ``objects[0]`` is the *main subject*: the thing
short captions and alt-texts talk about.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Optional

from dalle3.world.lexicon import (BACKGROUNDS, COLOURS, GRID, POSITIONS, SHAPES, SIGN_SPAN,
                                  SIGN_WORDS, SIZES)

SAME_KIND_RATE = 0.35
"""Chance that a non-main object copies the main subject's shape and colour.

Why: with independent draws, two objects of one kind are rare (1 in 18 per pair), so
count facts like "two red circles" would barely exist for models to learn.
"""


@dataclass(frozen=True)
class Obj:
    shape: str
    colour: str
    size: str
    row: int
    col: int

    @property
    def position(self) -> str:
        """Canonical position name of the object's cell, e.g. ``"top left"``."""
        return POSITIONS[(self.row, self.col)]


@dataclass(frozen=True)
class Sign:
    word: str
    row: int
    col: int
    """Leftmost cell of the sign; it spans ``col .. col + SIGN_SPAN - 1``."""

    @property
    def cells(self) -> list[tuple[int, int]]:
        return [(self.row, self.col + i) for i in range(SIGN_SPAN)]


@dataclass
class Scene:
    objects: list[Obj]
    background: str
    sign: Optional[Sign] = None

    @property
    def main(self) -> Obj:
        return self.objects[0]

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict (lists, strings and ints only)."""
        # Explicit dicts: dataclasses.asdict deep-copies and was a tenth of write time.
        return {
            "objects": [{"shape": o.shape, "colour": o.colour, "size": o.size, "row": o.row,
                         "col": o.col} for o in self.objects],
            "background": self.background,
            "sign": None if self.sign is None else {"word": self.sign.word, "row": self.sign.row,
                                                    "col": self.sign.col},
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Scene":
        sign = data.get("sign")
        return cls(objects=[Obj(**o) for o in data["objects"]],
                   background=data["background"],
                   sign=None if sign is None else Sign(**sign))

    def validate(self) -> None:
        """Raise ValueError if objects share a cell or the sign covers an object.

        Only *sampled* scenes must pass; analysed scenes from generated images may not.
        """
        cells = [(o.row, o.col) for o in self.objects]
        if len(set(cells)) != len(cells):
            raise ValueError(f"objects share a cell: {cells}")
        if self.sign is not None and set(self.sign.cells) & set(cells):
            raise ValueError(f"sign {self.sign} covers an object cell")
        for o in self.objects:
            if o.shape not in SHAPES or o.colour not in COLOURS or o.size not in SIZES:
                raise ValueError(f"unknown attribute in {o}")


def free_sign_slots(occupied: set[tuple[int, int]]) -> list[tuple[int, int]]:
    """(row, col) of every run of SIGN_SPAN free cells in one row, row-major."""
    slots = []
    for row in range(GRID):
        for col in range(GRID - SIGN_SPAN + 1):
            if all((row, col + i) not in occupied for i in range(SIGN_SPAN)):
                slots.append((row, col))
    return slots


def sample_scene(rng: random.Random, cfg: Any) -> Scene:
    """Draw a scene.

    Args:
        rng: the only source of randomness (same state -> same scene).
        cfg: a ``WorldConfig``; reads ``min_objects``, ``max_objects`` and ``sign_rate``.

    The sign is placed after the objects, in a free run of cells; when the objects
    leave no such run (possible from 3 objects up) the scene has no sign, so the share
    of scenes with a sign is slightly below ``sign_rate``.
    """
    n = rng.randint(cfg.min_objects, cfg.max_objects)
    cells = rng.sample(range(GRID * GRID), n)
    main = Obj(rng.choice(SHAPES), rng.choice(sorted(COLOURS)), rng.choice(SIZES),
               *divmod(cells[0], GRID))
    objects = [main]
    for cell in cells[1:]:
        if rng.random() < SAME_KIND_RATE:
            shape, colour = main.shape, main.colour
        else:
            shape, colour = rng.choice(SHAPES), rng.choice(sorted(COLOURS))
        objects.append(Obj(shape, colour, rng.choice(SIZES), *divmod(cell, GRID)))
    background = rng.choice(sorted(BACKGROUNDS))
    sign = None
    if rng.random() < cfg.sign_rate:
        slots = free_sign_slots({(o.row, o.col) for o in objects})
        if slots:
            row, col = rng.choice(slots)
            sign = Sign(rng.choice(SIGN_WORDS), row, col)
    return Scene(objects, background, sign)
