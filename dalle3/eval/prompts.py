"""Held-out prompts: the alt-text, SSC and DSC caption of each `val` sample, with its scene graph."""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Optional

from dalle3.data.decode import decode_json, decode_text
from dalle3.data.shards import expand_shards
from dalle3.data.skips import BadSample, SkipLog
from dalle3.data.tarstream import TarSamples
from dalle3.world.scene import Scene




@dataclass(frozen=True)
class Prompt:
    key: str
    alt: str
    dsc: str
    scene: Optional[Scene]
    "The scene the captions were written from (None for shards without our fields)."
    ssc: str = ""

    def text(self, kind: str) -> str:
        """This sample's prompt of ``kind`` (one of :data:`PROMPT_KINDS`)."""
        return {"dsc": self.dsc, "ssc": self.ssc, "alt": self.alt}[kind]


def load_prompts(spec: str, n: int) -> tuple[list[Prompt], SkipLog]:
    """The first ``n`` readable samples of ``spec`` (deterministic order), and the skip log.

    Only ``.json`` and ``.txt`` members are read: no image is decoded, nothing unpickled.
    """
    skips = SkipLog()
    reader = TarSamples(skips, keep=("json", "txt"))
    out: list[Prompt] = []
    for shard in expand_shards(spec):
        for raw in reader.read(shard):
            try:
                meta = decode_json(raw["json"]) if "json" in raw else {}
                alt = decode_text(raw["txt"]) if "txt" in raw else str(meta.get("caption") or "")
            except BadSample as bad:
                skips.record(raw["__key__"], bad.reason, bad.detail, shard)
                continue
            scene = meta.get("scene")
            scene = Scene.from_dict(scene if isinstance(scene, dict) else json.loads(scene)) if scene else None
            out.append(Prompt(raw["__key__"], alt, str(meta.get("dsc") or ""), scene, str(meta.get("ssc") or "")))
            if len(out) >= n:
                return out, skips
    return out, skips
