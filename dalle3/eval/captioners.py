"""How well the captioners' own recaptions state the world's truth (the report's captioner table).

The recaption output (``recaption.mode=shards``) keeps each sample's scene graph in its JSON
member and adds ``{key}.ssc.txt`` / ``{key}.dsc.txt`` for every sample a captioner captioned;
samples without them were not captioned and are not scored.
"""
from __future__ import annotations

import json
from typing import Optional

from dalle3.data.shards import expand_shards
from dalle3.recaption.data import read_raw_samples
from dalle3.world.facts import aggregate, score_caption
from dalle3.world.scene import Scene

KINDS = ("ssc", "dsc")


def recaption_recall(spec: str, limit: int = 2048) -> Optional[dict]:
    """``{kind: {category: {"recall", "false_rate"}}, "samples": {kind: n}}`` over the first
    ``limit`` captioned samples of ``spec``; None when it holds no recaptioned sample."""
    scores: dict[str, list] = {k: [] for k in KINDS}
    for shard in expand_shards(spec):
        for sample in read_raw_samples(shard, {}):
            members = {suffix: data for _, suffix, data in sample.members}
            if "json" not in members:
                continue
            scene = json.loads(members["json"]).get("scene")
            if not scene:
                continue
            scene = Scene.from_dict(scene if isinstance(scene, dict) else json.loads(scene))
            for kind in KINDS:
                if f"{kind}.txt" in members and len(scores[kind]) < limit:
                    scores[kind].append(score_caption(members[f"{kind}.txt"].decode("utf-8"), scene))
        if all(len(v) >= limit for v in scores.values()):
            break
    if not any(scores.values()):
        return None
    out: dict = {k: _finite(aggregate(v)) for k, v in scores.items() if v}
    out["samples"] = {k: len(v) for k, v in scores.items()}
    return out


def _finite(table: dict) -> dict:
    return {cat: {k: (None if v != v else round(v, 4)) for k, v in row.items()} for cat, row in table.items()}
