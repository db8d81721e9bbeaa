"""The image analyser reads rendered scenes back (it later judges generated images)."""
from __future__ import annotations

import random

import numpy as np
import pytest
from PIL import Image, ImageFilter

from dalle3.config.schema import WorldConfig
from dalle3.world import Obj, Scene, analyse, render, render_agreement, sample_scene, scene_facts
from dalle3.world.analyse import components


@pytest.fixture(scope="module")
def truths():
    cfg = WorldConfig(sign_rate=0.5)
    return [sample_scene(random.Random(10_000 + i), cfg) for i in range(200)]


@pytest.mark.parametrize("size", [64, 32])
def test_analyser_recovers_rendered_scenes(truths, size):
    found = [analyse(render(scene, size)).to_scene() for scene in truths]
    acc = render_agreement(truths, found)
    for key in ("colour", "count", "position", "size", "shape", "background"):
        assert acc[key] >= 0.97, (size, key, acc)
    assert acc["sign"] >= 0.97, acc  # the word is read with the renderer's own font
    same = sum(scene_facts(t) == scene_facts(f) for t, f in zip(truths, found)) / len(truths)
    assert same >= 0.97


def degrade(image, blur, noise_std, rng):
    """Blur and pixel noise, the typical defects of small generated images."""
    pixels = np.asarray(image.filter(ImageFilter.GaussianBlur(blur)), dtype=np.float32)
    pixels = pixels + rng.normal(0.0, noise_std, pixels.shape)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def test_analyser_tolerates_blur_and_noise_like_a_generated_image(truths):
    rng = np.random.default_rng(0)
    picked = truths[:100]
    found = [analyse(degrade(render(s, 64), 0.7, 10.0, rng)).to_scene() for s in picked]
    acc = render_agreement(picked, found)
    assert all(acc[k] >= 0.97 for k in ("colour", "count", "position", "size", "shape", "sign")), acc


def test_neighbours_bridged_by_blur_are_split():
    scene = Scene([Obj("square", "red", "large", 1, 0), Obj("square", "blue", "large", 1, 1)], "white")
    image = render(scene, 32).filter(ImageFilter.GaussianBlur(0.7))
    got = sorted((o.colour, o.col) for o in analyse(image).objects)
    assert got == [("blue", 1), ("red", 0)]


def test_blank_image_has_no_objects_and_specks_are_ignored():
    pixels = np.full((64, 64, 3), 245, dtype=np.uint8)
    pixels[30, 30] = (210, 25, 25)  # one stray pixel is noise, not an object
    result = analyse(Image.fromarray(pixels))
    assert result.objects == [] and result.background == "white" and result.sign is None


def test_components_are_four_connected():
    mask = np.zeros((5, 5), dtype=bool)
    mask[0, 0] = mask[1, 1] = True  # diagonal neighbours are separate
    mask[3, 1:4] = True
    sizes = sorted(len(ys) for ys, _ in components(mask))
    assert sizes == [1, 1, 3]
