"""The paper's three findings, decided on an evaluation's per-prompt records (pure; numpy only).

1. 95 % DSC beats alt-text only on DSC prompts, in judge CLIP score and in colour, colour
   attribution, count and position, and is no worse on alt prompts.
2. A higher DSC share is better over 0.65 -> 0.95 (CLIP score on DSC prompts).
3. 100 % DSC is worse than 95 % on alt-style prompts: why the paper blends.

Every comparison is paired (:func:`dalle3.eval.stats.paired_diff`: the same prompts and
noise for both models; a model trained over several seeds is its per-prompt mean over
them). A finding *holds* when its 95 % interval excludes 0 in the stated direction; with
two or more seeds of both models, the seed-to-seed spread (standard deviation over seeds of
the per-seed margin) is reported beside the margin. Each comparison also carries the metric's
*resolution* on that prompt kind, ceiling minus chance: a judge that scores the true image
hardly above another prompt's image cannot show an effect there, whatever the models do. A finding whose runs are missing has
``"holds": None`` and says which run is missing. Nothing here is tuned to an outcome: the
rule is fixed before the numbers are read.
"""
from __future__ import annotations

import math
from typing import Any, Mapping, Optional, Sequence

import numpy as np

from dalle3.eval.stats import by_run, paired_diff

F1_CHECKS = ("colour", "attribution", "count", "position")
"The exact checks finding 1 names, besides the judge CLIP score."


def _share(info: Mapping) -> Optional[float]:
    share = info.get("dsc_share")
    if share is None and info.get("caption_source") == "blend" and info.get("synthetic") == "dsc":
        share = info.get("ratio")
    return None if share is None else float(share)


def model_runs(runs: Mapping[str, Mapping]) -> dict[str, list[str]]:
    """Final model runs grouped by model: ``alt``, ``dsc65``, ``dsc95``, ``dsc100``, ``ssc95``... -> run ids (one per seed)."""
    out: dict[str, list[str]] = {}
    for rid, info in runs.items():
        if info.get("kind") != "model" or not info.get("final", True):
            continue
        if info.get("caption_source") == "alt":
            name = "alt"
        elif info.get("caption_source") == "blend" and info.get("ratio") is not None:
            name = f"{info.get('synthetic') or 'dsc'}{round(float(info['ratio']) * 100):d}"
        elif info.get("caption_source") in ("dsc", "ssc"):
            name = f"{info['caption_source']}100"
        else:
            continue
        out.setdefault(name, []).append(rid)
    for ids in out.values():
        ids.sort(key=lambda r: (runs[r].get("seed") or 0, r))
    return out


def _seed_mean(values: Mapping[str, Mapping], ids: Sequence[str]) -> dict:
    """Per (prompt, noise seed): the mean over the model's training seeds that scored it."""
    keys = set().union(*(values.get(r, {}).keys() for r in ids))
    out = {}
    for k in keys:
        vs = [float(values[r][k]) for r in ids if k in values.get(r, {}) and values[r][k] is not None]
        out[k] = sum(vs) / len(vs) if vs else None
    return out


def compare(records: Sequence[Mapping], runs: Mapping[str, Mapping], a: list[str], b: list[str], kind: str,
            metric: str, n_boot: int = 2000) -> dict:
    """Paired ``a - b`` on one prompt kind and metric, with the seed-to-seed spread when both have 2+ seeds."""
    values = by_run(records, kind, metric)
    out = paired_diff(_seed_mean(values, a), _seed_mean(values, b), n_boot=n_boot)
    seeds_a = {runs[r].get("seed"): r for r in a}
    seeds_b = {runs[r].get("seed"): r for r in b}
    common = sorted(s for s in seeds_a if s in seeds_b and s is not None)
    if len(common) >= 2:
        per_seed = [paired_diff(values.get(seeds_a[s], {}), values.get(seeds_b[s], {}), n_boot=1)["diff"]
                    for s in common]
        per_seed = [d for d in per_seed if d is not None]
        out["per_seed"] = per_seed
        out["seed_spread"] = float(np.std(per_seed, ddof=1)) if len(per_seed) >= 2 else None
    out["seeds"] = [len(a), len(b)]
    return out


def resolution(records: Sequence[Mapping], kind: str, metric: str) -> Optional[float]:
    """Ceiling minus chance of one metric on one prompt kind: the most a model can move it (None without references)."""
    values = by_run(records, kind, metric)
    means = {}
    for ref in ("ceiling", "chance"):
        vs = [float(v) for v in values.get(ref, {}).values() if v is not None]
        means[ref] = sum(vs) / len(vs) if vs else None
    if means["ceiling"] is None or means["chance"] is None:
        return None
    return means["ceiling"] - means["chance"]


def _missing(*names: str, models: Mapping[str, list]) -> Optional[str]:
    gone = [n for n in names if n not in models]
    return f"no {', '.join(gone)} run in the evaluation" if gone else None


def _fmt(c: Mapping, scale: float = 1.0, digits: int = 2) -> str:
    if c.get("diff") is None:
        return "n/a"
    return f"{c['diff'] * scale:+.{digits}f} [{c['lo'] * scale:+.{digits}f}, {c['hi'] * scale:+.{digits}f}]"


