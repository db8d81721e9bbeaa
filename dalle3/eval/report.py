"""The evaluation's report: numbers with intervals, paired comparisons, figures, image grids.

Built from an eval folder alone (``records.jsonl``, ``runs.json``, optionally ``judge.json``
and ``captioners.json``), so a report can be rebuilt later with
``python -m dalle3.eval.report DIR``. :func:`write_report` writes ``DIR/report/index.html``
(static: no external assets, images by relative path), its PNG figures beside it, and
``DIR/report/report.json`` with every number the page shows.
"""
from __future__ import annotations

import argparse
import json
import math
import os
from pathlib import Path
from typing import Optional, Sequence

from dalle3.eval import figures
from dalle3.eval.findings import findings
from dalle3.eval.report_html import render_html
from dalle3.eval.stats import by_run, load_records, mean_ci, paired_diff
from dalle3.eval.upsample import upsampling_comparison

KINDS = ("dsc", "ssc", "alt")
CHECK_NAMES = figures.CHECK_NAMES
METRICS = ("clip", *CHECK_NAMES)
REFERENCES = ("ceiling", "chance")


# ---------------------------------------------------------------------------------- runs
def load_runs(out_dir, records: Sequence[dict]) -> dict[str, dict]:
    """``runs.json`` with every field filled; runs seen only in the records become final model runs.

    ``ceiling`` and ``chance`` are references by name when ``runs.json`` does not say.
    """
    path = Path(out_dir) / "runs.json"
    given = json.loads(path.read_text()) if path.exists() else {}
    runs = {}
    for rid in list(given) + [r["run"] for r in records]:
        if rid in runs:
            continue
        info = dict(given.get(rid, {}))
        info.setdefault("label", rid)
        info.setdefault("kind", rid if rid in REFERENCES else "model")
        for k in ("caption_source", "synthetic", "ratio", "dsc_share", "seed", "step", "train_run"):
            info.setdefault(k, None)
        info.setdefault("final", True)
        runs[rid] = info
    for rec in records:  # a checkpoint's step may be only in its records
        if runs[rec["run"]]["step"] is None and rec.get("step") is not None and runs[rec["run"]]["kind"] == "model":
            runs[rec["run"]]["step"] = rec["step"]
    return runs


def final_models(runs: dict) -> list[str]:
    """Final model runs, by DSC share (alt first), SSC runs after DSC runs of the same share."""
    ids = [r for r, i in runs.items() if i["kind"] == "model" and i["final"]]
    return sorted(ids, key=lambda r: (runs[r]["dsc_share"] is None, runs[r]["dsc_share"] or 0.0,
                                      runs[r]["synthetic"] == "ssc", runs[r]["label"], runs[r]["seed"] or 0, r))


def default_comparisons(runs: dict) -> list[tuple[str, str]]:
    """Every final model run against the alt-only run; and 100% DSC against 95% DSC (same seed if any)."""
    finals = final_models(runs)
    alt = [r for r in finals if runs[r]["caption_source"] == "alt"]
    pairs = [(r, alt[0]) for r in finals if alt and r != alt[0]]
    near = lambda r, v: runs[r]["dsc_share"] is not None and math.isclose(runs[r]["dsc_share"], v)
    full = [r for r in finals if near(r, 1.0) and runs[r]["synthetic"] != "ssc"]
    blend95 = [r for r in finals if near(r, 0.95)]
    for a in full:
        if blend95:
            same_seed = [b for b in blend95 if runs[b]["seed"] == runs[a]["seed"]]
            pair = (a, (same_seed or blend95)[0])
            if pair not in pairs:
                pairs.append(pair)
    return pairs


# ---------------------------------------------------------------------------------- numbers
def _tables(records, kinds, rows, n_boot) -> dict:
    out = {}
    for kind in kinds:
        per_metric = {m: by_run(records, kind, m) for m in METRICS}
        out[kind] = [{"run": r, "cells": {m: mean_ci(per_metric[m].get(r, {}).values(), n_boot=n_boot)
                                          for m in METRICS}} for r in rows if r in per_metric["clip"]]
    return out


