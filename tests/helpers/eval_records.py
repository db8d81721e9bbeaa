"""A synthetic eval output folder: per-prompt records, a run table and tiny PNGs.

Three training runs (alt-only, 95% DSC, 100% DSC), each with two intermediate checkpoints
and a final one, plus the ceiling and chance references. Scores are built so that more DSC
in training means a higher CLIP score on DSC prompts (by ``EFFECT`` points per unit share).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

KINDS = ("dsc", "ssc", "alt")
CHECKS = ("count", "colour", "attribution", "shape", "size", "position", "exact")
TRAIN_RUNS = {"alt_dsc0.95": ("alt-only", "alt", None, 0.0), "blend_dsc0.95": ("95% dsc", "blend", "dsc", 0.95),
              "dsc_dsc0.95": ("100% dsc", "dsc", "dsc", 1.0)}
STEPS = (10, 20, 30)  # the last is the final checkpoint
EFFECT = 3.0


def _png(path: Path, colour) -> str:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), colour).save(path)
    return path


def run_table() -> dict:
    runs = {}
    for tr, (label, source, synthetic, share) in TRAIN_RUNS.items():
        for step in STEPS:
            final = step == STEPS[-1]
            runs[tr if final else f"{tr}@{step}"] = {
                "label": label if final else f"{label} @{step}", "kind": "model", "caption_source": source,
                "synthetic": synthetic, "ratio": 0.95, "dsc_share": share, "seed": 0, "step": step,
                "final": final, "train_run": tr}
    for ref in ("ceiling", "chance"):
        runs[ref] = {"label": ref, "kind": ref, "caption_source": None, "synthetic": None, "ratio": None,
                     "dsc_share": None, "seed": None, "step": None, "final": True, "train_run": None}
    return runs


def _checks(rng, p: float, kind: str) -> dict:
    out = {c: bool(rng.random() < p) for c in CHECKS}
    if kind == "alt":  # alt-text states little: no sizes or positions
        out.update(size=None, position=None)
    return out


def write_eval_dir(root: Path, n_prompts: int = 10, seed: int = 0) -> Path:
    """Write ``records.jsonl``, ``runs.json``, ``judge.json``, ``captioners.json`` and images under ``root``."""
    rng = np.random.default_rng(seed)
    runs = run_table()
    difficulty = {(k, i): rng.normal(0, 2.0) for k in KINDS for i in range(n_prompts)}
    records = []
    for rid, info in runs.items():
        for kind in KINDS:
            for i in range(n_prompts):
                key, noise = f"val_{i:05d}", 1000 + i
                base = 25.0 + difficulty[(kind, i)]
                if info["kind"] == "ceiling":
                    clip, p = base + 6.0, 0.95
                elif info["kind"] == "chance":
                    clip, p = base - 8.0, 0.1
                else:
                    gain = EFFECT * info["dsc_share"] * (kind == "dsc") * info["step"] / STEPS[-1]
                    clip, p = base + gain + rng.normal(0, 0.3), 0.3 + 0.4 * info["dsc_share"]
                image = None
                if info["final"] and info["kind"] != "chance":
                    rel = f"images/{rid}/{kind}_{key}.png"
                    _png(root / rel, tuple(int(c) for c in rng.integers(0, 255, 3)))
                    image = rel
                elif info["kind"] == "chance":  # another prompt's val image
                    image = f"images/ceiling/{kind}_val_{(i + 1) % n_prompts:05d}.png"
                records.append({"run": rid, "kind": kind, "key": key, "prompt": f"a {kind} prompt number {i}",
                                "seed": noise, "step": info["step"], "clip": float(clip),
                                "checks": _checks(rng, p, kind), "image": image})
    root.mkdir(parents=True, exist_ok=True)
    (root / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (root / "runs.json").write_text(json.dumps(runs, indent=1))
    (root / "judge.json").write_text(json.dumps(
        {"retrieval": 0.91, "sensitivity": {"colour": 0.8, "count": 0.6, "position": 0.55, "shape": 0.7}}))
    (root / "captioners.json").write_text(json.dumps(
        {s: {c: {"recall": r, "false_rate": 0.05} for c in ("shape", "colour", "count")}
         for s, r in (("ssc", 0.4), ("dsc", 0.9))}))
    return root
