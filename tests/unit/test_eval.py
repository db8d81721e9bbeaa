"""Prompt-following checks, run labels and held-out prompts of the evaluation stage."""
from __future__ import annotations

import random

import torch
from torchvision.transforms.functional import pil_to_tensor

from dalle3.config.schema import WorldConfig
from dalle3.eval.follow import check_one, follow_scores
from dalle3.eval.prompts import load_prompts
from dalle3.eval.report import markdown_table, run_label
from dalle3.world import render, sample_scene
from dalle3.world.scene import Obj, Scene
from dalle3.world.writer import write_split


def _scenes(n, seed=0):
    rng = random.Random(seed)
    return [sample_scene(rng, WorldConfig()) for _ in range(n)]


def _images(scenes):
    return torch.stack([pil_to_tensor(render(s, 64)).float() / 255 for s in scenes])


def test_renders_of_the_prompted_scene_pass_every_check():
    scenes = _scenes(40)
    scores = follow_scores(_images(scenes), scenes)
    assert scores == {"colour": 1.0, "binding": 1.0, "count": 1.0, "position": 1.0, "exact": 1.0}


def test_wrong_images_fail_the_checks_they_should():
    scenes = _scenes(40)
    shifted = scenes[1:] + scenes[:1]  # every image shows another scene
    scores = follow_scores(_images(shifted), scenes)
    assert scores["exact"] < 0.2 and scores["position"] < 0.3


def test_check_one_separates_colour_from_binding():
    truth = Scene([Obj("circle", "red", "large", 0, 0), Obj("square", "blue", "large", 2, 2)], "white", None)
    swapped = Scene([Obj("square", "red", "large", 0, 0), Obj("circle", "blue", "large", 2, 2)], "white", None)
    got = check_one(swapped, truth)
    assert got["colour"] and got["count"] and got["position"]  # colours right, in the right cells
    assert not got["binding"] and not got["exact"]  # but bound to the wrong shapes


def test_run_label_reads_the_caption_setting():
    assert run_label("outputs/ldm/blend_dsc0.95") == {"run": "95% dsc", "source": "blend", "synthetic": "dsc",
                                                      "share": 0.95}
    assert run_label("outputs/ldm/alt_dsc0.95")["share"] == 0.0
    table = markdown_table([{"run": "alt", "step": 10, "clip_alt": 25.1, "follow_colour": 0.5}])
    assert "| alt | 10 | 25.10 | n/a | 0.500 |" in table


def test_prompts_come_with_their_scene(tmp_path):
    write_split(str(tmp_path), "val", 12, 5, WorldConfig(image_size=32), seed=3, progress=False)
    prompts, skips = load_prompts(str(tmp_path / "val"), 10)
    assert len(prompts) == 10 and skips.total == 0
    assert all(p.scene is not None and p.dsc for p in prompts)
    first = prompts[0]
    assert all(o.colour in first.dsc for o in first.scene.objects)  # the DSC prompt names every colour
