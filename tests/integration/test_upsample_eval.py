"""`upsample=true` in `dalle3-generate` and `dalle3-eval`, end to end on tiny sizes.

world -> judge -> vae -> latents -> one ldm run -> upsample (a few steps) -> eval upsample=true -> generate
upsample=true. Checked: the upsampled records are scored against the ORIGINAL short prompt (its text and
its facts), carry the text the LDM saw and the guard's verdict, pair one to one with the plain records of
the same run, prompt and seed, and the report shows the with/without section; generate writes the
upsampled prompt beside its images.
"""
from __future__ import annotations

import json
from collections import Counter

import pytest

from dalle3.config.pipeline import LdmRunSpec, PipelineConfig
from dalle3.pipeline import EVAL, PREFIX, Step, ldm_steps, run_pipeline
from dalle3.stages import run_stage
from dalle3.config import compose

pytestmark = pytest.mark.slow

TINY_JUDGE = ["eval.judge.arch.vision_width=32", "eval.judge.arch.vision_layers=1", "eval.judge.arch.text_width=32",
              "eval.judge.arch.text_heads=2", "eval.judge.arch.embed_dim=16", "eval.judge.arch.stem_channels=[8]"]
TINY_UPSAMPLER = ["upsample.train.steps=40", "upsample.train.layers=2", "upsample.train.width=64",
                  "upsample.train.heldout=4", "upsample.generation.max_new_tokens=48"]
STEPS = (*(s for s in PREFIX if s.stage in ("world", "judge", "vae", "latents")),
         *ldm_steps(PipelineConfig(runs=[LdmRunSpec(ratio=0.95)])), Step("upsample"),
         Step("eval", ("upsample.enabled=true",)))


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval_up")
    overrides = ["experiment=smoke", f"paths.out_dir={root / 'out'}", f"paths.data_dir={root / 'world'}",
                 "datagen.sizes.train=64", "datagen.sizes.val=12", "datagen.sizes.annotated=8",
                 "datagen.sizes.judge=32", "datagen.shard_size=32", "datagen.workers=1", "trainer.max_steps=4",
                 "trainer.ckpt_every_n_steps=4", "trainer.progress_bar=false", "data.num_workers=0",
                 "ldm.sample.every_n_steps=0", "eval.num_prompts=10", "eval.curve=false", "eval.steps=2",
                 "eval.grid_prompts=2", "eval.batch_size=8", "eval.judge.val_samples=8", *TINY_JUDGE, *TINY_UPSAMPLER]
    run_pipeline(overrides, STEPS, progress=False)
    return root, overrides


def test_upsampled_images_are_scored_against_the_original_short_prompt(evaluated):
    from dalle3.eval.checks import prompt_facts

    root, _ = evaluated
    out = root / "out" / "eval"
    lines = [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()]
    per = Counter((r["run"], r["kind"]) for r in lines)
    run = "blend_dsc0.95_seed0"
    assert per[(run, "ssc_up")] == per[(run, "ssc")] == 10 and per[(run, "alt_up")] == per[(run, "alt")] >= 1
    assert not any(r["kind"].endswith("_up") for r in lines if r["run"] in ("ceiling", "chance"))
    plain = {(r["kind"], r["key"], r["seed"]): r for r in lines if r["run"] == run}
    for r in (r for r in lines if r["kind"].endswith("_up")):
        twin = plain[(r["kind"][:-3], r["key"], r["seed"])]
        assert r["prompt"] == twin["prompt"]  # scored against the short prompt, not the upsampled text
        assert set(r) >= {"upsampled", "fallback"} and r["upsampled"]
        if r["fallback"] is not None:
            assert r["upsampled"] == r["prompt"]
        # the checks that apply are those of the facts the short prompt states
        stated = prompt_facts(r["prompt"])
        assert (r["checks"]["colour"] is None) == (not stated["colour"])
        assert (r["checks"]["shape"] is None) == (not stated["shape"])
    summary = json.loads((out / "upsample.json").read_text())
    assert summary["name"] == "world" and summary["prompts"]["ssc"] == 10
    assert sum(summary["fallbacks"]["ssc"].values()) == sum(r["fallback"] is not None for r in lines
                                                            if r["kind"] == "ssc_up")


def test_the_report_has_the_with_and_without_section(evaluated):
    root, _ = evaluated
    rep = json.loads((root / "out" / "eval" / "report" / "report.json").read_text())
    assert set(rep["upsampling"]) == {"ssc", "alt"}
    row = rep["upsampling"]["ssc"][0]
    assert row["run"] == "blend_dsc0.95_seed0" and row["metrics"]["clip"]["n"] == 10
    html = (root / "out" / "eval" / "report" / "index.html").read_text()
    assert '<table class="upsampling" data-kind="ssc">' in html


def test_generate_writes_the_upsampled_prompt_beside_the_images(evaluated, tmp_path):
    root, overrides = evaluated
    cfg = compose([*overrides, "stage=generate", "caption=blend", "upsample.enabled=true",
                   "ldm.generate.prompt=a small red circle in the top left", "ldm.generate.n=2",
                   "ldm.generate.steps=2", f"paths.run_dir={tmp_path}", "ldm.generate.export_dir=null",
                   f"ldm.generate.ckpt_dir={root / 'out' / 'ldm' / 'blend_dsc0.95_seed0'}"])
    summary = run_stage(cfg)
    assert summary["prompt"] == "a small red circle in the top left" and summary["upsampled_prompt"]
    text = (tmp_path / "prompt.txt").read_text()
    assert text.startswith("prompt: a small red circle in the top left\nupsampled: " + summary["upsampled_prompt"])
    assert len(summary["images"]) == 2 and all((tmp_path / p).is_file() for p in summary["images"])
