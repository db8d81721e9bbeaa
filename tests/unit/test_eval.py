"""Held-out prompts of the evaluation: every kind of caption of each val sample, with its scene."""
from __future__ import annotations

from dalle3.config.schema import WorldConfig
from dalle3.eval.prompts import load_prompts
from dalle3.world.writer import write_split


def test_prompts_come_with_their_scene(tmp_path):
    write_split(str(tmp_path), "val", 12, 5, WorldConfig(image_size=32), seed=3, progress=False)
    prompts, skips = load_prompts(str(tmp_path / "val"), 10)
    assert len(prompts) == 10 and skips.total == 0
    assert all(p.scene is not None and p.dsc and p.ssc for p in prompts)
    assert [p.text("dsc") for p in prompts] == [p.dsc for p in prompts]
    assert [p.text("ssc") for p in prompts] == [p.ssc for p in prompts] != [p.dsc for p in prompts]
    first = prompts[0]
    assert all(o.colour in first.dsc for o in first.scene.objects)  # the DSC prompt names every colour
