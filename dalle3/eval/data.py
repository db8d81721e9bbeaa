"""The world judge's training samples: pure per-sample transforms for :class:`dalle3.data.ShardDataModule`.

* :func:`drop_empty_caption`: an empty alt-text carries nothing about its image, and every
  empty caption of a batch is one text that ClipLoss would have to match to several images.
* :class:`TwinScenes` (``eval.judge.twins``): each sample brings a *twin*, its scene with one
  object changed (its colour, shape or cell, or one object more or fewer of a colour-shape
  group, :func:`twin_scene`), rendered as the world renders and described by a fresh descriptive
  caption. Random in-batch negatives differ from a caption in many facts, so a contrastive
  judge can match them by colours and shapes alone and never learn where things are or how
  many there are (the "bag of words" behaviour of CLIPs, Yuksekgonul et al. 2023); a twin
  in the same batch is a negative that differs in exactly one fact, for images and texts
  alike, and ClipLoss is left as it is. The twins are scene edits with newly written
  captions, not the string edits of the judge's validation (:mod:`dalle3.eval.edits`).
"""
from __future__ import annotations

import hashlib
import json
import random
from collections import Counter
from typing import Any, Optional

import numpy as np
import torch
from PIL import Image, ImageOps

from dalle3.world.captions import make_captions
from dalle3.world.lexicon import COLOURS, GRID, SHAPES, SIZES
from dalle3.world.render import render
from dalle3.world.scene import Obj, Scene

TWIN_EDITS = ("colour", "shape", "position", "count")
"The one fact a twin changes."


def drop_empty_caption(sample: dict) -> Optional[dict]:
    """``sample`` unless its picked caption is empty (then None: the data layer drops it)."""
    return sample if sample["caption"].strip() else None


def _free_cells(scene: Scene) -> list[tuple[int, int]]:
    taken = {(o.row, o.col) for o in scene.objects} | set(scene.sign.cells if scene.sign else ())
    return [(r, c) for r in range(GRID) for c in range(GRID) if (r, c) not in taken]


def twin_scene(scene: Scene, rng: random.Random, weights: Optional[dict] = None) -> tuple[Scene, str]:
    """``(scene with one fact changed, which kind of fact)``; the input is not modified.

    colour / shape / position: one object's colour, shape or (free) cell. count: one more
    object of an object's colour and shape in a free cell, or one fewer of a colour-shape
    group that has two or more (removing a lone object would drop its shape and colour too).
    ``weights``: relative odds of each kind among those the scene allows (``eval.judge.twin_weights``);
    ``None`` or all equal: uniform.
    """
    objects, free = list(scene.objects), _free_cells(scene)
    kinds = Counter((o.colour, o.shape) for o in objects)
    removable = [i for i, o in enumerate(objects) if kinds[(o.colour, o.shape)] > 1]
    allowed = ["colour", "shape"] + (["position"] if free else []) + (["count"] if free or removable else [])
    odds = [float(weights[k]) for k in allowed] if weights else []
    if odds and len(set(odds)) > 1 and sum(odds) > 0:
        kind = rng.choices(allowed, weights=odds)[0]
    else:
        kind = rng.choice(allowed)
    i = rng.randrange(len(objects))
    o = objects[i]
    if kind == "colour":
        objects[i] = Obj(o.shape, rng.choice([c for c in sorted(COLOURS) if c != o.colour]), o.size, o.row, o.col)
    elif kind == "shape":
        objects[i] = Obj(rng.choice([s for s in SHAPES if s != o.shape]), o.colour, o.size, o.row, o.col)
    elif kind == "position":
        objects[i] = Obj(o.shape, o.colour, o.size, *rng.choice(free))
    elif free and (not removable or rng.random() < 0.5):  # one more object of o's colour and shape
        objects.append(Obj(o.shape, o.colour, rng.choice(SIZES), *rng.choice(free)))
    else:  # one fewer of a group of two or more
        del objects[rng.choice(removable)]
    return Scene(objects, scene.background, scene.sign), kind


def to_tensor(image: Image.Image, size: int) -> torch.Tensor:
    """A render as the data layer decodes it: bicubic ``ImageOps.fit`` to ``size``, CHW float in [0, 1]."""
    if image.size != (size, size):
        image = ImageOps.fit(image, (size, size), Image.Resampling.BICUBIC)
    return torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.float32).transpose(2, 0, 1) / 255)


class TwinScenes:
    """Sample transform: drop empty captions, then add ``twin_image`` [3, S, S] and ``twin_caption`` (DSC).

    Args:
        world: the ``WorldConfig`` the shards were written with (render side, caption style).
        image_size: the side training reads (``data.image_size``).
        seed: with the sample key, fixes each sample's twin.
        weights: relative odds of the fact a twin changes (:func:`twin_scene`).
    """

    def __init__(self, world: Any, image_size: int, seed: int = 0, weights: Optional[dict] = None):
        self.world, self.image_size, self.seed = world, int(image_size), int(seed)
        self.weights = dict(weights) if weights else None

    def __call__(self, sample: dict) -> Optional[dict]:
        if drop_empty_caption(sample) is None or not sample.get("scene_json"):
            return None
        digest = hashlib.sha256(f"dalle3.judge.twin/{self.seed}/{sample['key']}".encode()).digest()
        rng = random.Random(int.from_bytes(digest[:8], "big"))
        twin, _ = twin_scene(Scene.from_dict(json.loads(sample["scene_json"])), rng, self.weights)
        sample["twin_image"] = to_tensor(render(twin, self.world.image_size), self.image_size)
        sample["twin_caption"] = make_captions(twin, rng, self.world)["dsc"]
        return sample
