"""The job's summary: one file per rank, merged by whoever finishes last.

No process group is needed (a killed rank must not hang the others), so ranks meet
through files in ``<out_dir>/_summary/``:

1. every process writes ``task<T>-rank<R>.json`` (its own counts and timings) when it
   is done, replacing the file of the same (task, rank) from an earlier attempt;
2. it then merges the rank files of its layout (same world size and array task count)
   into ``<out_dir>/summary.json``. Each finisher rewrites the merged file, so the last
   process to finish leaves the summary of every rank's latest attempt; a merge
   re-reads the folder until it is stable, so two ranks finishing together cannot
   leave a stale merge behind.

``complete`` in the merged summary is the answer that matters: every input shard has
its output and manifest entry.
"""
from __future__ import annotations

import json
import os
import time
from collections import Counter
from typing import Iterable, Optional

from dalle3.utils.io import atomic_write_json

SUMMARY_DIR = "_summary"
SUMMARY_FILE = "summary.json"
FLOW_KEYS = ("assigned", "done", "skipped", "done_by_others", "lost", "redone_input_changed", "input_samples", "output_samples", "captioned")
"Rank counts that add up in the merged summary."


def rank_file(out_dir: str, task_id: int, rank: int) -> str:
    return os.path.join(out_dir, SUMMARY_DIR, f"task{task_id:05d}-rank{rank:05d}.json")


def write_json(path: str, data: dict) -> None:
    """Atomically replace ``path`` with ``data`` as JSON, in this job's layout (indent 1, ``str`` fallback)."""
    atomic_write_json(path, data, indent=1, default=str)


def rank_summaries(out_dir: str, world_size: int, task_count: int) -> list[dict]:
    """The latest rank summaries of this layout, ordered by (task, rank)."""
    folder = os.path.join(out_dir, SUMMARY_DIR)
    out = []
    for name in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
        if not (name.startswith("task") and name.endswith(".json")):
            continue
        try:
            with open(os.path.join(folder, name), encoding="utf-8") as f:
                entry = json.load(f)
        except (OSError, ValueError):
            continue
        if entry.get("world_size") == world_size and entry.get("task_count") == task_count:
            out.append(entry)
    return sorted(out, key=lambda e: (e["task_id"], e["rank"]))


def merge(ranks: Iterable[dict], total_shards: int, completed: int) -> dict:
    """Merge rank summaries (pure): totals, failures by reason, wall time, images/s overall and per rank.

    Overall images/s is the captioned images over the span from the first start to the
    last finish (what a user waits for), not the sum of per-rank rates. ``startup_s`` is the
    slowest rank's time to its first captioned batch; ``steady_images_per_s`` sums the ranks'
    rates after their first batch (the ranks run side by side), the figure that scales to a
    long job where start-up is a rounding error.
    """
    ranks = list(ranks)
    totals = {k: sum(int(r.get(k, 0)) for r in ranks) for k in FLOW_KEYS}
    failed: Counter[str] = Counter()
    for r in ranks:
        failed.update(r.get("failed", {}))
    span = (max(r["finished"] for r in ranks) - min(r["started"] for r in ranks)) if ranks else 0.0
    startups = [r["startup_s"] for r in ranks if r.get("startup_s") is not None]
    steady = [r["steady_images_per_s"] for r in ranks if r.get("steady_images_per_s") is not None]
    return {
        "ranks_reported": len(ranks),
        "ranks_expected": ranks[0]["world_size"] * ranks[0]["task_count"] if ranks else 0,
        "shards_total": total_shards,
        "shards_completed": completed,
        "complete": completed == total_shards,
        "shards_done": totals["done"],
        "shards_skipped": totals["skipped"],
        "shards_done_by_others": totals["done_by_others"],
        "shards_lost": totals["lost"],
        "shards_redone_input_changed": totals["redone_input_changed"],
        "shards_failed": [f for r in ranks for f in r.get("failed_shards", [])],
        "samples_captioned": totals["captioned"],
        "samples_failed": dict(sorted(failed.items())),
        "input_samples": totals["input_samples"],
        "output_samples": totals["output_samples"],
        "wall_s": round(span, 3),
        "images_per_s": round(totals["captioned"] / span, 2) if span > 0 else 0.0,
        "images_per_s_per_rank": {f"task{r['task_id']}-rank{r['rank']}": r.get("images_per_s", 0.0) for r in ranks},
        "startup_s": max(startups) if startups else None,
        "steady_images_per_s": round(sum(steady), 2) if steady else None,
    }


def merge_and_write(out_dir: str, world_size: int, task_count: int, total_shards: int,
                    count_completed, attempts: int = 5) -> Optional[dict]:
    """Merge this layout's rank files into ``<out_dir>/summary.json``; return the merged summary."""
    merged = None
    for _ in range(attempts):
        ranks = rank_summaries(out_dir, world_size, task_count)
        merged = merge(ranks, total_shards, count_completed())
        merged["written"] = time.time()
        write_json(os.path.join(out_dir, SUMMARY_FILE), merged)
        if rank_summaries(out_dir, world_size, task_count) == ranks:  # nobody reported meanwhile
            break
    return merged
