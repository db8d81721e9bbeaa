"""Caption quality on the synthetic world: generated captions vs. the scene graphs.

For each fact category (shape, colour, size, count, position, sign) the recall is
facts stated correctly / facts present, and the false rate is stated facts that are
not true / facts stated (both pooled over samples; :mod:`dalle3.world.facts`).
"""
from __future__ import annotations

import json
import math
from collections import Counter
from typing import Any, Callable, Iterable, Optional, Sequence, Union

import torch

from dalle3.world.facts import aggregate, score_caption
from dalle3.world.parse import CATEGORIES, caption_facts
from dalle3.world.scene import Scene

SceneLike = Union[Scene, dict, str]


def as_scene(scene: SceneLike) -> Scene:
    """A :class:`Scene` from itself, its dict, or its JSON (as the shards store it)."""
    if isinstance(scene, Scene):
        return scene
    return Scene.from_dict(json.loads(scene) if isinstance(scene, str) else scene)


def evaluate_captions(captions: Sequence[str], scenes: Sequence[SceneLike]) -> dict[str, dict[str, float]]:
    """Per category ``{"recall", "false_rate"}`` of ``captions`` against their ``scenes``."""
    if len(captions) != len(scenes):
        raise ValueError(f"{len(captions)} captions for {len(scenes)} scenes")
    return aggregate(score_caption(c, as_scene(s)) for c, s in zip(captions, scenes))


COUNT_KINDS = ("single, colour alone", "single, colour shared", "group of 2+")
"""How :func:`count_breakdown` splits a scene's colour-shape groups."""


def count_breakdown(captions: Sequence[str], scenes: Sequence[SceneLike]) -> dict[str, dict[str, float]]:
    """Count recall per kind of colour-shape group, and how the misses went wrong.

    A group is a ``single`` object whose colour no other object has ("colour alone"), a
    single object that shares its colour with an object of another shape ("colour shared":
    the caption must not merge them), or a ``group of 2+`` objects of one colour and shape
    (the caption must not split it). Per kind: ``groups`` present, ``recall`` (its count
    stated right), ``wrong_count`` (its colour and shape stated with another count: merged
    or split) and ``unnamed`` (its colour and shape never stated with a count).
    """
    if len(captions) != len(scenes):
        raise ValueError(f"{len(captions)} captions for {len(scenes)} scenes")
    tally = {kind: Counter() for kind in COUNT_KINDS}
    for caption, scene in zip(captions, scenes):
        objects = as_scene(scene).objects
        stated = caption_facts(caption)["count"]
        counts = {(c, s) for _, c, s in stated}
        colours = Counter(o.colour for o in objects)
        for (colour, shape), n in Counter((o.colour, o.shape) for o in objects).items():
            kind = COUNT_KINDS[2] if n > 1 else COUNT_KINDS[1] if colours[colour] > 1 else COUNT_KINDS[0]
            t = tally[kind]
            t["groups"] += 1
            if (n, colour, shape) in stated:
                t["recall"] += 1
            elif (colour, shape) in counts:
                t["wrong_count"] += 1
            else:
                t["unnamed"] += 1
    return {kind: {"groups": t["groups"], **{k: t[k] / t["groups"] if t["groups"] else math.nan
                                             for k in ("recall", "wrong_count", "unnamed")}}
            for kind, t in tally.items()}


def caption_batches(captioner: Callable[[torch.Tensor], list[str]], batches: Iterable[dict],
                    max_samples: Optional[int] = None, device: Any = "cpu") -> tuple[list[str], list[str], list[str]]:
    """Caption loader batches; return (generated captions, scene JSONs, reference captions)."""
    generated, scenes, references = [], [], []
    for batch in batches:
        take = len(batch["scene"]) if max_samples is None else min(len(batch["scene"]), max_samples - len(scenes))
        if take <= 0:
            break
        generated += captioner(batch["image"][:take].to(device))
        scenes += list(batch["scene"][:take])
        references += list(batch["caption"][:take])
    return generated, scenes, references


def flat_metrics(result: dict[str, dict[str, float]], prefix: str = "") -> dict[str, float]:
    """``{"colour": {"recall": r}}`` → ``{"<prefix>recall_colour": r}`` (NaNs dropped)."""
    out = {}
    for cat, values in result.items():
        for name, value in values.items():
            if not math.isnan(value):
                out[f"{prefix}{name}_{cat}"] = value
    return out


def quality_table(results: dict[str, dict[str, dict[str, float]]]) -> str:
    """Markdown table: one row per captioner, recall / false rate per category."""
    head = "| captioner | " + " | ".join(CATEGORIES) + " |"
    rule = "|---|" + "---|" * len(CATEGORIES)
    rows = [head, rule]
    for name, result in results.items():
        cells = []
        for cat in CATEGORIES:
            r, f = result[cat]["recall"], result[cat]["false_rate"]
            cells.append(f"{_fmt(r)} / {_fmt(f)}")
        rows.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def _fmt(x: float) -> str:
    return "n/a" if math.isnan(x) else f"{x:.2f}"
