"""``summary.json`` of a pipeline run: wall time per step, the captioners' recall, every run's
scores, and the three findings (:mod:`dalle3.eval.findings`), each with its margin, 95 %
interval and ``holds``. Built from the evaluation's ``report.json`` so the summary and the
HTML report can never disagree.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Optional, Sequence

from dalle3.utils.io import atomic_write_json

SUMMARY = "summary.json"
SCHEMA_VERSION = 1


def read_summary(out_dir: str) -> Optional[dict]:
    """The last summary of ``out_dir``, or None (missing or unreadable: a progress estimate is only a hint)."""
    try:
        return json.loads(Path(out_dir, SUMMARY).read_text())
    except (OSError, ValueError):
        return None


def _scores(report: dict) -> dict:
    """``{run: {label, seed, dsc_share, kind: {metric: {mean, lo, hi, n}}}}`` of the final models and references."""
    out: dict[str, dict] = {}
    for kind, rows in report["tables"].items():
        for row in rows:
            info = report["runs"][row["run"]]
            entry = out.setdefault(row["run"], {"label": info["label"], "kind": info["kind"], "seed": info["seed"],
                                                "caption_source": info["caption_source"],
                                                "synthetic": info["synthetic"], "dsc_share": info["dsc_share"]})
            entry[kind] = row["cells"]
    return out


def build_summary(pipeline_name: str, steps: Sequence[dict], eval_dir: Optional[str], seconds: float) -> dict:
    """The summary of one pipeline run (see the module docstring).

    Args:
        pipeline_name: the ``pipeline.name`` of the set that ran.
        steps: one record per step (``step``, ``stage``, ``status``, ``seconds``, ``summary``).
        eval_dir: the evaluation's output folder (``report/report.json`` inside), or None when no eval step ran.
        seconds: the pipeline's wall time.
    """
    summary: dict[str, Any] = {
        "schema": SCHEMA_VERSION, "pipeline": pipeline_name, "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "seconds": round(seconds, 1),
        "steps": [{**{k: r[k] for k in ("step", "stage", "status", "seconds")},
                   **{k: v for k, v in (r.get("summary") or {}).items() if k in ("log", "threads")}} for r in steps],
        "stage_seconds": {}, "captioners": None, "runs": {}, "findings": [], "report": None,
    }
    for r in steps:
        summary["stage_seconds"][r["stage"]] = round(summary["stage_seconds"].get(r["stage"], 0.0) + r["seconds"], 1)
    report_json = Path(eval_dir, "report", "report.json") if eval_dir else None
    if report_json is not None and report_json.exists():
        report = json.loads(report_json.read_text())
        summary.update(captioners=report.get("captioners"), runs=_scores(report), findings=report.get("findings", []),
                       report=str(report_json.parent / "index.html"), judge=report.get("judge"))
    return summary


def write_summary(out_dir: str, summary: dict) -> str:
    """Write ``out_dir/summary.json`` atomically; record its path in ``summary["path"]``; return it."""
    path = os.path.join(out_dir, SUMMARY)
    summary["path"] = path
    os.makedirs(out_dir, exist_ok=True)
    atomic_write_json(path, summary, indent=1)
    return path