def finding_1(records, runs, models, n_boot=2000) -> dict:
    why = _missing("dsc95", "alt", models=models)
    out: dict[str, Any] = {"name": "95% DSC beats alt-text on DSC prompts, and is no worse on alt prompts",
                           "a": "dsc95", "b": "alt"}
    if why:
        return {**out, "holds": None, "reason": why, "line": f"1. {out['name']}: not measured ({why})"}
    a, b = models["dsc95"], models["alt"]
    dsc = {m: compare(records, runs, a, b, "dsc", m, n_boot) for m in ("clip", *F1_CHECKS)}
    alt = compare(records, runs, a, b, "alt", "clip", n_boot)
    better = {m: c["lo"] is not None and c["lo"] > 0 for m, c in dsc.items()}
    no_worse = alt["hi"] is not None and alt["hi"] >= 0
    holds = all(better.values()) and no_worse
    margin = dsc["clip"]
    for m, c in dsc.items():
        c["resolution"] = resolution(records, "dsc", m)
    alt["resolution"] = resolution(records, "alt", "clip")
    checks = ", ".join(f"{m} {_fmt(dsc[m])}" for m in F1_CHECKS)
    line = (f"1. 95% DSC - alt on DSC prompts: CLIP {_fmt(margin)}; {checks}; on alt prompts CLIP {_fmt(alt)}"
            f" -> {'holds' if holds else 'does not hold'}")
    return {**out, "holds": holds, "margin": margin["diff"], "interval": [margin["lo"], margin["hi"]],
            "seed_spread": margin.get("seed_spread"), "dsc_prompts": dsc, "alt_prompts": alt,
            "better": better, "no_worse_on_alt": no_worse, "line": line}


def finding_2(records, runs, models, n_boot=2000) -> dict:
    why = _missing("dsc95", "dsc65", models=models)
    out: dict[str, Any] = {"name": "A higher DSC share is better over 0.65 -> 0.95 (CLIP score on DSC prompts)",
                           "a": "dsc95", "b": "dsc65"}
    if why:
        return {**out, "holds": None, "reason": why, "line": f"2. {out['name']}: not measured ({why})"}
    c = compare(records, runs, models["dsc95"], models["dsc65"], "dsc", "clip", n_boot)
    c["resolution"] = resolution(records, "dsc", "clip")
    holds = c["lo"] is not None and c["lo"] > 0
    clip = by_run(records, "dsc", "clip")
    shares = sorted((int(n[3:]), n) for n in models if n.startswith("dsc") and n[3:].isdigit())
    curve = []
    for pct, name in shares:
        vals = [v for v in _seed_mean(clip, models[name]).values() if v is not None]
        curve.append({"share": pct / 100, "clip": float(np.mean(vals)) if vals else None})
    line = f"2. 95% - 65% DSC on DSC prompts: CLIP {_fmt(c)} -> {'holds' if holds else 'does not hold'}"
    if len(curve) > 2:
        line += " (CLIP by share: " + ", ".join(f"{p['share']:.2f} {p['clip']:.2f}" for p in curve
                                                 if p["clip"] is not None and math.isfinite(p["clip"])) + ")"
    return {**out, "holds": holds, "margin": c["diff"], "interval": [c["lo"], c["hi"]],
            "seed_spread": c.get("seed_spread"), "comparison": c, "by_share": curve, "line": line}


def finding_3(records, runs, models, n_boot=2000) -> dict:
    why = _missing("dsc95", "dsc100", models=models)
    out: dict[str, Any] = {"name": "100% DSC is worse than 95% on alt-style prompts (why the paper blends)",
                           "a": "dsc95", "b": "dsc100"}
    if why:
        return {**out, "holds": None, "reason": why, "line": f"3. {out['name']}: not measured ({why})"}
    c = compare(records, runs, models["dsc95"], models["dsc100"], "alt", "clip", n_boot)
    c["resolution"] = res = resolution(records, "alt", "clip")
    exact = compare(records, runs, models["dsc95"], models["dsc100"], "alt", "exact", n_boot)
    exact["resolution"] = resolution(records, "alt", "exact")
    holds = c["lo"] is not None and c["lo"] > 0
    line = (f"3. 95% - 100% DSC on alt prompts: CLIP {_fmt(c)} (judge resolution, ceiling - chance: "
            f"{'n/a' if res is None else f'{res:.2f}'}); exact checks {_fmt(exact)}"
            f" -> {'holds' if holds else 'does not hold'}")
    return {**out, "holds": holds, "margin": c["diff"], "interval": [c["lo"], c["hi"]],
            "seed_spread": c.get("seed_spread"), "comparison": c, "alt_exact": exact, "line": line}


def findings(records: Sequence[Mapping], runs: Mapping[str, Mapping], n_boot: int = 2000) -> list[dict]:
    """The three findings (see the module docstring), each with ``holds``, ``margin``, ``interval`` and ``line``."""
    models = model_runs(runs)
    return [f(records, runs, models, n_boot) for f in (finding_1, finding_2, finding_3)]
