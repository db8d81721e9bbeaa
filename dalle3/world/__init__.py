"""The synthetic world: a data set whose ground truth is known exactly.

Scenes of coloured shapes on a 3x3 grid, with an optional sign, each with three captions
that mimic the paper's sources: web alt-text (``alt``, with its defects), short synthetic
captions (``ssc``) and descriptive synthetic captions (``dsc``). Facts parsed from any
caption can be scored against the scene, and :func:`analyse` reads a scene back from
pixels, so both the captioner and the text-to-image model can be evaluated exactly.
"""
from dalle3.world.analyse import Analysis, Detection, analyse, render_agreement
from dalle3.world.captions import alt, dsc, make_captions, ssc
from dalle3.world.facts import aggregate, judge, scene_facts, score_caption, score_facts
from dalle3.world.parse import CATEGORIES, caption_facts
from dalle3.world.render import render
from dalle3.world.scene import Obj, Scene, Sign, sample_scene
from dalle3.world.writer import (SPLITS, SPLIT_SHARD_OFFSET, make_sample, sample_rng, write_split,
                                 write_world)

__all__ = [
    "Analysis", "CATEGORIES", "Detection", "Obj", "SPLITS", "SPLIT_SHARD_OFFSET", "Scene", "Sign",
    "aggregate", "alt", "analyse", "caption_facts", "dsc", "judge", "make_captions", "make_sample",
    "render", "render_agreement", "sample_rng", "sample_scene", "scene_facts", "score_caption",
    "score_facts", "ssc", "write_split", "write_world",
]
