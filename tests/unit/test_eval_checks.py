"""Exact prompt-following checks: what the prompt states, judged on what the image shows."""
from __future__ import annotations

import math
import random

import pytest
import torch
from torchvision.transforms.functional import pil_to_tensor

from dalle3.config.schema import WorldConfig
from dalle3.data.decode import decode_image
from dalle3.eval.checks import (CHECKS, applicable_counts, ceiling_images, chance_permutation, check_images,
                                check_scene, expected_chance, pass_rates, prompt_facts, resize_images)
from dalle3.world.captions import alt
from dalle3.world.lexicon import CELLS
from dalle3.world.render import render
from dalle3.world.scene import Obj, Scene, sample_scene
from dalle3.world.writer import make_sample

KINDS = ("dsc", "ssc", "alt")

RED_PAIR = Scene([Obj("circle", "red", "large", 0, 0), Obj("circle", "red", "small", 0, 2),
                  Obj("square", "blue", "small", 2, 2)], "white")
"""Two red circles along the top, a small blue square in the bottom right."""
RED_PAIR_DSC = ("Two red circles: a large one in the top left and a small one in the top right, and one small "
                "blue square in the bottom right, all on a white background.")


def _check(scene: Scene, prompt: str) -> dict:
    return check_scene(scene, prompt_facts(prompt))


def _with(scene: Scene, *objects: Obj) -> Scene:
    return Scene(list(scene.objects) + list(objects), scene.background)


def _tensor(images) -> torch.Tensor:
    return torch.stack([pil_to_tensor(im).float() / 255 for im in images])


@pytest.fixture(scope="module")
def val_world():
    """300 val samples of the default world: (scene, captions) and their 64 px renders."""
    samples = [make_sample(0, "val", i, WorldConfig()) for i in range(300)]
    return samples, _tensor(render(s, 64) for s, _ in samples)


# ------------------------------------------------------------------- hand-made prompts
def test_a_descriptive_prompt_of_the_scene_passes_everything_and_extra_objects_break_exact():
    assert _check(RED_PAIR, RED_PAIR_DSC) == dict.fromkeys(CHECKS, True)
    extra = _with(RED_PAIR, Obj("triangle", "green", "small", 1, 1))
    got = _check(extra, RED_PAIR_DSC)
    assert all(got[c] for c in CHECKS[:-1]) and got["exact"] is False  # every stated fact holds, but one too many


def test_a_short_prompt_is_exact_when_what_it_states_holds_whatever_else_is_there():
    got = _check(_with(RED_PAIR, Obj("triangle", "green", "small", 1, 1)), "a large red circle in the top left")
    assert got == {"count": None, "colour": True, "attribution": True, "shape": True, "size": True,
                   "position": True, "exact": True}


def test_counts_must_match_exactly():
    prompt = "three red circles"
    assert _check(RED_PAIR, prompt)["count"] is False  # two, not three
    assert _check(_with(RED_PAIR, Obj("circle", "red", "small", 1, 1)), prompt)["count"] is True
    assert _check(_with(RED_PAIR, Obj("circle", "blue", "small", 1, 1)), prompt)["count"] is False  # wrong colour


def test_colour_present_is_separate_from_colour_attribution():
    prompt = "a red circle and a blue square"
    swapped = Scene([Obj("square", "red", "large", 0, 0), Obj("circle", "blue", "large", 2, 2)], "white")
    got = _check(swapped, prompt)
    assert got["colour"] and got["shape"]  # both colours and both shapes are there
    assert got["attribution"] is False and got["exact"] is False  # on the wrong shapes
    assert _check(Scene([Obj("circle", "red", "large", 0, 0)], "white"), prompt)["colour"] is False  # no blue


def test_size_shape_and_position_each_fail_alone():
    got = _check(RED_PAIR, "a small red circle in the top left")
    assert got["size"] and got["attribution"] and got["position"]  # the small one is top right; each fact holds alone
    got = _check(RED_PAIR, "a large blue square in the bottom right")
    assert got["size"] is False and got["position"] and got["attribution"]
    got = _check(RED_PAIR, "a red circle in the bottom left")
    assert got["position"] is False and got["attribution"]
    got = _check(RED_PAIR, "a triangle")
    assert got["shape"] is False and got["exact"] is False


