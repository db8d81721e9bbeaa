"""Draw a scene as an RGB image. Same scene and size -> identical pixels.

Shapes are drawn without anti-aliasing, so every object pixel has exactly its palette
colour; the analyser and the determinism tests rely on that.
"""
from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from dalle3.world.font import text_mask, text_size
from dalle3.world.lexicon import (BACKGROUNDS, COLOURS, DARK_BACKGROUNDS, GRID, SIGN_BOARD_DARK,
                                  SIGN_BOARD_LIGHT, SIGN_SPAN, SIZE_FRACTION)
from dalle3.world.scene import Obj, Scene, Sign


def cell_edges(size: int) -> list[int]:
    """Pixel edges of the grid cells; cells differ by at most one pixel when size % 3 != 0."""
    return [round(i * size / GRID) for i in range(GRID + 1)]


def object_box(obj: Obj, size: int) -> tuple[int, int, int, int]:
    """Inclusive (x0, y0, x1, y1) of the object's square bounding box, centred in its cell."""
    edges = cell_edges(size)
    side = max(3, round(SIZE_FRACTION[obj.size] * size / GRID))
    cx = (edges[obj.col] + edges[obj.col + 1]) / 2
    cy = (edges[obj.row] + edges[obj.row + 1]) / 2
    x0, y0 = int(round(cx - side / 2)), int(round(cy - side / 2))
    return x0, y0, x0 + side - 1, y0 + side - 1


def _draw_object(draw: ImageDraw.ImageDraw, obj: Obj, size: int) -> None:
    x0, y0, x1, y1 = object_box(obj, size)
    fill = COLOURS[obj.colour]
    if obj.shape == "circle":
        draw.ellipse((x0, y0, x1, y1), fill=fill)
    elif obj.shape == "square":
        draw.rectangle((x0, y0, x1, y1), fill=fill)
    elif obj.shape == "triangle":
        # Apex up: the analyser tells triangles apart by their bottom-heavy mass.
        draw.polygon([((x0 + x1) / 2, y0), (x1, y1), (x0, y1)], fill=fill)
    else:
        raise ValueError(f"unknown shape {obj.shape!r}")


def sign_scale(size: int) -> int:
    """Font pixel size: 1 at 32 px, 2 at 64 px (3x5 glyphs become 6x10, readable)."""
    return max(1, size // 32)


def sign_box(sign: Sign, size: int) -> tuple[int, int, int, int]:
    """Inclusive (x0, y0, x1, y1) of the sign board.

    The board is centred on its SIGN_SPAN cells and fits inside them, so it can never
    touch an object (objects live in other cells, inside their own cell).
    """
    edges = cell_edges(size)
    scale = sign_scale(size)
    text_w, text_h = text_size(len(sign.word), scale)
    pad = scale + 1
    w, h = text_w + 2 * pad, text_h + 2 * pad
    cx = (edges[sign.col] + edges[sign.col + SIGN_SPAN]) / 2
    cy = (edges[sign.row] + edges[sign.row + 1]) / 2
    x0, y0 = int(round(cx - w / 2)), int(round(cy - h / 2))
    return x0, y0, x0 + w - 1, y0 + h - 1


def sign_colours(background: str) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """(board, ink) colours: a dark board on light backgrounds, a light one on dark."""
    if background in DARK_BACKGROUNDS:
        return SIGN_BOARD_LIGHT, SIGN_BOARD_DARK
    return SIGN_BOARD_DARK, SIGN_BOARD_LIGHT


def _draw_sign(pixels: np.ndarray, sign: Sign, background: str) -> None:
    size = pixels.shape[0]
    board, ink = sign_colours(background)
    x0, y0, x1, y1 = sign_box(sign, size)
    pixels[y0:y1 + 1, x0:x1 + 1] = board
    scale = sign_scale(size)
    mask = text_mask(sign.word, scale)
    pad = scale + 1
    region = pixels[y0 + pad:y0 + pad + mask.shape[0], x0 + pad:x0 + pad + mask.shape[1]]
    region[mask] = ink


def render(scene: Scene, size: int = 64) -> Image.Image:
    """Render ``scene`` as a ``size`` x ``size`` RGB image (32 and 64 are supported).

    Args:
        scene: what to draw; objects must sit in distinct cells and the sign in free ones.
        size: image side in pixels.
    """
    if size < 24:
        raise ValueError(f"size={size} is too small for the 3x3 grid and sign text; use 32 or 64")
    image = Image.new("RGB", (size, size), BACKGROUNDS[scene.background])
    draw = ImageDraw.Draw(image)
    for obj in scene.objects:
        _draw_object(draw, obj, size)
    if scene.sign is None:
        return image
    pixels = np.array(image)
    _draw_sign(pixels, scene.sign, scene.background)
    return Image.fromarray(pixels, "RGB")
