"""Read a scene back from pixels: a deterministic, model-free check of prompt following.

Used to score *generated* images against their prompts. Pipeline: estimate the
background as the median border colour; mark pixels far from it; split them into
4-connected components; keep each component's half-maximum core (undoes blur halos
and separates neighbours that blur bridged); describe each core by its median colour
(nearest palette entry), centroid cell, bounding-box side (size), fill ratio and
vertical mass centre (shape). Cores in a sign-board colour and wider than tall are
signs; their text is read with the renderer's own font. Pure numpy, no scipy.

Measured on 200 renders: 1.00 on every attribute at 64 and 32 px; with blur
(sigma 0.7) and pixel noise (std 10) still >= 0.98 at both sizes, signs excepted
at 32 px, where 1-pixel strokes blur away.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
from PIL import Image

from dalle3.world.font import read_text
from dalle3.world.lexicon import (BACKGROUNDS, COLOURS, GRID, SIGN_BOARD_DARK, SIGN_BOARD_LIGHT,
                                  SIGN_SPAN, SIZE_FRACTION)
from dalle3.world.scene import Obj, Scene, Sign

FG_THRESHOLD = 48.0
"""RGB distance from the background above which a pixel belongs to something.
Half the smallest background-to-object distance (~105), so renders split cleanly."""
MIN_AREA_FRACTION = 0.03
"""Components smaller than this share of a cell are noise (specks in generated images)."""
LARGE_SIDE = sum(SIZE_FRACTION.values()) / 2
"""Bounding-box side / cell side above which an object is large (midway small..large)."""
SQUARE_FILL = 0.9
"""Fill ratio (area / bbox area) above which a non-triangle is a square: rendered circles
measure 0.75-0.84, squares 1.0; blur in generated images rounds squares' corners."""
TRIANGLE_MASS = 0.58
"""Vertical mass centre (0 top .. 1 bottom of the bbox) above which a shape is a
triangle: apex-up triangles sit at ~0.6-0.67, circles and squares at 0.5."""

_PALETTE_NAMES = list(COLOURS) + ["sign", "sign"]
_PALETTE = np.array(list(COLOURS.values()) + [SIGN_BOARD_DARK, SIGN_BOARD_LIGHT], dtype=np.float32)
_BACKGROUND_NAMES = list(BACKGROUNDS)
_BACKGROUND_RGB = np.array(list(BACKGROUNDS.values()), dtype=np.float32)


@dataclass(frozen=True)
class Detection:
    """One object found in an image, with the measurements behind each decision."""
    shape: str
    colour: str
    size: str
    row: int
    col: int
    area: int
    fill: float
    mass_centre: float
    colour_distance: float
    """RGB distance from the component's median colour to the named palette colour."""

    def to_obj(self) -> Obj:
        return Obj(self.shape, self.colour, self.size, self.row, self.col)


@dataclass
class Analysis:
    objects: list[Detection]
    background: str
    sign: Optional[Sign]
    """The largest sign found, with the word as read (may be garbled or empty)."""

    def to_scene(self) -> Scene:
        """As a :class:`Scene` for :func:`dalle3.world.facts.score_facts` (largest object first)."""
        ordered = sorted(self.objects, key=lambda d: -d.area)
        return Scene([d.to_obj() for d in ordered], self.background, self.sign)


