"""`dalle3-eval` end to end: world → judge → vae → latents → two ldm runs → eval, tiny sizes.

Checked: one record per (run, kind, prompt) with the reference rows, runs.json read from
each run's run.json (not folder names), intermediate checkpoints scored for the curve,
only the pipeline's runs scored (a stale run beside them is not), images that open, and a
report whose links resolve.
"""
from __future__ import annotations

import json
import re
import shutil
from collections import Counter

import pytest
from PIL import Image

from dalle3.config.pipeline import LdmRunSpec, PipelineConfig
from dalle3.pipeline import EVAL, PREFIX, ldm_steps, run_pipeline
from dalle3.stages import run_stage
from dalle3.config import compose

pytestmark = pytest.mark.slow

TINY_JUDGE = ["eval.judge.arch.vision_width=32", "eval.judge.arch.vision_layers=1", "eval.judge.arch.text_width=32",
              "eval.judge.arch.text_heads=2", "eval.judge.arch.embed_dim=16", "eval.judge.arch.stem_channels=[8]"]
TWO_RUNS = ldm_steps(PipelineConfig(runs=[LdmRunSpec(caption="alt"), LdmRunSpec(ratio=0.95)]))
STEPS_NO_CAPTIONERS = (*(s for s in PREFIX if s.stage in ("world", "judge", "vae", "latents")), *TWO_RUNS, EVAL)


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    overrides = ["experiment=smoke", f"paths.out_dir={root / 'out'}", f"paths.data_dir={root / 'world'}",
                 "datagen.sizes.train=64", "datagen.sizes.val=12", "datagen.sizes.annotated=8",
                 "datagen.sizes.judge=32", "datagen.shard_size=32", "datagen.workers=1", "trainer.max_steps=4",
                 "trainer.ckpt_every_n_steps=2", "trainer.progress_bar=false", "data.num_workers=0",
                 "ldm.sample.every_n_steps=0", "eval.num_prompts=10", "eval.curve_prompts=3", "eval.steps=2",
                 "eval.grid_prompts=2", "eval.batch_size=8", "eval.judge.val_samples=8", *TINY_JUDGE]
    stale = root / "out" / "ldm" / "dsc_dsc0.95_seed0"  # lies in outputs/, is not a run of this pipeline
    (stale / "checkpoints").mkdir(parents=True)
    (stale / "checkpoints" / "last.ckpt").write_bytes(b"not a checkpoint")
    (stale / "run.json").write_text(json.dumps({"label": "stale"}))
    records = run_pipeline(overrides, STEPS_NO_CAPTIONERS, progress=False)["steps"]
    return root, records, stale, overrides


def test_eval_scores_every_kind_of_the_pipelines_runs_beside_ceiling_and_chance(evaluated):
    root, records, stale, _ = evaluated
    assert [r["step"] for r in records][-1] == "eval" and stale.exists()
    out = root / "out" / "eval"
    lines = [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()]
    runs = json.loads((out / "runs.json").read_text())
    finals = {rid for rid, r in runs.items() if r["kind"] == "model" and r["final"]}  # not the stale run
    assert finals == {"alt_dsc0.95_seed0", "blend_dsc0.95_seed0"}
    assert runs["blend_dsc0.95_seed0"]["label"] == "95% dsc" and runs["alt_dsc0.95_seed0"]["dsc_share"] == 0.0
    assert {runs[r]["step"] for r in runs if runs[r]["train_run"] == "alt_dsc0.95_seed0"} == {2, 4}
    per = Counter((r["run"], r["kind"]) for r in lines)
    for run in [*finals, "ceiling", "chance"]:
        assert per[(run, "dsc")] == per[(run, "ssc")] == 10 and 1 <= per[(run, "alt")] <= 10
    assert per[("alt_dsc0.95_seed0@2", "dsc")] == 3 and ("alt_dsc0.95_seed0@2", "ssc") not in per
    keys = {(r["run"], r["kind"], r["key"], r["seed"]) for r in lines}
    assert len(keys) == len(lines)  # one line per (run, kind, prompt)
    for r in lines:
        assert set(r["checks"]) == {"count", "colour", "attribution", "shape", "size", "position", "exact"}
        assert r["clip"] is None or 0 <= r["clip"] <= 100
        if r["image"]:
            with Image.open(out / r["image"]) as im:
                assert im.size == (32, 32)
    judge = json.loads((out / "judge.json").read_text())
    assert judge["pairs"] == 8 and set(judge["sensitivity"]) == {"colour", "count", "position", "shape"}


def test_the_report_links_resolve_and_rebuilds_from_the_files(evaluated):
    root, _, _, overrides = evaluated
    report = root / "out" / "eval" / "report"
    html = (report / "index.html").read_text()
    links = re.findall(r'(?:src|href)="([^"#:]+)"', html)
    assert links and all((report / link).exists() for link in links)
    shutil.rmtree(report)
    summary = run_stage(compose(["stage=report", *overrides]))
    assert summary["report"] == str(report / "index.html") and (report / "report.json").is_file()