def test_unstated_categories_are_not_applicable():
    assert _check(RED_PAIR, "a circle") == {"count": None, "colour": None, "attribution": None, "shape": True,
                                            "size": None, "position": None, "exact": True}
    assert _check(RED_PAIR, "") == dict.fromkeys(CHECKS)  # an empty alt-text states nothing
    assert _check(RED_PAIR, "buy now | vintage poster") == dict.fromkeys(CHECKS)


def test_sign_text_is_not_checked():
    facts = prompt_facts('A red circle. A sign along the top says "EXIT".')
    assert "sign" not in facts and facts["shape"] == {("circle",)}


def test_only_a_prompt_describing_the_whole_picture_has_an_object_total():
    assert prompt_facts(RED_PAIR_DSC)["total"] == {(3,)}
    assert prompt_facts("two red circles and one blue square")["total"] == set()  # no picture: alt-like
    assert prompt_facts("two circles on a white background")["total"] == set()  # colourless count
    assert prompt_facts("a red circle on a white background")["total"] == set()  # a bare article counts nothing
    assert prompt_facts("Two red circles and a triangle on a white background.")["total"] == set()  # uncounted


def test_colourless_alt_counts_are_checked_against_what_they_say():
    # The alt-text miscounts on purpose: three circles are asked for, whatever the scene was.
    prompt = "IMG_4821.jpg | Three Circles At The Top Left"
    assert _check(RED_PAIR, prompt)["count"] is False  # two circles here
    three = _with(RED_PAIR, Obj("circle", "blue", "small", 1, 1))
    assert _check(three, prompt) == {"count": True, "colour": None, "attribution": None, "shape": True,
                                     "size": None, "position": True, "exact": True}


def test_web_noise_words_add_no_facts():
    assert prompt_facts("stock photo - two circles at the top | HD wallpaper 4k") == prompt_facts("two circles at the top")
    cfg = WorldConfig(alt_empty_rate=0.0)
    noisy, clean = WorldConfig(alt_empty_rate=0.0, alt_noise_rate=1.0), WorldConfig(alt_empty_rate=0.0, alt_noise_rate=0.0)
    differ = 0
    for i in range(200):
        scene = sample_scene(random.Random(i), cfg)
        with_noise, without = alt(scene, random.Random(i), noisy), alt(scene, random.Random(i), clean)
        differ += with_noise != without
        assert prompt_facts(with_noise) == prompt_facts(without), (with_noise, without)
    assert differ == 200  # every alt-text carried noise


# ------------------------------------------------------------------- real renders
@pytest.mark.parametrize("kind", ["dsc", "ssc"])
def test_renders_pass_every_check_of_their_own_synthetic_caption(val_world, kind):
    samples, images = val_world
    results = check_images(images, [c[kind] for _, c in samples])
    assert len(results) == len(samples) and all(tuple(r) == CHECKS for r in results)
    assert all(v is not False for r in results for v in r.values())
    n = applicable_counts(results)
    assert n["exact"] == n["shape"] == len(samples) and n["size"] == n["position"] == len(samples)
    assert n["count"] == (len(samples) if kind == "dsc" else 0)  # a short caption states no count
    totals = [prompt_facts(c[kind])["total"] for _, c in samples]
    assert totals == ([{(len(s.objects),)} for s, _ in samples] if kind == "dsc" else [set()] * len(samples))


def _alt_truth(scene: Scene, stated: dict) -> dict:
    """Whether the alt-text's count and position are true of its scene, computed from the scene itself."""
    (shape,), = stated["shape"]
    count = [n == sum(o.shape == shape for o in scene.objects) for n, _, _ in stated["count"]]
    place = [any(o.shape == shape and (o.row, o.col) == CELLS[p] for o in scene.objects)
             for _, _, p in stated["position"]]
    return {"count": all(count) if count else None, "position": all(place) if place else None}


