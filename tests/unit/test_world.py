"""Scenes and renders of the synthetic world: valid layouts, JSON round-trips, exact pixels."""
from __future__ import annotations

import json
import random
from itertools import combinations

import numpy as np
import pytest

from dalle3.config.schema import WorldConfig
from dalle3.world import Scene, render, sample_scene, scene_facts
from dalle3.world.font import GLYPHS
from dalle3.world.lexicon import BACKGROUNDS, COLOURS, SIGN_WORDS
from dalle3.world.render import cell_edges, object_box, sign_box


def scenes(n, cfg=None, seed=0):
    cfg = cfg or WorldConfig()
    return [sample_scene(random.Random(seed * 100_000 + i), cfg) for i in range(n)]


def test_scenes_respect_the_config_and_never_overlap():
    cfg = WorldConfig(min_objects=2, max_objects=3, sign_rate=0.5)
    drawn = scenes(400, cfg)
    for scene in drawn:
        scene.validate()  # distinct cells, sign only on free cells
        assert 2 <= len(scene.objects) <= 3
    assert {len(s.objects) for s in drawn} == {2, 3}
    share = sum(s.sign is not None for s in drawn) / len(drawn)
    assert 0.4 < share <= 0.56  # a few scenes have no free cells for a sign


def test_sign_rate_zero_and_one():
    assert all(s.sign is None for s in scenes(100, WorldConfig(sign_rate=0.0)))
    # One object always leaves a free pair of cells in some row.
    assert all(s.sign is not None
               for s in scenes(100, WorldConfig(sign_rate=1.0, min_objects=1, max_objects=1)))


def test_count_facts_with_several_objects_of_one_kind_are_common():
    groups = [n for s in scenes(500) for (n, _, _) in scene_facts(s)["count"]]
    assert sum(n >= 2 for n in groups) / 500 > 0.15


def test_scene_json_round_trip():
    for scene in scenes(50, WorldConfig(sign_rate=0.5)):
        data = json.loads(json.dumps(scene.to_dict()))
        assert Scene.from_dict(data) == scene


@pytest.mark.parametrize("size", [32, 64])
def test_render_draws_each_object_in_its_colour_and_the_background(size):
    for scene in scenes(40, WorldConfig(sign_rate=0.5)):
        pixels = np.asarray(render(scene, size))
        assert pixels.shape == (size, size, 3) and pixels.dtype == np.uint8
        assert tuple(pixels[0, 0]) == BACKGROUNDS[scene.background]
        for obj in scene.objects:
            x0, y0, x1, y1 = object_box(obj, size)
            # The bottom-centre pixel lies inside every shape (triangles point up).
            assert tuple(pixels[y1 - 1, (x0 + x1) // 2]) == COLOURS[obj.colour]


@pytest.mark.parametrize("size", [32, 64])
def test_signs_and_objects_stay_inside_their_own_cells(size):
    edges = cell_edges(size)
    for scene in scenes(200, WorldConfig(sign_rate=1.0)):
        for obj in scene.objects:
            x0, y0, x1, y1 = object_box(obj, size)
            assert edges[obj.col] <= x0 and x1 < edges[obj.col + 1]
            assert edges[obj.row] <= y0 and y1 < edges[obj.row + 1]
        if scene.sign is not None:
            x0, y0, x1, y1 = sign_box(scene.sign, size)
            cols = [c for _, c in scene.sign.cells]
            assert edges[min(cols)] <= x0 and x1 < edges[max(cols) + 1]
            assert edges[scene.sign.row] <= y0 and y1 < edges[scene.sign.row + 1]


def test_render_is_deterministic_and_scene_dependent():
    a, b = scenes(2, WorldConfig(sign_rate=1.0))
    assert render(a, 64).tobytes() == render(Scene.from_dict(a.to_dict()), 64).tobytes()
    assert render(a, 64).tobytes() != render(b, 64).tobytes()


def test_sign_word_changes_the_pixels():
    scene = scenes(1, WorldConfig(sign_rate=1.0, max_objects=1))[0]
    other = Scene(scene.objects, scene.background,
                  type(scene.sign)("BAR" if scene.sign.word != "BAR" else "CAT",
                                   scene.sign.row, scene.sign.col))
    assert render(scene, 64).tobytes() != render(other, 64).tobytes()


def test_font_glyphs_are_distinct_and_cover_the_lexicon():
    letters = sorted({ch for word in SIGN_WORDS for ch in word})
    assert set(letters) <= set(GLYPHS)
    for a, b in combinations(sorted(GLYPHS), 2):  # one flipped pixel never turns a letter into another
        assert np.sum(GLYPHS[a] != GLYPHS[b]) >= 2, (a, b)
    for glyph in GLYPHS.values():  # ink on every edge: a tight text box has a known size
        assert glyph[0].any() and glyph[-1].any() and glyph[:, 0].any() and glyph[:, -1].any()


def test_palette_colours_are_far_apart():
    named = {**COLOURS, **{f"bg {k}": v for k, v in BACKGROUNDS.items()}}
    for (na, a), (nb, b) in combinations(named.items(), 2):
        if na.startswith("bg ") and nb.startswith("bg "):
            continue
        assert np.linalg.norm(np.subtract(a, b)) >= 80, (na, nb)
