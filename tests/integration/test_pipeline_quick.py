"""`dalle3-pipeline pipeline=quick` end to end, as a user runs it: every step, the summary, the report.

The quick set is the default set of ldm runs (alt, 65 %, 95 % and 100 % DSC) on the smoke world,
so every artefact of `make demo` is made and checked here: summary.json's schema, the progress
line, PNGs that open, report links that resolve, and the three findings printed one line each.
"""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

pytestmark = pytest.mark.slow

STEP_NAMES = ["world", "judge", "text_encoder", "captioner_pretrain", "captioner_finetune_ssc", "captioner_finetune_dsc", "recaption",
              "vae", "latents", "upsample", "ldm_alt_seed0", "ldm_dsc65_seed0", "ldm_dsc95_seed0", "ldm_dsc100_seed0", "eval"]


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    root = tmp_path_factory.mktemp("quick")
    cmd = [sys.executable, "-m", "dalle3.pipeline", "pipeline=quick", f"paths.out_dir={root / 'out'}",
           f"paths.data_dir={root / 'world'}", "trainer.progress_bar=false", "recaption.progress_bar=false",
           "datagen.workers=1"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return root / "out", proc


def test_the_summary_holds_every_step_run_score_and_finding(quick):
    out, proc = quick
    summary = json.loads((out / "summary.json").read_text())
    assert summary["schema"] == 1 and summary["pipeline"] == "quick"
    assert [s["step"] for s in summary["steps"]] == STEP_NAMES
    assert all(s["status"] == "done" and s["seconds"] > 0 for s in summary["steps"])
    assert all(s["seconds"] <= summary["seconds"] for s in summary["steps"])
    ldm = [s for s in summary["steps"] if s["stage"] == "ldm"]  # two at a time, one thread each (pipeline.lanes auto)
    assert all(Path(s["log"]).is_file() and s["threads"] == 1 for s in ldm)
    assert set(summary["stage_seconds"]) == {s["stage"] for s in summary["steps"]}
    models = {r: v for r, v in summary["runs"].items() if v["kind"] == "model"}
    assert sorted(v["dsc_share"] for v in models.values()) == [0.0, 0.65, 0.95, 1.0]
    infos = [json.loads(p.read_text()) for p in sorted((out / "ldm").glob("*/run.json"))]
    assert len(infos) == 4  # every ldm run conditions on the text_encoder step's CLIP text tower
    assert all(i["ldm"]["text_encoder"]["kind"] == "world_clip" and
               i["ldm"]["text_encoder"]["pretrained"] == str(out / "text_encoder" / "converted") for i in infos)
    assert {"ceiling", "chance"} <= set(summary["runs"])
    for run in models.values():
        for kind in ("dsc", "ssc", "alt"):
            assert set(run[kind]) >= {"clip", "colour", "count", "position", "attribution", "exact"}
            assert run[kind]["clip"]["n"] > 0 and run[kind]["clip"]["lo"] <= run[kind]["clip"]["mean"] <= run[kind]["clip"]["hi"]
    recall = summary["captioners"]
    assert set(recall) >= {"ssc", "dsc"} and 0 <= recall["dsc"]["colour"]["recall"] <= 1
    assert [f["a"] + "-" + f["b"] for f in summary["findings"]] == ["dsc95-alt", "dsc95-dsc65", "dsc95-dsc100"]
    for f in summary["findings"]:
        assert f["holds"] in (True, False) and f["interval"][0] <= f["margin"] <= f["interval"][1]
        assert f["line"] in proc.stdout  # printed one line each at the end
    assert f"report: {summary['report']}" in proc.stdout and Path(summary["report"]).is_file()


def test_the_progress_line_counts_the_steps_with_time_left(quick):
    _, proc = quick
    lines = [line for line in proc.stderr.splitlines() if line.startswith("[dalle3-pipeline ")]
    n = len(STEP_NAMES)
    starts = [line for line in lines if re.match(rf"\[dalle3-pipeline \d+/{n}\] \S+ \| ", line)]
    assert [re.match(rf"\[dalle3-pipeline (\d+)/{n}\] (\S+)", line).groups() for line in starts] == \
        [(str(i + 1), name) for i, name in enumerate(STEP_NAMES)]
    assert all(re.search(r"\| \d+m\d\ds elapsed \| ~\d+m\d\ds left$", line) for line in starts)
    assert any(f"all {n} steps done in" in line for line in proc.stderr.splitlines())


def test_report_links_resolve_and_images_open(quick):
    out, _ = quick
    report = out / "eval" / "report"
    html = (report / "index.html").read_text()
    assert 'id="findings"' in html
    links = re.findall(r'(?:src|href)="([^"#:]+)"', html)
    assert links and all((report / link).exists() for link in links)
    pngs = [report / link for link in links if link.endswith(".png")]
    assert len(pngs) >= 8
    for png in pngs:
        with Image.open(png) as im:
            im.verify()
