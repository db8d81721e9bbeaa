"""Exact prompt-following checks for every prompt kind (GenEval-style, no detector needed).

What is checked is what the *prompt* states, read by the world's own caption parser
(:func:`dalle3.world.parse.caption_facts`); the scene the prompt was written from is
never consulted, so an alt-text that miscounts on purpose still asks for what it says.
Unknown words (web noise) add no facts. Each image is read back by the deterministic
analyser (:func:`dalle3.world.analyse`) and every stated fact is judged against what it
found with :func:`dalle3.world.facts.judge` (a colourless "two circles" counts all circles).

Checks, per image (``None``: the prompt states nothing of that kind, so it is not scored):

* ``count``: every stated count holds ("two red circles": exactly two red circles);
* ``colour``: every colour the prompt names appears on some object (colour present);
* ``attribution``: every stated (colour, shape) pair appears (the right colour on the
  right shape);
* ``shape``, ``size``, ``position``: every stated shape / (size, colour, shape) /
  (colour, shape, position) fact holds;
* ``exact``: every applicable check passes and, for a prompt that names every object,
  the image holds no other object. A prompt names every object when it describes the
  whole picture (it names the background) and each (colour, shape) it mentions has a
  colour-bound count: the world's DSC. Its object total (the sum of those counts) is the
  ``total`` fact; for SSC and alt prompts there is none, and exact = all stated facts hold.
  ``None`` for a prompt that states nothing (an empty alt-text).

Sign text is not checked: at the generated 32 px its 1-pixel strokes do not survive
(:mod:`dalle3.world.analyse`). Size and position are judged fact by fact, as the fact
tuples hold them: two red circles with their sizes swapped pass both.

References: the *ceiling* is the same checks on the val images themselves after the
generated images' path (resize to ``ldm.image_size`` as the data layer does, VAE round
trip, :func:`ceiling_images`); *chance* scores each prompt against another prompt's image
(:func:`chance_permutation`), whose exact expectation is :func:`expected_chance`.
"""
from __future__ import annotations

import io
import math
import random
from typing import Any, Optional, Sequence

import torch

from dalle3.world.analyse import analyse
from dalle3.world.facts import judge, scene_facts
from dalle3.world.parse import caption_facts, tokenize
from dalle3.world.scene import Scene

CHECKS = ("count", "colour", "attribution", "shape", "size", "position", "exact")
"""Check names, in reporting order."""
FACT_CATEGORIES = ("shape", "colour", "size", "count", "position", "total")
"""Keys of :func:`prompt_facts`: the parser's categories without ``sign``, plus ``total``."""
_JUDGED = {"count": "count", "attribution": "colour", "shape": "shape", "size": "size",
           "position": "position"}
"""Check -> fact category it judges fact by fact."""


def _names_every_object(text: str, facts: dict[str, set]) -> bool:
    """A description of the whole picture (it names the background) whose every mention is a
    counted colour-shape group: the world's DSC, not an alt-text that says "two circles"."""
    counted = {(colour, shape) for _, colour, shape in facts["count"]}
    colourless = (any(c is None for c, _ in counted) or any(f[1] is None for f in facts["size"])
                  or any(f[0] is None for f in facts["position"]))
    uncounted = facts["colour"] - counted or {s for (s,) in facts["shape"]} - {s for _, s in counted}
    return ("noun", "background") in tokenize(text) and bool(counted) and not colourless and not uncounted


def prompt_facts(text: str) -> dict[str, set]:
    """Facts ``text`` states, keyed by :data:`FACT_CATEGORIES` (tuples of :mod:`dalle3.world.facts`).

    ``total`` is ``{(n,)}`` when the prompt names every object (n objects in all), else empty.
    """
    facts = {k: v for k, v in caption_facts(text).items() if k != "sign"}
    whole = _names_every_object(text, facts)
    facts["total"] = {(sum(n for n, _, _ in facts["count"]),)} if whole else set()
    return facts


def check_scene(found: Scene, stated: dict[str, set]) -> dict[str, Optional[bool]]:
    """Each check of :data:`CHECKS` for the scene read from an image against a prompt's facts.

    Args:
        found: what the image shows (``analyse(image).to_scene()``).
        stated: :func:`prompt_facts` of the prompt.
    """
    return check_facts(scene_facts(found), stated)


def check_facts(truth: dict[str, set], stated: dict[str, set]) -> dict[str, Optional[bool]]:
    """:func:`check_scene` on the image's :func:`~dalle3.world.facts.scene_facts` (reused by chance)."""
    out: dict[str, Optional[bool]] = {}
    for check, cat in _JUDGED.items():
        facts = stated.get(cat, ())
        out[check] = all(judge(cat, f, truth[cat])[0] for f in facts) if facts else None
    named = {colour for colour, _ in stated.get("colour", ())}
    out["colour"] = named <= {colour for colour, _ in truth["colour"]} if named else None
    out = {c: out[c] for c in CHECKS[:-1]}
    applicable = [v for v in out.values() if v is not None]
    n_objects = sum(n for n, _, _ in truth["count"])
    no_extra = all(n_objects == n for (n,) in stated.get("total", ()))
    out["exact"] = (all(applicable) and no_extra) if applicable else None
    return out


