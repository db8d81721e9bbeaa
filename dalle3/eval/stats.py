"""Confidence intervals for the evaluation's per-prompt results (numpy only).

Every run is scored on the same prompts with the same noise seeds, so two runs are compared
*paired*: the difference is taken prompt by prompt and the bootstrap resamples prompts,
which cancels the prompt-to-prompt variance both runs share (easy prompts are easy for
every run). The intervals are percentile bootstraps (Efron & Tibshirani 1993, ch. 13).

A record (one line of ``records.jsonl``) holds one prompt's scores for one run:
``{"run", "kind", "key", "prompt", "seed", "step", "clip", "checks": {...}, "image"}``;
``None`` means "not applicable" (the prompt states nothing of that category) and is dropped.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Hashable, Iterable, Mapping, Optional

import numpy as np

# Bootstrap draws are made in blocks of at most this many indices, so memory stays small
# for large prompt sets (2000 draws x 50k prompts would be 800 MB at once).
_BLOCK = 4_000_000


def _as_float(v) -> Optional[float]:
    """Bools count as 0/1; ``None`` and NaN are missing."""
    if v is None:
        return None
    f = float(v)
    return None if math.isnan(f) else f


def _boot_means(x: np.ndarray, n_boot: int, seed: int) -> np.ndarray:
    """Means of ``n_boot`` resamples (with replacement) of ``x``."""
    rng = np.random.default_rng(seed)
    n = len(x)
    per_block = max(1, _BLOCK // max(n, 1))
    out = np.empty(n_boot)
    for start in range(0, n_boot, per_block):
        stop = min(n_boot, start + per_block)
        out[start:stop] = x[rng.integers(0, n, size=(stop - start, n))].mean(axis=1)
    return out


def _interval(draws: np.ndarray, level: float) -> tuple[float, float]:
    alpha = (1.0 - level) / 2.0
    lo, hi = np.quantile(draws, [alpha, 1.0 - alpha])
    return float(lo), float(hi)


def mean_ci(values: Iterable, n_boot: int = 2000, seed: int = 0, level: float = 0.95) -> dict:
    """Mean of ``values`` with a percentile-bootstrap interval.

    Args:
        values: numbers or bools; ``None`` (not applicable) and NaN are dropped.
        n_boot: bootstrap resamples.
        seed: seed of the resampling, so a report is reproducible.
        level: coverage of the interval.

    Returns:
        ``{"mean", "lo", "hi", "n"}``; all ``None`` but ``n == 0`` when nothing is left.
    """
    x = np.array([f for f in map(_as_float, values) if f is not None], dtype=float)
    if len(x) == 0:
        return {"mean": None, "lo": None, "hi": None, "n": 0}
    lo, hi = _interval(_boot_means(x, n_boot, seed), level)
    return {"mean": float(x.mean()), "lo": lo, "hi": hi, "n": int(len(x))}


def _pairs(a: Mapping[Hashable, object], b: Mapping[Hashable, object]) -> tuple[np.ndarray, np.ndarray]:
    keys = [k for k in a if k in b]
    pa, pb = [], []
    for k in keys:
        va, vb = _as_float(a[k]), _as_float(b[k])
        if va is not None and vb is not None:
            pa.append(va)
            pb.append(vb)
    return np.array(pa, dtype=float), np.array(pb, dtype=float)


def paired_diff(a: Mapping, b: Mapping, n_boot: int = 2000, seed: int = 0, level: float = 0.95) -> dict:
    """Mean of ``a - b`` over the prompts both runs scored, with a paired bootstrap interval.

    Args:
        a, b: ``{(prompt key, noise seed): value}`` of two runs on one prompt kind; only keys
            present in both with non-``None`` values in both are used.
        n_boot, seed, level: as in :func:`mean_ci`.

    Returns:
        ``{"diff", "lo", "hi", "n", "mean_a", "mean_b"}`` where ``mean_a`` and ``mean_b`` are
        over the same paired prompts (so ``diff == mean_a - mean_b``).
    """
    xa, xb = _pairs(a, b)
    if len(xa) == 0:
        return {"diff": None, "lo": None, "hi": None, "n": 0, "mean_a": None, "mean_b": None}
    d = xa - xb
    lo, hi = _interval(_boot_means(d, n_boot, seed), level)
    return {"diff": float(d.mean()), "lo": lo, "hi": hi, "n": int(len(d)),
            "mean_a": float(xa.mean()), "mean_b": float(xb.mean())}


def unpaired_diff(a: Mapping, b: Mapping, n_boot: int = 2000, seed: int = 0, level: float = 0.95) -> dict:
    """Like :func:`paired_diff` on the same prompts, but resampling each run on its own.

    This is the interval one would get by ignoring that the runs share prompts and noise;
    it is here to show (and test) what pairing buys, not for the report.
    """
    xa, xb = _pairs(a, b)
    if len(xa) == 0:
        return {"diff": None, "lo": None, "hi": None, "n": 0, "mean_a": None, "mean_b": None}
    draws = _boot_means(xa, n_boot, seed) - _boot_means(xb, n_boot, seed + 1)
    lo, hi = _interval(draws, level)
    return {"diff": float(xa.mean() - xb.mean()), "lo": lo, "hi": hi, "n": int(len(xa)),
            "mean_a": float(xa.mean()), "mean_b": float(xb.mean())}


def load_records(out_dir) -> list[dict]:
    """Every record of ``out_dir/records.jsonl`` (blank lines skipped; a bad line names its number)."""
    path = Path(out_dir) / "records.jsonl"
    records = []
    with open(path) as f:
        for i, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{i}: not JSON ({e.msg})") from None
            missing = {"run", "kind", "key", "seed"} - rec.keys()
            if missing:
                raise ValueError(f"{path}:{i}: record lacks {sorted(missing)}")
            records.append(rec)
    return records


def metric_value(rec: Mapping, metric: str):
    """``rec["clip"]`` for ``metric == "clip"``, else the check ``rec["checks"][metric]``."""
    if metric == "clip":
        return rec.get("clip")
    return (rec.get("checks") or {}).get(metric)


def by_run(records: Iterable[Mapping], kind: str, metric: str) -> dict[str, dict[tuple, object]]:
    """``{run: {(prompt key, seed): value}}`` of one prompt kind and one metric.

    ``None`` values are kept (the statistics drop them), so the keys are every prompt a run
    scored. Two records of one run with the same (kind, key, seed) are an error: pairing
    would silently use only one of them.
    """
    out: dict[str, dict[tuple, object]] = {}
    for rec in records:
        if rec["kind"] != kind:
            continue
        cell = out.setdefault(rec["run"], {})
        k = (rec["key"], rec["seed"])
        if k in cell:
            raise ValueError(f"run {rec['run']!r} has two {kind} records for key {k[0]!r} seed {k[1]!r}")
        cell[k] = metric_value(rec, metric)
    return out
