"""Paired bootstrap statistics of the evaluation: coverage, pairing, missing values, loading."""
from __future__ import annotations

import json

import numpy as np
import pytest

from dalle3.eval.stats import by_run, load_records, mean_ci, paired_diff, unpaired_diff


def _runs(rng, n=60, diff=0.5, prompt_sd=3.0, noise_sd=1.0):
    """Two runs on the same prompts: a shared prompt difficulty plus each run's own noise."""
    prompt = rng.normal(30.0, prompt_sd, n)
    a = prompt + diff + rng.normal(0, noise_sd, n)
    b = prompt + rng.normal(0, noise_sd, n)
    keys = [(f"val_{i:04d}", 7) for i in range(n)]
    return dict(zip(keys, a.tolist())), dict(zip(keys, b.tolist()))


def test_interval_covers_a_known_difference():
    a = {(f"k{i}", 0): 20.0 + (i % 5) + 2.0 + 0.1 * ((i * 7) % 3 - 1) for i in range(40)}
    b = {(f"k{i}", 0): 20.0 + (i % 5) for i in range(40)}
    r = paired_diff(a, b)
    assert r["n"] == 40
    assert r["lo"] < 2.0 < r["hi"] and r["lo"] > 0  # covers the truth and excludes "no effect"
    assert r["diff"] == pytest.approx(r["mean_a"] - r["mean_b"])


def test_paired_interval_covers_the_truth_about_95_percent_of_the_time():
    rng = np.random.default_rng(123)
    hits = 0
    for rep in range(200):
        a, b = _runs(rng)
        r = paired_diff(a, b, n_boot=1000, seed=rep)
        hits += r["lo"] <= 0.5 <= r["hi"]
    assert 0.9 <= hits / 200 <= 0.99, hits


def test_mean_ci_covers_the_true_mean_about_95_percent_of_the_time():
    rng = np.random.default_rng(5)
    hits = sum((lambda r: r["lo"] <= 0.3 <= r["hi"])(mean_ci(rng.random(80) < 0.3, n_boot=1000, seed=s))
               for s in range(200))
    assert 0.9 <= hits / 200 <= 0.99, hits


def test_pairing_narrows_the_interval_of_correlated_runs():
    a, b = _runs(np.random.default_rng(0), n=100)
    paired, unpaired = paired_diff(a, b), unpaired_diff(a, b)
    assert paired["diff"] == pytest.approx(unpaired["diff"])
    width = lambda r: r["hi"] - r["lo"]
    assert width(paired) < 0.5 * width(unpaired)  # the shared prompt difficulty cancels
    assert paired["lo"] > 0 and unpaired["lo"] < 0  # only the paired test sees the effect


def test_identical_runs_differ_by_exactly_zero():
    a, _ = _runs(np.random.default_rng(1))
    r = paired_diff(a, dict(a))
    assert r["diff"] == 0.0 and r["lo"] == 0.0 and r["hi"] == 0.0 and r["n"] == len(a)


def test_none_is_not_applicable_and_bools_count_as_0_1():
    r = mean_ci([True, None, False, 1, 0, None, float("nan")])
    assert r["n"] == 4 and r["mean"] == 0.5 and 0.0 <= r["lo"] <= 0.5 <= r["hi"] <= 1.0
    assert mean_ci([None, None]) == {"mean": None, "lo": None, "hi": None, "n": 0}
    a = {("p", 0): True, ("q", 0): None, ("r", 0): False, ("s", 0): True}
    b = {("p", 0): False, ("q", 0): True, ("r", 0): None, ("t", 0): True}  # only p is paired
    r = paired_diff(a, b)
    assert r["n"] == 1 and r["diff"] == 1.0 and r["mean_a"] == 1.0 and r["mean_b"] == 0.0
    assert paired_diff({("p", 0): None}, {("p", 0): 1.0})["diff"] is None


def test_same_seed_same_interval():
    a, b = _runs(np.random.default_rng(2))
    assert paired_diff(a, b, seed=3) == paired_diff(a, b, seed=3)
    assert paired_diff(a, b, seed=3)["lo"] != paired_diff(a, b, seed=4)["lo"]


def _rec(run, kind, key, seed, clip, **checks):
    return {"run": run, "kind": kind, "key": key, "prompt": f"prompt {key}", "seed": seed, "step": 10,
            "clip": clip, "checks": checks, "image": None}


def test_records_load_and_group_by_run(tmp_path):
    recs = [_rec("r1", "dsc", "k0", 1, 30.0, colour=True, count=None),
            _rec("r1", "dsc", "k0", 2, 31.0, colour=False, count=True),
            _rec("r2", "dsc", "k0", 1, 29.0, colour=True, count=False),
            _rec("r1", "alt", "k0", 1, 25.0, colour=None, count=None)]
    (tmp_path / "records.jsonl").write_text("\n".join(json.dumps(r) for r in recs) + "\n\n")
    loaded = load_records(tmp_path)
    assert loaded == recs
    assert by_run(loaded, "dsc", "clip") == {"r1": {("k0", 1): 30.0, ("k0", 2): 31.0}, "r2": {("k0", 1): 29.0}}
    assert by_run(loaded, "dsc", "count") == {"r1": {("k0", 1): None, ("k0", 2): True}, "r2": {("k0", 1): False}}
    assert by_run(loaded, "alt", "colour") == {"r1": {("k0", 1): None}}
    assert by_run(loaded, "ssc", "clip") == {}


def test_bad_records_are_named(tmp_path):
    (tmp_path / "records.jsonl").write_text(json.dumps(_rec("r", "dsc", "k", 0, 1.0)) + "\n{oops\n")
    with pytest.raises(ValueError, match=r"records.jsonl:2: not JSON"):
        load_records(tmp_path)
    dup = [_rec("r", "dsc", "k", 0, 1.0), _rec("r", "dsc", "k", 0, 2.0)]
    with pytest.raises(ValueError, match="two dsc records for key 'k' seed 0"):
        by_run(dup, "dsc", "clip")