def _comparisons(records, kinds, pairs, runs, n_boot) -> dict:
    out = {}
    for kind in kinds:
        per_metric = {m: by_run(records, kind, m) for m in METRICS}
        out[kind] = [{"a": a, "b": b, "label_a": runs[a]["label"], "label_b": runs[b]["label"],
                      "metrics": {m: paired_diff(per_metric[m].get(a, {}), per_metric[m].get(b, {}), n_boot=n_boot)
                                  for m in METRICS}} for a, b in pairs]
    return out


def _steps(records, kinds, runs, n_boot) -> dict:
    """Figure 4's points: CLIP score of every checkpoint with a step, grouped by training run."""
    groups: dict[str, list[str]] = {}
    for rid, info in runs.items():
        if info["kind"] == "model" and info["train_run"] is not None and info["step"] is not None:
            groups.setdefault(info["train_run"], []).append(rid)
    out = {}
    for kind in kinds:
        clip = by_run(records, kind, "clip")
        out[kind] = {}
        for train_run, ids in sorted(groups.items()):
            final = [r for r in ids if runs[r]["final"]]
            label = runs[final[0]]["label"] if final else train_run
            pts = [{"run": r, "step": runs[r]["step"], "clip": mean_ci(clip[r].values(), n_boot=n_boot)}
                   for r in sorted(ids, key=lambda r: runs[r]["step"]) if r in clip]
            if pts:
                out[kind][train_run] = {"label": label, "points": pts}
    return out


def _grids(records, kinds, columns, out_dir: Path, report_dir: Path, n_rows: int) -> dict:
    """The same prompts and noise across runs: prompts every column has an image of come first."""
    out = {}
    for kind in kinds:
        cells: dict[tuple, dict] = {}
        prompts: dict[tuple, str] = {}
        for rec in records:
            if rec["kind"] != kind or rec["run"] not in columns:
                continue
            k = (rec["key"], rec["seed"])
            prompts.setdefault(k, rec.get("prompt") or "")
            src = None
            if rec.get("image") and (out_dir / rec["image"]).is_file():
                src = Path(os.path.relpath(out_dir / rec["image"], report_dir)).as_posix()
            cells.setdefault(k, {})[rec["run"]] = {
                "image": src, "clip": rec.get("clip"), "exact": (rec.get("checks") or {}).get("exact")}
        have = lambda k: sum(c["image"] is not None for c in cells[k].values())
        chosen = sorted((k for k in cells if have(k)), key=lambda k: (-have(k), str(k[0]), k[1]))[:n_rows]
        out[kind] = {"runs": [c for c in columns if any(c in cells[k] for k in chosen)],
                     "rows": [{"key": k[0], "seed": k[1], "prompt": prompts[k], "cells": cells[k]}
                              for k in sorted(chosen, key=lambda k: (str(k[0]), k[1]))]}
    return out


def _optional_json(out_dir: Path, name: str):
    path = out_dir / name
    return json.loads(path.read_text()) if path.exists() else None


def build_report(out_dir, comparisons: Optional[Sequence[tuple[str, str]]] = None, n_boot: int = 2000,
                 grid_rows: int = 6) -> dict:
    """Every number of the report (what ``report.json`` holds), from the files of ``out_dir``."""
    out_dir = Path(out_dir).resolve()
    records = load_records(out_dir)
    runs = load_runs(out_dir, records)
    pairs = [tuple(p) for p in (default_comparisons(runs) if comparisons is None else comparisons)]
    for a, b in pairs:
        for r in (a, b):
            if r not in runs:
                raise ValueError(f"comparison {a!r} vs {b!r}: no run {r!r} in {out_dir} (known: {sorted(runs)})")
    seen = {r["kind"] for r in records}
    kinds = [k for k in KINDS if k in seen] + sorted(seen - set(KINDS))
    finals = final_models(runs)
    rows = finals + [r for r in REFERENCES if r in runs]
    tables = _tables(records, kinds, rows, n_boot)
    share = {kind: [{"run": t["run"], "label": runs[t["run"]]["label"], "dsc_share": runs[t["run"]]["dsc_share"],
                     "synthetic": runs[t["run"]]["synthetic"], "clip": t["cells"]["clip"]}
                    for t in tables[kind] if t["run"] in finals and runs[t["run"]]["dsc_share"] is not None]
             for kind in kinds}
    report_dir = out_dir / "report"
    return {
        "source": {"dir": str(out_dir), "records": len(records), "runs": len(runs),
                   "records_per_kind": {k: sum(r["kind"] == k for r in records) for k in kinds},
                   "n_boot": n_boot, "level": 0.95},
        "kinds": kinds, "metrics": list(METRICS), "runs": runs, "rows": rows,
        "tables": tables,
        "comparisons": _comparisons(records, kinds, pairs, runs, n_boot),
        "steps": _steps(records, kinds, runs, n_boot),
        "share": share,
        "grids": _grids(records, kinds, finals + [r for r in ("ceiling",) if r in runs], out_dir, report_dir,
                        grid_rows),
        "judge": _optional_json(out_dir, "judge.json"),
        "captioners": _optional_json(out_dir, "captioners.json"),
        "findings": findings(records, runs, n_boot=n_boot),
        "upsampling": upsampling_comparison(records, runs, METRICS, n_boot),
    }


