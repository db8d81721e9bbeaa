"""The report's prompt-upsampling section: paired with/without differences from ``<kind>_up`` records."""
from __future__ import annotations

import json

import pytest
from helpers.eval_records import write_eval_dir

from dalle3.eval.report import write_report
from dalle3.eval.upsample import upsampled_kind

GAIN = {"alt_dsc0.95": -1.0, "blend_dsc0.95": 2.0, "dsc_dsc0.95": 4.0}
"CLIP points the upsampled prompt adds, per final run (the alt-only model gains nothing from DSC text)."


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = write_eval_dir(tmp_path_factory.mktemp("eval_up"))
    records = [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()]
    extra = []
    for rec in records:
        if rec["run"] in GAIN and rec["kind"] in ("ssc", "alt"):
            i = int(rec["key"][-5:])
            fallback = "dropped_content" if i % 5 == 0 else None  # 2 of 10 prompts fall back
            up = dict(rec, kind=upsampled_kind(rec["kind"]), upsampled=f"long {rec['prompt']}", fallback=fallback,
                      clip=rec["clip"] + (0.0 if fallback else GAIN[rec["run"]] + 0.1 * (i % 3)), image=None)
            up["checks"] = dict(rec["checks"], exact=True)
            extra.append(up)
    (out / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records + extra))
    index = write_report(out, n_boot=500)
    return index, json.loads((index.parent / "report.json").read_text())


def test_the_comparison_pairs_each_run_with_itself_on_the_original_prompts(report):
    _, rep = report
    comp = rep["upsampling"]
    assert set(comp) == {"ssc", "alt"}
    for kind, rows in comp.items():
        assert {r["run"] for r in rows} == set(GAIN)  # final model runs only: no checkpoints, no references
        for row in rows:
            clip = row["metrics"]["clip"]
            assert clip["n"] == 10 and row["fallback_rate"] == pytest.approx(0.2)
            # 8 upsampled prompts gain GAIN (+0..0.2), the 2 fallbacks gain nothing
            assert clip["diff"] == pytest.approx(0.8 * GAIN[row["run"]] + 0.1 * 8 / 10, abs=0.15)
            assert clip["lo"] <= clip["diff"] <= clip["hi"]
            assert clip["diff"] == pytest.approx(row["with"]["clip"]["mean"] - row["without"]["clip"]["mean"])
            assert row["with"]["exact"]["mean"] == 1.0
    dsc_run = next(r for r in comp["ssc"] if r["run"] == "dsc_dsc0.95")["metrics"]["clip"]
    assert dsc_run["lo"] > 0  # a 4-point gain on 8 of 10 prompts is resolved
    alt_run = next(r for r in comp["ssc"] if r["run"] == "alt_dsc0.95")["metrics"]["clip"]
    assert alt_run["hi"] < 0


def test_the_page_shows_the_section_with_one_row_per_run(report):
    index, _ = report
    html = index.read_text()
    assert 'id="upsampling"' in html and 'href="#upsampling"' in html
    for kind in ("ssc", "alt"):
        table = html.split(f'<table class="upsampling" data-kind="{kind}">')[1].split("</table>")[0]
        assert table.count('<tr data-run="') == 3 and "20.0%" in table and "95% dsc" in table


def test_no_upsampled_records_no_section(tmp_path):
    index = write_report(write_eval_dir(tmp_path), n_boot=200)
    assert 'id="upsampling"' not in index.read_text()