def components(mask: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """4-connected components of a boolean mask as (ys, xs) arrays, in raster order."""
    height, width = mask.shape
    # Plain Python lists: per-pixel numpy indexing made this BFS 5x slower.
    todo = mask.ravel().tolist()
    found = []
    for start in np.flatnonzero(mask).tolist():
        if not todo[start]:
            continue
        todo[start] = False
        queue, members = [start], []
        while queue:
            i = queue.pop()
            members.append(i)
            x = i % width
            for j, ok in ((i - width, i >= width), (i + width, i < (height - 1) * width),
                          (i - 1, x > 0), (i + 1, x < width - 1)):
                if ok and todo[j]:
                    todo[j] = False
                    queue.append(j)
        members.sort()
        ys, xs = np.divmod(np.array(members), width)
        found.append((ys, xs))
    return found


def _nearest(rgb: np.ndarray, palette: np.ndarray) -> tuple[int, float]:
    dist = np.linalg.norm(palette - rgb, axis=1)
    i = int(np.argmin(dist))
    return i, float(dist[i])


def classify_shape(ys: np.ndarray, xs: np.ndarray) -> tuple[str, float, float]:
    """(shape, fill ratio, vertical mass centre) of one component."""
    y0, x0 = ys.min(), xs.min()
    h, w = ys.max() - y0 + 1, xs.max() - x0 + 1
    fill = len(ys) / float(h * w)
    mass = float((ys.mean() - y0) / max(h - 1, 1))
    if mass > TRIANGLE_MASS:
        return "triangle", fill, mass
    return ("square" if fill > SQUARE_FILL else "circle"), fill, mass


def _read_sign(pixels: np.ndarray, ys: np.ndarray, xs: np.ndarray, board: np.ndarray,
               cell: float) -> Sign:
    box = pixels[ys.min():ys.max() + 1, xs.min():xs.max() + 1]
    # Crop to the solid board, one pixel in: a blurred rim mixes board and background
    # and would read as ink.
    solid = np.linalg.norm(box - board, axis=2) < FG_THRESHOLD
    rows, cols = np.nonzero(solid.any(axis=1))[0], np.nonzero(solid.any(axis=0))[0]
    inner = box[rows[0] + 1:rows[-1], cols[0] + 1:cols[-1]] if len(rows) else box[:0, :0]
    # Ink is whatever is nearer the ink colour than the board's: the midpoint survives
    # blur that fills the 2-pixel gaps between strokes with mixed colours.
    ink_rgb = _PALETTE[-1] if np.array_equal(board, _PALETTE[-2]) else _PALETTE[-2]
    ink = np.linalg.norm(inner - ink_rgb, axis=2) < np.linalg.norm(inner - board, axis=2)
    word = ""
    if ink.any():
        rows, cols = np.nonzero(ink.any(axis=1))[0], np.nonzero(ink.any(axis=0))[0]
        word = read_text(ink[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1])
    row = min(GRID - 1, int(ys.mean() / cell))
    col = int(np.clip(round(xs.mean() / cell) - (SIGN_SPAN - 1) / 2 - 0.5, 0, GRID - SIGN_SPAN))
    return Sign(word, row, col)


def _core(ys: np.ndarray, xs: np.ndarray, contrast: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pixels at or above half the component's peak contrast.

    Why: blur in generated images spreads an object into a halo; the half-maximum
    contour is close to the true outline, so size and shape are measured on it. On
    exact renders every pixel of an object has the same contrast and nothing is cut.
    """
    keep = contrast >= 0.5 * np.percentile(contrast, 90)
    return ys[keep], xs[keep]


def _regions(contrast: np.ndarray, min_area: float):
    """Yield (ys, xs) of each thing in the image: components of the foreground, reduced
    to their cores and split again where the cores separate (blur can bridge the small
    gap between neighbouring cells at 32 px)."""
    for ys, xs in components(contrast > FG_THRESHOLD):
        if len(ys) < min_area:
            continue
        ys, xs = _core(ys, xs, contrast[ys, xs])
        y0, x0 = ys.min(), xs.min()
        local = np.zeros((ys.max() - y0 + 1, xs.max() - x0 + 1), dtype=bool)
        local[ys - y0, xs - x0] = True
        for sub_ys, sub_xs in components(local):
            if len(sub_ys) >= min_area:
                yield sub_ys + y0, sub_xs + x0


def analyse(image: Image.Image) -> Analysis:
    """Find the objects, the background and the sign in an image of the synthetic world.

    Args:
        image: any size; its side is split into the 3x3 grid.
    """
    pixels = np.asarray(image.convert("RGB"), dtype=np.float32)
    height, width, _ = pixels.shape
    cell = min(height, width) / GRID
    border = np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]])
    bg_rgb = np.median(border, axis=0)
    background = _BACKGROUND_NAMES[_nearest(bg_rgb, _BACKGROUND_RGB)[0]]
    objects, signs = [], []
    contrast = np.linalg.norm(pixels - bg_rgb, axis=2)
    for ys, xs in _regions(contrast, MIN_AREA_FRACTION * cell * cell):
        median = np.median(pixels[ys, xs], axis=0)
        index, distance = _nearest(median, _PALETTE)
        h, w = ys.max() - ys.min() + 1, xs.max() - xs.min() + 1
        if _PALETTE_NAMES[index] == "sign":
            if w >= 1.5 * h:
                signs.append((len(ys), _read_sign(pixels, ys, xs, _PALETTE[index], cell)))
            continue
        shape, fill, mass = classify_shape(ys, xs)
        objects.append(Detection(
            shape=shape, colour=_PALETTE_NAMES[index],
            size="large" if max(h, w) / cell > LARGE_SIDE else "small",
            row=min(GRID - 1, int(ys.mean() / cell)), col=min(GRID - 1, int(xs.mean() / cell)),
            area=len(ys), fill=fill, mass_centre=mass, colour_distance=distance))
    sign = max(signs, key=lambda s: s[0])[1] if signs else None
    return Analysis(objects, background, sign)


def render_agreement(truths: Sequence[Scene], found: Sequence[Scene]) -> dict[str, float]:
    """Share of true objects whose cell holds a detection with the right colour, size,
    shape (``position``: any detection there); ``count``: share of scenes with the
    right number of objects; ``background`` and ``sign`` (word) per scene."""
    hits = {k: 0 for k in ("colour", "size", "shape", "position")}
    n_objects = count_ok = bg_ok = sign_ok = 0
    for truth, got in zip(truths, found):
        by_cell = {(o.row, o.col): o for o in got.objects}
        for obj in truth.objects:
            n_objects += 1
            det = by_cell.get((obj.row, obj.col))
            hits["position"] += det is not None
            for attr in ("colour", "size", "shape"):
                hits[attr] += det is not None and getattr(det, attr) == getattr(obj, attr)
        count_ok += len(got.objects) == len(truth.objects)
        bg_ok += got.background == truth.background
        sign_ok += (truth.sign is None) == (got.sign is None) and (
            truth.sign is None or truth.sign.word == got.sign.word)
    n = max(len(truths), 1)
    out = {k: v / max(n_objects, 1) for k, v in hits.items()}
    out.update(count=count_ok / n, background=bg_ok / n, sign=sign_ok / n)
    return out
