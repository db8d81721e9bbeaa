"""Exact prompt-following checks on the synthetic world (GenEval-style, no detector needed).

Each generated image is read back by the world's deterministic analyser
(:func:`dalle3.world.analyse`, 1.00 on real renders) and its objects are compared with
the scene graph the prompt was written from:

* ``colour``: every prompted colour appears somewhere in the image (attribute only);
* ``binding``: every prompted (colour, shape) pair appears (colour attribution);
* ``count``: the image holds exactly as many objects as the prompt;
* ``position``: the object named for a cell is in that cell with its colour;
* ``exact``: all of the above at once, and nothing extra.
"""
from __future__ import annotations

from typing import Sequence

import torch

from dalle3.world.analyse import analyse
from dalle3.world.scene import Scene

CHECKS = ("colour", "binding", "count", "position", "exact")


def to_pil_list(images: torch.Tensor):
    from PIL import Image

    arr = (images.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    return [Image.fromarray(a) for a in arr]


def check_one(found: Scene, truth: Scene) -> dict[str, bool]:
    want_colours = {o.colour for o in truth.objects}
    got_colours = {o.colour for o in found.objects}
    want_pairs = {(o.colour, o.shape) for o in truth.objects}
    got_pairs = {(o.colour, o.shape) for o in found.objects}
    got_cells = {(o.row, o.col): o.colour for o in found.objects}
    position = all(got_cells.get((o.row, o.col)) == o.colour for o in truth.objects)
    checks = {
        "colour": want_colours <= got_colours,
        "binding": want_pairs <= got_pairs,
        "count": len(found.objects) == len(truth.objects),
        "position": position,
    }
    checks["exact"] = all(checks.values()) and got_pairs == want_pairs
    return checks


def follow_scores(images: torch.Tensor, truths: Sequence[Scene]) -> dict[str, float]:
    """Share of images passing each check in :data:`CHECKS` (images in [0, 1])."""
    totals = dict.fromkeys(CHECKS, 0)
    for pil, truth in zip(to_pil_list(images), truths):
        for name, ok in check_one(analyse(pil).to_scene(), truth).items():
            totals[name] += bool(ok)
    n = max(len(truths), 1)
    return {name: totals[name] / n for name in CHECKS}
