"""Every word and colour the synthetic world knows.

The captions, the renderer, the fact parser and the image analyser all read their
vocabularies from here, so a caption can only ever name things the renderer draws and
the parser understands. Object colours are far apart in RGB and far from every
background, which is what lets :mod:`dalle3.world.analyse` recover them from pixels.
"""
from __future__ import annotations

SHAPES = ("circle", "square", "triangle")
"""Object shapes. Canonical fact values use these singular names."""

COLOURS = {
    "red": (210, 25, 25),
    "green": (30, 160, 50),
    "blue": (30, 70, 220),
    "yellow": (240, 230, 40),
    "purple": (140, 50, 190),
    "orange": (250, 135, 15),
}
"""Object colours. Every pair is >= 100 apart in RGB, so nearest-colour lookup is safe."""

BACKGROUNDS = {
    "white": (245, 245, 245),
    "light grey": (185, 185, 185),
    "dark grey": (60, 60, 60),
    "beige": (225, 205, 165),
}
"""Background colours; none is within 100 (RGB distance) of an object colour."""

SIGN_BOARD_DARK = (25, 25, 25)
"""Sign board on light backgrounds (its letters are drawn in SIGN_BOARD_LIGHT)."""
SIGN_BOARD_LIGHT = (250, 250, 250)
"""Sign board on the dark background (its letters are drawn in SIGN_BOARD_DARK)."""
DARK_BACKGROUNDS = ("dark grey",)
"""Backgrounds that get a light sign board, so the board always contrasts."""

SIZES = ("small", "large")
"""Object sizes: a small object spans about half a cell, a large one most of it."""

SIZE_FRACTION = {"small": 0.45, "large": 0.8}
"""Object side as a fraction of the cell side."""

GRID = 3
"""The image is a GRID x GRID grid of cells; each object owns one cell."""

POSITIONS = {
    (0, 0): "top left", (0, 1): "top", (0, 2): "top right",
    (1, 0): "left", (1, 1): "center", (1, 2): "right",
    (2, 0): "bottom left", (2, 1): "bottom", (2, 2): "bottom right",
}
"""Canonical name of each (row, col) cell; position facts use these names."""

CELLS = {name: cell for cell, name in POSITIONS.items()}
"""Inverse of POSITIONS."""

SIGN_SPAN = 2
"""A sign takes SIGN_SPAN horizontally adjacent free cells of one row (room for 4 letters)."""

SIGN_WORDS = (
    "CAT", "DOG", "SUN", "BAR", "OPEN", "SALE", "STOP", "EXIT", "PARK", "CAFE",
    "SHOP", "BUS", "ZOO", "TAXI", "MILK", "FISH", "BOOK", "GOLF", "HOT", "JAZZ",
)
"""Words a sign can show: 3-4 uppercase letters, so one fits in SIGN_SPAN cells."""

NUMBER_WORDS = {1: "one", 2: "two", 3: "three", 4: "four", 5: "five", 6: "six", 7: "seven",
                8: "eight", 9: "nine"}
"""Number words for counts. With the default max_objects=4 only one..four occur; the rest
keep worlds with up to 9 objects (the grid's limit) describable."""

# Alt-text noise. None of these words may be a word the fact parser reads (shape,
# colour, size, position, number or sign word): noise must add no facts, only clutter.
# tests/unit/test_world_captions.py checks that.
NOISE_FILE_PREFIXES = ("IMG_", "DSC", "image_", "photo-", "Screenshot_", "pic")
NOISE_FILE_SUFFIXES = (".jpg", ".JPG", ".png", ".jpeg", ".webp")
NOISE_SHOP = (
    "buy now", "free shipping", "stock photo", "best price", "royalty free",
    "vector illustration", "clip art", "download", "new arrival", "HD wallpaper",
    "limited offer", "order today",
)
NOISE_WORDS = (
    "summer", "vintage", "kids", "decor", "poster", "art", "print", "modern",
    "abstract", "minimal", "pattern", "logo", "design", "template", "icon",
    "holiday", "party", "home", "wall", "style", "cute", "retro",
)