def _draw_figures(rep: dict, report_dir: Path) -> list[dict]:
    label = lambda rows: [{**t, "label": rep["runs"][t["run"]]["label"], "role": rep["runs"][t["run"]]["kind"]}
                          for t in rows]
    made = [
        ("fig4_clip_vs_step.png", figures.steps_figure(rep["steps"], report_dir / "fig4_clip_vs_step.png"),
         "Figure 4 analogue: judge CLIP score against training step",
         "One line per training run (intermediate checkpoints and the final one), one panel per prompt kind; "
         "bands are 95% bootstrap intervals over prompts."),
        ("fig5_clip_vs_dsc_share.png",
         figures.share_figure(rep["share"], report_dir / "fig5_clip_vs_dsc_share.png"),
         "Figure 5 analogue: judge CLIP score against the share of DSC captions in training",
         "Final checkpoints; error bars are 95% bootstrap intervals; squares are SSC-blend runs (DSC share 0). "
         "The ceiling and chance references are in the tables above."),
    ]
    for kind in rep["kinds"]:
        name = f"categories_{kind}.png"
        made.append((name, figures.categories_figure(label(rep["tables"][kind]), kind, report_dir / name),
                     f"Prompt-following checks on {kind} prompts (GenEval / SD3 Table 4 analogue)",
                     "Share of prompts passing each check, counted over the prompts that state that category; "
                     "hatched bars are the ceiling (val images) and chance references; error bars are 95% intervals."))
    return [{"file": f, "title": t, "caption": c} for f, path, t, c in made if path is not None]


def write_report(out_dir, comparisons: Optional[Sequence[tuple[str, str]]] = None, n_boot: int = 2000,
                 grid_rows: int = 6) -> Path:
    """Write ``out_dir/report/{index.html, report.json, *.png}`` from the eval files of ``out_dir``.

    Args:
        out_dir: an eval output folder holding ``records.jsonl`` (and ``runs.json``, optionally
            ``judge.json`` and ``captioners.json``).
        comparisons: ``(run_a, run_b)`` pairs to compare (a - b, paired); default
            :func:`default_comparisons`.
        n_boot: bootstrap resamples per interval.
        grid_rows: prompts per image grid.

    Returns:
        The path of ``index.html``.
    """
    rep = build_report(out_dir, comparisons, n_boot, grid_rows)
    report_dir = Path(rep["source"]["dir"]) / "report"
    report_dir.mkdir(parents=True, exist_ok=True)
    rep["figures"] = _draw_figures(rep, report_dir)
    (report_dir / "report.json").write_text(json.dumps(rep, indent=1, default=str))
    index = report_dir / "index.html"
    index.write_text(render_html(rep, links={n: (report_dir.parent / n).exists()
                                             for n in ("records.jsonl", "runs.json", "judge.json", "captioners.json",
                                                       "upsample.json")}))
    return index


def main(argv: Optional[Sequence[str]] = None) -> None:
    ap = argparse.ArgumentParser(description="Rebuild the evaluation report of an eval output folder.")
    ap.add_argument("dir", help="eval output folder (holds records.jsonl and runs.json)")
    ap.add_argument("--compare", action="append", metavar="RUN_A:RUN_B", help="paired comparison a - b (repeatable)")
    ap.add_argument("--n-boot", type=int, default=2000)
    args = ap.parse_args(argv)
    pairs = [tuple(c.split(":", 1)) for c in args.compare] if args.compare else None
    print(write_report(args.dir, pairs, args.n_boot))
