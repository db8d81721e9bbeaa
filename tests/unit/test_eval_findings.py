"""The three findings: decided by paired intervals in the stated direction, seeds pooled per prompt."""
from __future__ import annotations

import numpy as np
import pytest

from dalle3.eval.findings import findings, model_runs

CHECKS = ("count", "colour", "attribution", "shape", "size", "position", "exact")


def _info(source, ratio, seed, synthetic="dsc"):
    return {"kind": "model", "final": True, "caption_source": source, "synthetic": synthetic,
            "ratio": ratio if source == "blend" else None, "dsc_share": None, "seed": seed}


def _world(effects, seeds=(0,), n=200, noise=0.3, check_gain=None):
    """Records of models ``{name: (source, ratio)}`` with CLIP = prompt difficulty + effect[kind] + noise."""
    rng = np.random.default_rng(0)
    specs = {"alt": ("alt", None), "dsc65": ("blend", 0.65), "dsc95": ("blend", 0.95), "dsc100": ("blend", 1.0)}
    runs, records = {}, []
    hard = {(k, i): rng.normal(0, 5) for k in ("dsc", "alt") for i in range(n)}
    for name, eff in effects.items():
        for seed in seeds:
            rid = f"{name}_seed{seed}"
            runs[rid] = _info(*specs[name], seed)
            for kind in ("dsc", "alt"):
                gain = (check_gain or {}).get(name, 0.0) if kind == "dsc" else 0.0
                for i in range(n):
                    p = 0.3 + gain
                    records.append({"run": rid, "kind": kind, "key": f"k{i}", "seed": 7,
                                    "clip": 20 + hard[(kind, i)] + eff[kind] + rng.normal(0, noise),
                                    "checks": {c: bool(rng.random() < p) for c in CHECKS}})
    runs["ceiling"] = {"kind": "ceiling", "final": True}
    return records, runs


def test_all_three_findings_hold_when_the_effects_are_there():
    effects = {"alt": {"dsc": 0.0, "alt": 0.0}, "dsc65": {"dsc": 1.0, "alt": 0.0},
               "dsc95": {"dsc": 2.0, "alt": 0.0}, "dsc100": {"dsc": 2.0, "alt": -1.0}}
    records, runs = _world(effects, check_gain={"alt": 0.0, "dsc65": 0.2, "dsc95": 0.4, "dsc100": 0.4})
    f1, f2, f3 = findings(records, runs, n_boot=500)
    assert f1["holds"] and f1["margin"] == pytest.approx(2.0, abs=0.1) and f1["interval"][0] > 0
    assert all(f1["better"].values()) and f1["no_worse_on_alt"]
    assert f2["holds"] and f2["margin"] == pytest.approx(1.0, abs=0.1)
    assert [p["share"] for p in f2["by_share"]] == [0.65, 0.95, 1.0]
    assert f3["holds"] and f3["margin"] == pytest.approx(1.0, abs=0.1)
    assert all(line["line"].endswith("holds") or "holds (" in line["line"] for line in (f1, f2, f3))


def test_no_effect_does_not_hold_and_a_missing_run_is_not_measured():
    effects = {"alt": {"dsc": 0.0, "alt": 0.0}, "dsc95": {"dsc": 0.0, "alt": 0.0}, "dsc100": {"dsc": 0.0, "alt": 0.0}}
    records, runs = _world(effects)
    f1, f2, f3 = findings(records, runs, n_boot=500)
    assert f1["holds"] is False and f1["interval"][0] < 0 < f1["interval"][1] and "does not hold" in f1["line"]
    assert f2["holds"] is None and "dsc65" in f2["reason"]
    assert f3["holds"] is False


def test_better_clip_but_no_better_checks_is_not_finding_1():
    effects = {"alt": {"dsc": 0.0, "alt": 0.0}, "dsc95": {"dsc": 3.0, "alt": 0.0}}
    records, runs = _world(effects)  # checks at 0.3 for both
    f1 = findings(records, runs, n_boot=500)[0]
    assert f1["dsc_prompts"]["clip"]["lo"] > 0 and f1["holds"] is False and not f1["better"]["colour"]


def test_worse_on_alt_prompts_is_not_finding_1():
    effects = {"alt": {"dsc": 0.0, "alt": 0.0}, "dsc95": {"dsc": 3.0, "alt": -2.0}}
    records, runs = _world(effects, check_gain={"dsc95": 0.4})
    f1 = findings(records, runs, n_boot=500)[0]
    assert all(f1["better"].values()) and not f1["no_worse_on_alt"] and f1["holds"] is False


def test_seeds_are_pooled_per_prompt_and_their_spread_reported():
    effects = {"alt": {"dsc": 0.0, "alt": 0.0}, "dsc95": {"dsc": 2.0, "alt": 0.0}}
    records, runs = _world(effects, seeds=(0, 1, 2), check_gain={"dsc95": 0.4})
    assert model_runs(runs) == {"alt": ["alt_seed0", "alt_seed1", "alt_seed2"],
                                "dsc95": ["dsc95_seed0", "dsc95_seed1", "dsc95_seed2"]}
    f1 = findings(records, runs, n_boot=500)[0]
    c = f1["dsc_prompts"]["clip"]
    assert c["seeds"] == [3, 3] and len(c["per_seed"]) == 3 and c["n"] == 200
    assert c["diff"] == pytest.approx(np.mean(c["per_seed"]), abs=1e-9)
    assert 0 < f1["seed_spread"] < 0.2 and f1["margin"] > 3 * f1["seed_spread"]


def test_each_comparison_carries_the_judges_resolution_on_its_prompt_kind():
    effects = {"alt": {"dsc": 0.0, "alt": 0.0}, "dsc95": {"dsc": 2.0, "alt": 0.0}, "dsc100": {"dsc": 2.0, "alt": 0.0}}
    records, runs = _world(effects)
    for ref, (dsc, alt) in {"ceiling": (60.0, 51.0), "chance": (6.0, 50.0)}.items():
        runs[ref] = {"kind": ref, "final": True}
        records += [{"run": ref, "kind": k, "key": f"k{i}", "seed": 7, "clip": v, "checks": {}}
                    for k, v in (("dsc", dsc), ("alt", alt)) for i in range(10)]
    f1, _, f3 = findings(records, runs, n_boot=200)
    assert f1["dsc_prompts"]["clip"]["resolution"] == pytest.approx(54.0)
    assert f3["comparison"]["resolution"] == pytest.approx(1.0) and "judge resolution" in f3["line"]
    assert f1["dsc_prompts"]["colour"]["resolution"] is None  # no check records of the references here
