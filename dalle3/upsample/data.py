"""(short prompt -> descriptive caption) pairs of the synthetic world, for the world's upsampler LM.

Scenes come from the world's train split (:func:`dalle3.world.writer.make_sample`, a pure
function of seed, split and index, so no shard is read); a short prompt is the scene's SSC
or an alt-style prompt of it, and the target is a DSC of the same scene. Each draw phrases
the captions anew (its own seeded ``random.Random``), so the LM learns the mapping, not the
4,096 sentences. The targets put the main subject's group first (``dsc`` order ``subject``):
the LM then restates the request before it invents the rest of the scene.

The alt-style prompts keep alt-text's form (shape, maybe a count, a place, web noise) but not
its wrong counts and places: a target that contradicts its prompt would teach the upsampler to
overrule the user, and keeping what the user asked for is its one hard rule.
"""
from __future__ import annotations

import dataclasses
import hashlib
import random
from typing import Any, Iterator, Sequence

import torch

from dalle3.config.world import WorldConfig
from dalle3.world.captions import alt, dsc, ssc
from dalle3.world.scene import Scene
from dalle3.world.writer import make_sample

SHORT_KINDS = ("ssc", "alt")


def alt_style_config(world: WorldConfig, colour_rate: float) -> WorldConfig:
    """``world`` with alt-text's defects off (no wrong counts or places, no empty prompt) and
    ``colour_rate`` of prompts naming the colour; web noise stays."""
    return dataclasses.replace(world, alt_wrong_count_rate=0.0, alt_wrong_position_rate=0.0, alt_empty_rate=0.0,
                               alt_colour_rate=colour_rate)


def _rng(*parts: Any) -> random.Random:
    digest = hashlib.sha256("/".join(map(str, ("dalle3.upsample", *parts))).encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def short_prompt(scene: Scene, kind: str, rng: random.Random, alt_cfg: WorldConfig) -> str:
    """The scene's SSC or an alt-style prompt (``kind``)."""
    return ssc(scene, rng) if kind == "ssc" else alt(scene, rng, alt_cfg)


def training_pair(seed: int, split: str, index: int, draw: int, world: WorldConfig, alt_cfg: WorldConfig,
                  order: str = "subject") -> tuple[str, str]:
    """``(short prompt, DSC)`` of sample ``index`` of ``split``, phrased by draw ``draw``; the DSC in
    ``order`` (:func:`dalle3.world.captions.dsc`)."""
    scene, _ = make_sample(seed, split, index, world)
    rng = _rng(seed, split, index, draw)
    kind = SHORT_KINDS[draw % 2]
    return short_prompt(scene, kind, rng, alt_cfg), dsc(scene, rng, order)


def heldout_prompts(seed: int, split: str, n: int, world: WorldConfig, alt_cfg: WorldConfig
                    ) -> list[tuple[str, str, Scene]]:
    """``(kind, prompt, scene)``: the stored SSC and one alt-style prompt of each of ``n`` samples of ``split``."""
    out = []
    for i in range(n):
        scene, captions = make_sample(seed, split, i, world)
        out.append(("ssc", captions["ssc"], scene))
        out.append(("alt", short_prompt(scene, "alt", _rng(seed, split, i, "heldout"), alt_cfg), scene))
    return out


def encode_pair(tokenizer: Any, template: str, prompt: str, target: str) -> tuple[list[int], list[int]]:
    """``(input ids, labels)``: the request as the upsampler will give it, then the target and ``<eos>``;
    the request's labels are -100, so the loss is on the description only."""
    head = tokenizer(template.format(prompt=prompt))["input_ids"]
    tail = tokenizer(target, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    return head + tail, [-100] * len(head) + tail


def collate(pairs: Sequence[tuple[list[int], list[int]]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded ``input_ids``, ``attention_mask`` and ``labels`` (-100 on padding)."""
    n = max(len(ids) for ids, _ in pairs)
    ids = torch.full((len(pairs), n), pad_id, dtype=torch.long)
    labels = torch.full((len(pairs), n), -100, dtype=torch.long)
    mask = torch.zeros((len(pairs), n), dtype=torch.long)
    for row, (x, y) in enumerate(pairs):
        ids[row, :len(x)], labels[row, :len(y)], mask[row, :len(x)] = torch.tensor(x), torch.tensor(y), 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def batches(tokenizer: Any, template: str, world_seed: int, seed: int, scenes: int, batch_size: int,
            max_length: int, world: WorldConfig, alt_cfg: WorldConfig,
            order: str = "subject") -> Iterator[dict[str, torch.Tensor]]:
    """Endless training batches over the first ``scenes`` train-split samples of the world ``world_seed``;
    each pass visits them in a new order drawn from ``seed``."""
    indices = list(range(scenes))
    draw, buffer = 0, []
    while True:
        _rng(seed, "order", draw // scenes).shuffle(indices)
        for index in indices:
            prompt, target = training_pair(world_seed, "train", index, draw + seed, world, alt_cfg, order)
            draw += 1
            ids, labels = encode_pair(tokenizer, template, prompt, target)
            if len(ids) <= max_length:
                buffer.append((ids, labels))
            if len(buffer) == batch_size:
                yield collate(buffer, tokenizer.pad_token_id)
                buffer = []