def to_pil_list(images: torch.Tensor) -> list:
    """[N, 3, H, W] in [0, 1] -> RGB ``PIL.Image`` list (rounded to uint8, as a saved PNG)."""
    from PIL import Image

    arr = (images.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    return [Image.fromarray(a) for a in arr]


def read_scenes(images: torch.Tensor) -> list[Scene]:
    """What the analyser reads from each image (any size; 32 px generated images directly)."""
    return [analyse(pil).to_scene() for pil in to_pil_list(images)]


def check_images(images: torch.Tensor, prompts: Sequence[str]) -> list[dict[str, Optional[bool]]]:
    """One :func:`check_scene` dict per image, image ``i`` against ``prompts[i]``.

    Args:
        images: [N, 3, H, W] in [0, 1].
        prompts: N prompt texts.
    """
    if len(images) != len(prompts):
        raise ValueError(f"{len(images)} images for {len(prompts)} prompts")
    return [check_scene(found, prompt_facts(p)) for found, p in zip(read_scenes(images), prompts)]


def pass_rates(results: Sequence[dict[str, Optional[bool]]]) -> dict[str, float]:
    """Per check, the share of applicable results that pass (NaN where none applies)."""
    out = {}
    for c in CHECKS:
        scored = [r[c] for r in results if r[c] is not None]
        out[c] = sum(scored) / len(scored) if scored else math.nan
    return out


def applicable_counts(results: Sequence[dict[str, Optional[bool]]]) -> dict[str, int]:
    """Per check, how many results it applies to (the denominator of :func:`pass_rates`)."""
    return {c: sum(r[c] is not None for r in results) for c in CHECKS}


def resize_images(images: torch.Tensor, size: int) -> torch.Tensor:
    """[N, 3, H, W] in [0, 1] -> [N, 3, size, size], resized exactly as the data layer does.

    Through :func:`dalle3.data.decode.decode_image` itself (PNG is lossless), so the
    ceiling sees the resize that the latents and ldm stages apply to training images.
    """
    from dalle3.data.decode import decode_image

    out = []
    for pil in to_pil_list(images):
        buf = io.BytesIO()
        pil.save(buf, format="PNG")
        out.append(decode_image(buf.getvalue(), size))
    return torch.stack(out)


@torch.no_grad()
def ceiling_images(images_64px: torch.Tensor, vae: Any, size: int, batch_size: int = 64) -> torch.Tensor:
    """Real images through the generated images' path: resize to ``size``, VAE encode
    (posterior mode) and decode. Returns [N, 3, size, size] in [0, 1] on the CPU.

    Args:
        images_64px: [N, 3, H, W] in [0, 1], the val split as stored.
        vae: a diffusers ``AutoencoderKL`` (the vae stage's).
        size: ``ldm.image_size``.
    """
    small = resize_images(images_64px, size)
    device = next(vae.parameters()).device
    chunks = []
    for i in range(0, len(small), batch_size):
        x = small[i:i + batch_size].to(device) * 2 - 1
        chunks.append((vae.decode(vae.encode(x).latent_dist.mode()).sample / 2 + 0.5).clamp(0, 1).cpu())
    return torch.cat(chunks)


def chance_permutation(n: int, seed: int) -> list[int]:
    """A uniformly drawn derangement of ``range(n)``: prompt ``i`` is scored on image ``perm[i]``.

    Rejection sampling (about e draws), so every image of another prompt is equally likely.
    """
    if n == 1:
        raise ValueError("chance needs at least two prompts (a derangement of one does not exist)")
    rng = random.Random(seed)
    while True:
        perm = list(range(n))
        rng.shuffle(perm)
        if all(p != i for i, p in enumerate(perm)):
            return perm


def expected_chance(images: torch.Tensor, prompts: Sequence[str]) -> dict[str, float]:
    """Exact expected chance rate per check: every prompt against every *other* image.

    Applicability depends on the prompt only, so the expected :func:`pass_rates` of a
    uniform derangement is the pooled pass rate over all ordered pairs ``i != j``.
    """
    truths = [scene_facts(s) for s in read_scenes(images)]
    stated = [prompt_facts(p) for p in prompts]
    passed, scored = dict.fromkeys(CHECKS, 0), dict.fromkeys(CHECKS, 0)
    for i, facts in enumerate(stated):
        for j, truth in enumerate(truths):
            if i == j:
                continue
            for c, ok in check_facts(truth, facts).items():
                if ok is not None:
                    scored[c] += 1
                    passed[c] += ok
    return {c: passed[c] / scored[c] if scored[c] else math.nan for c in CHECKS}