def test_alt_text_is_checked_against_what_it_says_so_its_deliberate_errors_fail_on_its_own_image(val_world):
    samples, images = val_world
    prompts = [c["alt"] for _, c in samples]
    results = check_images(images, prompts)
    wrong = {"count": 0, "position": 0}
    for (scene, _), prompt, got in zip(samples, prompts, results):
        stated = prompt_facts(prompt)
        assert got["colour"] is got["attribution"] is got["size"] is None  # alt-text never names colour or size
        if not prompt.strip():
            assert got == dict.fromkeys(CHECKS)
            continue
        assert got["shape"] is True
        truth = _alt_truth(scene, stated)
        for c in wrong:
            assert got[c] == truth[c], (prompt, scene)
            wrong[c] += truth[c] is False
        assert got["exact"] == (got["count"] is not False and got["position"] is not False)
    assert wrong["count"] > 30 and wrong["position"] > 30  # alt_wrong_*_rate = 0.3 of the world


def test_ceiling_resizes_as_the_data_layer_does_and_32px_renders_still_pass(val_world):
    import io

    samples, images = val_world
    small = resize_images(images, 32)
    buf = io.BytesIO()
    render(samples[0][0], 64).save(buf, format="PNG")
    assert small.shape == (len(samples), 3, 32, 32)
    assert torch.equal(small[0], decode_image(buf.getvalue(), 32))  # the data layer's own decode
    for kind in ("dsc", "ssc"):
        rates = pass_rates(check_images(small, [c[kind] for _, c in samples]))
        assert all(rates[c] == 1.0 for c in CHECKS if not math.isnan(rates[c])), (kind, rates)


def test_ceiling_images_round_trip_through_the_vae_in_01():
    from dalle3.config.ldm import VAEConfig
    from dalle3.ldm.model import build_vae

    torch.manual_seed(0)
    vae = build_vae(VAEConfig(), 32).eval()
    images = torch.rand(5, 3, 64, 64)
    out = ceiling_images(images, vae, 32, batch_size=2)
    assert out.shape == (5, 3, 32, 32) and float(out.min()) >= 0 and float(out.max()) <= 1
    with torch.no_grad():
        x = resize_images(images, 32)[3:4] * 2 - 1
        want = (vae.decode(vae.encode(x).latent_dist.mode()).sample / 2 + 0.5).clamp(0, 1)
    assert torch.allclose(out[3:4], want, atol=1e-5)  # the posterior mode, decoded, per batch


# ------------------------------------------------------------------- chance
def test_chance_permutation_is_a_seeded_derangement():
    perm = chance_permutation(50, seed=3)
    assert sorted(perm) == list(range(50)) and all(p != i for i, p in enumerate(perm))
    assert perm == chance_permutation(50, seed=3) and perm != chance_permutation(50, seed=4)
    assert chance_permutation(2, seed=0) == [1, 0]
    with pytest.raises(ValueError):
        chance_permutation(1, seed=0)


def test_permutation_chance_matches_the_exact_expectation(val_world):
    """Tolerance: 4 binomial standard errors sqrt(p(1-p)/A) (A = prompts the check applies to),
    plus 1/A for the discreteness of a rate; a derangement's pairs are nearly independent."""
    samples, images = val_world
    for kind in KINDS:
        prompts = [c[kind] for _, c in samples]
        expected = expected_chance(images, prompts)
        perm = chance_permutation(len(prompts), seed=0)
        results = check_images(images[perm], prompts)
        rates, n = pass_rates(results), applicable_counts(results)
        own = pass_rates(check_images(images, prompts))
        for c in CHECKS:
            if n[c] == 0:
                assert math.isnan(expected[c]) and math.isnan(rates[c])
                continue
            p = expected[c]
            tol = 4 * math.sqrt(p * (1 - p) / n[c]) + 1 / n[c]
            assert abs(rates[c] - p) <= tol, (kind, c, rates[c], p, tol)
            assert p <= own[c]  # on average, another prompt's image follows a prompt worse than its own
        if kind == "dsc":
            assert expected["exact"] < 0.05 < own["exact"]
