"""A 3x5 pixel font, drawn here so rendering never depends on the system's fonts.

System fonts differ between machines and would make shards differ with them; a fixed
bitmap keeps "same seed, same bytes" true everywhere. At 64 px each font pixel is
drawn as a 2x2 block, which is legible; at 32 px as one pixel.
"""
from __future__ import annotations

import numpy as np

GLYPH_W, GLYPH_H = 3, 5
"""Glyph size in font pixels; letters are separated by one empty font-pixel column."""

_GLYPHS = {
    "A": ("010", "101", "111", "101", "101"),
    "B": ("110", "101", "110", "101", "110"),
    "C": ("011", "100", "100", "100", "011"),
    "D": ("110", "101", "101", "101", "110"),
    "E": ("111", "100", "110", "100", "111"),
    "F": ("111", "100", "110", "100", "100"),
    "G": ("011", "100", "101", "101", "011"),
    "H": ("101", "101", "111", "101", "101"),
    "I": ("111", "010", "010", "010", "111"),
    "J": ("001", "001", "001", "101", "010"),
    "K": ("101", "110", "100", "110", "101"),
    "L": ("100", "100", "100", "100", "111"),
    "M": ("101", "111", "101", "101", "101"),
    "N": ("111", "101", "101", "101", "101"),
    "O": ("010", "101", "101", "101", "010"),
    "P": ("110", "101", "110", "100", "100"),
    "Q": ("010", "101", "101", "110", "011"),
    "R": ("110", "101", "110", "101", "101"),
    "S": ("011", "100", "010", "001", "110"),
    "T": ("111", "010", "010", "010", "010"),
    "U": ("101", "101", "101", "101", "111"),
    "V": ("101", "101", "101", "101", "010"),
    "W": ("101", "101", "101", "111", "101"),
    "X": ("101", "101", "010", "101", "101"),
    "Y": ("101", "101", "010", "010", "010"),
    "Z": ("111", "001", "010", "100", "111"),
}

GLYPHS = {ch: np.array([[c == "1" for c in row] for row in rows], dtype=bool)
          for ch, rows in _GLYPHS.items()}
"""Letter -> (GLYPH_H, GLYPH_W) boolean bitmap."""


def text_size(n_letters: int, scale: int) -> tuple[int, int]:
    """(width, height) in pixels of a word of ``n_letters`` drawn at ``scale``."""
    return (n_letters * (GLYPH_W + 1) - 1) * scale, GLYPH_H * scale


def text_mask(word: str, scale: int) -> np.ndarray:
    """Boolean (H, W) mask of ``word`` (uppercase letters) drawn at integer ``scale``."""
    width, height = text_size(len(word), 1)
    mask = np.zeros((height, width), dtype=bool)
    for i, ch in enumerate(word):
        x = i * (GLYPH_W + 1)
        mask[:, x:x + GLYPH_W] = GLYPHS[ch]
    return np.kron(mask, np.ones((scale, scale), dtype=bool))


def read_glyph(bitmap: np.ndarray) -> str:
    """The letter whose glyph is nearest (Hamming distance) to a (5, 3) boolean bitmap."""
    return min(GLYPHS, key=lambda ch: int(np.sum(GLYPHS[ch] != bitmap)))


def read_text(mask: np.ndarray) -> str:
    """Read a word from a tight boolean text mask (rows and columns trimmed to ink).

    Why geometry instead of splitting at blank columns: blurry generated text has no
    clean gaps, but its width still tells the letter count and scale. Each font pixel is
    sampled at its block centre.
    """
    height, width = mask.shape
    if height == 0 or width == 0:
        return ""
    scale = max(height / GLYPH_H, 1e-6)
    n_letters = max(1, int(round((width / scale + 1) / (GLYPH_W + 1))))
    pitch_x = width / (n_letters * (GLYPH_W + 1) - 1)
    letters = []
    for i in range(n_letters):
        bitmap = np.zeros((GLYPH_H, GLYPH_W), dtype=bool)
        for r in range(GLYPH_H):
            for c in range(GLYPH_W):
                y = min(height - 1, int((r + 0.5) * scale))
                x = min(width - 1, int((i * (GLYPH_W + 1) + c + 0.5) * pitch_x))
                bitmap[r, c] = mask[y, x]
        letters.append(read_glyph(bitmap))
    return "".join(letters)
